"""REPO: entropy-preserving advantage modification A' = A - β·L, with the setpoint controller on ζ.

REPO-R: A' = A - ζ·|A|·log π (log π of the behaviour policy, detached, floored at -20), clamped so that A'
keeps A's sign (a zero advantage stays zero). REPO-D: β = ζ·cov(log π, A), the batch estimate of the
entropy-drift term, and A' = A - β·(log π + H) with H the full-vocabulary entropy.
Setpoint law, once per step: entropy below target -> |ζ| doubles toward more entropy, above -> halves;
crossing |ζ| < ζ_min flips the sign, so a negative ζ pushes entropy down; |ζ| <= ζ_max. Within a relative
dead band around the target ζ is held, which damps the bang-bang oscillation of the doubling law.
"""

from typing import Any

import torch

from analysis import schema
from trainer.aggregation import masked_mean
from trainer.controllers.base import Controller, register_controller

LOGP_FLOOR = -20.0


def repo_r_advantages(
    adv: torch.Tensor, old_logp: torch.Tensor, zeta: float, floor: float = LOGP_FLOOR
) -> torch.Tensor:
    """A' = A - ζ|A| log π (B, R), clamped to A's sign."""
    lp = old_logp.detach().float().clamp(min=floor)  # (B, R) <= 0
    new = adv - zeta * adv.abs() * lp
    return torch.where(
        adv > 0, new.clamp(min=0), torch.where(adv < 0, new.clamp(max=0), torch.zeros_like(new))
    )


def entropy_drift(old_logp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor) -> float:
    """Batch estimate cov(log π, A) = mean((log π - mean log π)(A - mean A)) over response tokens."""
    lp, a = old_logp.detach().double(), adv.double()
    dl, da = lp - masked_mean(lp, mask), a - masked_mean(a, mask)
    return float(masked_mean(dl * da, mask))


def repo_d_advantages(
    adv: torch.Tensor, old_logp: torch.Tensor, entropy: torch.Tensor, mask: torch.Tensor, zeta: float
) -> torch.Tensor:
    """A' = A - β (log π + H) (B, R) with β = ζ·cov(log π, A)."""
    beta = zeta * entropy_drift(old_logp, adv, mask)
    return adv - beta * (old_logp.detach().float() + entropy.detach().float())


def setpoint_step(
    zeta: float, measured: float, target: float, zmin: float, zmax: float, deadband: float
) -> float:
    """One step of the doubling/halving law with sign flip below zmin; the new signed ζ, |ζ| <= zmax."""
    if abs(measured - target) <= deadband * target:
        return zeta
    if measured < target:  # more entropy: ζ up the signed ladder
        z = zeta * 2 if zeta > 0 else zeta / 2
        z = zmin if z <= 0 and -z < zmin else z
    else:
        z = zeta / 2 if zeta > 0 else zeta * 2
        z = -zmin if z >= 0 and z < zmin else z
    return max(-zmax, min(zmax, z))


class _Setpoint(Controller):
    default_zmin: float
    default_zmax: float

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.zmin = cfg.zeta_min if cfg.zeta_min is not None else self.default_zmin
        self.zmax = cfg.zeta_max if cfg.zeta_max is not None else self.default_zmax
        self.deadband = cfg.control_deadband
        self.value = self.zmin

    def update(self, measured: float, target: float, step: int) -> None:
        self.value = setpoint_step(self.value, measured, target, self.zmin, self.zmax, self.deadband)
        self.at_bound = abs(self.value) >= self.zmax

    def retune(self, cfg: Any, changed: set[str]) -> None:
        sign = -1.0 if self.value < 0 else 1.0
        self.value = sign * min(self.zmax, max(self.zmin, abs(self.value)))
        self.at_bound = abs(self.value) >= self.zmax

    def metrics(self, eps_low: float, eps_high: float) -> dict[str, float]:
        return {**super().metrics(eps_low, eps_high), schema.CONTROLLER_ZETA: self.value}


@register_controller("repo_r")
class RepoR(_Setpoint):
    """REPO-R; toy bounds |ζ| in [1e-4, 1.0] (the paper's 0.05 has no effect at this scale)."""

    default_zmin, default_zmax = 1e-4, 1.0

    def advantages(self, adv, old_logp, entropy, mask):
        return repo_r_advantages(adv, old_logp, self.value)


@register_controller("repo_d")
class RepoD(_Setpoint):
    """REPO-D; bounds |ζ| in [1e-3, 10] as in the paper."""

    default_zmin, default_zmax = 1e-3, 10.0

    def advantages(self, adv, old_logp, entropy, mask):
        return repo_d_advantages(adv, old_logp, entropy, mask, self.value)
