"""Clip-Cov and KL-Cov (Cui et al. 2025, "The Entropy Mechanism of RL for Reasoning LMs").

Both select tokens by their centred covariance cov_i = (log π_i - mean log π)(A_i - mean A) over the
minibatch's response tokens (log π of the current policy, detached): the tokens that drive entropy down.
Clip-Cov detaches the gradient of a random fraction r of all tokens among those with cov in (lb, ub);
KL-Cov adds λ·|log π - log π_old| on the top-k fraction of tokens by cov. Fixed fractions, no setpoint:
`.value` is r or k, logged as controller/coef.
"""

from typing import Any

import torch

from analysis import schema
from trainer.aggregation import agg_loss, masked_mean
from trainer.controllers.base import Controller, register_controller


def token_cov(logp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Centred covariance per token (B, R); 0 outside the mask."""
    lp, a = logp.detach().float(), adv.float()
    cov = (lp - masked_mean(lp, mask)) * (a - masked_mean(a, mask))
    return cov * mask.to(cov.dtype)


def clip_cov_mask(
    cov: torch.Tensor,
    mask: torch.Tensor,
    frac: float,
    lb: float,
    ub: float,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Bool (B, R): int(frac · n_tokens) tokens drawn at random among those with lb < cov < ub."""
    cand = ((cov > lb) & (cov < ub) & mask.bool()).flatten().nonzero().squeeze(1)
    n = min(int(frac * int(mask.sum())), cand.numel())
    pick = torch.zeros(cov.numel(), dtype=torch.bool, device=cov.device)
    if n > 0:
        order = torch.randperm(cand.numel(), generator=generator).to(cand.device)
        pick[cand[order[:n]]] = True
    return pick.view_as(cov)


def kl_cov_mask(cov: torch.Tensor, mask: torch.Tensor, frac: float) -> torch.Tensor:
    """Bool (B, R): the max(1, int(frac · n_tokens)) tokens with the largest cov."""
    n_tok = int(mask.sum())
    n = min(max(1, int(frac * n_tok)), n_tok) if frac > 0 else 0
    pick = torch.zeros(cov.numel(), dtype=torch.bool, device=cov.device)
    if n > 0:
        scores = cov.flatten().masked_fill(~mask.bool().flatten(), -torch.inf)
        pick[scores.topk(n).indices] = True
    return pick.view_as(cov)


def kl_cov_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    pick: torch.Tensor,
    mask: torch.Tensor,
    coef: float,
    agg_mode: str,
) -> torch.Tensor:
    """λ · agg(|log π - log π_old| on the picked tokens)."""
    penalty = (logp.float() - old_logp.float()).abs() * pick.to(torch.float32)
    return coef * agg_loss(penalty, mask, agg_mode)


@register_controller("clip_cov")
class ClipCov(Controller):
    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.value, self.lb, self.ub = cfg.clip_cov_frac, cfg.clip_cov_lb, cfg.clip_cov_ub

    def metrics(self, eps_low, eps_high):
        return {**super().metrics(eps_low, eps_high), schema.CONTROLLER_COEF: self.value}

    def objective_kwargs(self, logp, old_logp, adv, mask, generator):
        pick = clip_cov_mask(token_cov(logp, adv, mask), mask, self.value, self.lb, self.ub, generator)
        return {"detach_mask": pick}


@register_controller("kl_cov")
class KlCov(Controller):
    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.value, self.coef = cfg.kl_cov_frac, cfg.kl_cov_coef

    def metrics(self, eps_low, eps_high):
        return {**super().metrics(eps_low, eps_high), schema.CONTROLLER_COEF: self.value}

    def extra_loss(self, logp, old_logp, adv, mask, entropy, agg_mode):
        pick = kl_cov_mask(token_cov(logp, adv, mask), mask, self.value)
        return kl_cov_loss(logp, old_logp, pick, mask, self.coef, agg_mode), {}
