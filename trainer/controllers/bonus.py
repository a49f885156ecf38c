"""Entropy bonus with an auto-tuned coefficient: SAC's temperature tuning (Haarnoja et al. 2018) read as
projected dual ascent on the constraint H >= target.

Loss += -α · H (H with gradient, aggregated like the policy loss), with the multiplier α in [α_min, α_max]
following the constraint's violation, plus a proportional term for damping:
    e = (target - H) / target
    integral  I <- clip(I + gain · α_max · e, α_min, α_max)        (`bonus_gain`)
    output    α = clip(I + kp · α_max · e, α_min, α_max)           (`bonus_kp`)
Linear in α, not in log α: measured on the demo task, a log-scale α (floor α_max/100) came down too slowly
once the entropy crossed the target, and the bonus, which drives the whole update when most groups have zero
advantage (Adam normalises the step), ran the entropy away to twice the target. α_min defaults to -0.05, a small
penalty: with a pure bonus (α_min = 0) α has no handle once near-deterministic tokens start to widen by
themselves, and at seed 31337 the entropy ran to +153% over its target with α pinned at 0 (the `runaway`
alert's case); a penalty as large as the bonus, starting at H0 = 2 x target, drove the policy into collapse
and the reward to 0 (docs/controller_defaults.md).

`bonus_token_cap` (default 1 nat): only tokens whose entropy is below the cap earn the bonus. Uncapped, the bonus
also widens contexts the reward does not constrain (after a slip, say) up to near-uniform (4.4 of ln 89 = 4.5
nats on the toy), and those few tokens make the entropy estimate bursty.
"""

from typing import Any

import torch

from analysis import schema
from trainer.aggregation import agg_loss
from trainer.controllers.base import Controller, register_controller


def bonus_step(
    integral: float,
    measured: float,
    target: float,
    gain: float,
    kp: float,
    coef_max: float,
    coef_min: float = 0.0,
) -> tuple[float, float]:
    """(new integral, new α) after observing one step's entropy."""
    err = (target - measured) / max(target, 1e-8)
    integral = clip(integral + gain * coef_max * err, coef_min, coef_max)
    return integral, clip(integral + kp * coef_max * err, coef_min, coef_max)


def clip(x: float, lo: float, hi: float) -> float:
    return min(hi, max(lo, x))


def entropy_bonus_loss(
    entropy: torch.Tensor, mask: torch.Tensor, coef: float, agg_mode: str, cap: float | None = None
) -> torch.Tensor:
    """-α · agg(H) for entropy (B, R) with gradient; tokens at or above `cap` nats earn no bonus."""
    if cap is not None:
        # Zeroed, not masked out, so the aggregation's token count (its normaliser) stays the batch's.
        entropy = entropy * (entropy.detach() < cap)
    return -coef * agg_loss(entropy, mask, agg_mode)


@register_controller("entropy_bonus")
class EntropyBonus(Controller):
    needs_entropy_grad = True
    closed_loop = True

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.gain, self.kp, self.coef_max = cfg.bonus_gain, cfg.bonus_kp, cfg.bonus_coef_max
        self.cap, self.coef_min = cfg.bonus_token_cap, cfg.bonus_coef_min
        self.value = self.integral = self._clamp(cfg.bonus_coef_init)

    def _clamp(self, coef: float) -> float:
        return clip(coef, self.coef_min, self.coef_max)

    def update(self, measured: float, target: float, step: int) -> None:
        self.integral, self.value = bonus_step(
            self.integral, measured, target, self.gain, self.kp, self.coef_max, self.coef_min
        )
        self.at_bound = self.value >= self.coef_max * (1 - 1e-9)  # pushing as hard as it may

    def retune(self, cfg: Any, changed: set[str]) -> None:
        self.value, self.integral = self._clamp(self.value), self._clamp(self.integral)

    def bound_dir(self) -> int:
        if self.value >= self.coef_max * (1 - 1e-9):
            return 1
        return -1 if self.value <= self.coef_min else 0  # the largest penalty allowed, or no bonus at all

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "integral": float(self.integral)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.integral = float(state.get("integral", self.value))

    def metrics(self, eps_low: float, eps_high: float) -> dict[str, float]:
        return {**super().metrics(eps_low, eps_high), schema.CONTROLLER_COEF: self.value}

    def extra_loss(self, logp, old_logp, adv, mask, entropy, agg_mode):
        return entropy_bonus_loss(entropy, mask, self.value, agg_mode, self.cap), {}
