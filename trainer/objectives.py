"""Policy-gradient objectives: one pure function per algorithm, registered by name (as verl's policy losses).

Each maps per-token log-probs under the current policy `logp` (B, T, with grad), the behaviour policy's
`old_logp` (B, T), advantages (B, T) and the response mask (B, T) to `(loss, metrics)`, on the PPO clipped
surrogate  -min(r A, clip(r, 1 - eps_low, 1 + eps_high) A),  r = exp(logp - old_logp).
They differ in how tokens are aggregated (trainer.aggregation) and in the eps they are given.
"""

from collections.abc import Callable

import torch

from analysis import schema
from analysis.errors import UsageError
from trainer.aggregation import agg_loss, masked_mean

ObjectiveFn = Callable[..., tuple[torch.Tensor, dict[str, float]]]
OBJECTIVES: dict[str, ObjectiveFn] = {}


def register_objective(name: str) -> Callable[[ObjectiveFn], ObjectiveFn]:
    """Decorator: register an objective under `name`."""

    def deco(fn: ObjectiveFn) -> ObjectiveFn:
        OBJECTIVES[name] = fn
        return fn

    return deco


def get_objective(name: str) -> ObjectiveFn:
    """The objective registered as `name`; UsageError listing the valid names otherwise."""
    if name not in OBJECTIVES:
        raise UsageError(f"unknown objective {name!r}; valid: {', '.join(sorted(OBJECTIVES))}")
    return OBJECTIVES[name]


def clipped_surrogate(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    eps_low: float,
    eps_high: float,
    agg_mode: str,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO clipped surrogate aggregated with `agg_mode`, plus loss, k3-KL and clip-fraction metrics."""
    log_ratio = logp.float() - old_logp.float()  # (B, T)
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    loss = agg_loss(torch.maximum(unclipped, clipped), mask, agg_mode)
    with torch.no_grad():
        # The clip zeroes the gradient exactly where it is active: A > 0 above the top, A < 0 below the bottom.
        high = (advantages > 0) & (ratio > 1.0 + eps_high)
        low = (advantages < 0) & (ratio < 1.0 - eps_low)
        # k3 estimator of KL(old || new) from tokens drawn by the old policy: (r - 1) - log r >= 0.
        k3 = ratio - 1.0 - log_ratio
        metrics = {
            schema.LOSS_POLICY: float(loss.detach()),
            schema.KL_APPROX: float(masked_mean(k3, mask)),
            schema.CLIP_FRAC: float(masked_mean((high | low).float(), mask)),
            schema.CLIP_FRAC_LOW: float(masked_mean(low.float(), mask)),
            schema.CLIP_FRAC_HIGH: float(masked_mean(high.float(), mask)),
        }
    return loss, metrics


@register_objective("grpo")
def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    eps_low: float,
    eps_high: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """GRPO (Shao et al. 2024): token mean within each sequence, then mean over sequences."""
    return clipped_surrogate(
        logp, old_logp, advantages, mask, eps_low=eps_low, eps_high=eps_high, agg_mode="seq-mean-token-mean"
    )


@register_objective("dapo")
def dapo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    eps_low: float,
    eps_high: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """DAPO (Yu et al. 2025): token-level mean over the batch with decoupled clip (eps_high > eps_low)."""
    return clipped_surrogate(
        logp, old_logp, advantages, mask, eps_low=eps_low, eps_high=eps_high, agg_mode="token-mean"
    )


@register_objective("dr_grpo")
def dr_grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    eps_low: float,
    eps_high: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Dr. GRPO (Liu et al. 2025): token sums divided by a constant length, removing the length bias."""
    return clipped_surrogate(
        logp,
        old_logp,
        advantages,
        mask,
        eps_low=eps_low,
        eps_high=eps_high,
        agg_mode="seq-mean-token-sum-norm",
    )


@register_objective("rloo")
def rloo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    eps_low: float,
    eps_high: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """RLOO (Ahmadian et al. 2024) advantages on the clipped surrogate, token-level mean."""
    return clipped_surrogate(
        logp, old_logp, advantages, mask, eps_low=eps_low, eps_high=eps_high, agg_mode="token-mean"
    )
