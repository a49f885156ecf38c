"""Policy-gradient objectives: the PPO clipped surrogate with each algorithm's token aggregation, by name.

Each maps per-token log-probs under the current policy `logp` (B, T, with grad), the behaviour policy's
`old_logp` (B, T), advantages (B, T) and the response mask (B, T) to `(loss, metrics)`, on the PPO clipped
surrogate  -min(r A, clip(r, 1 - eps_low, 1 + eps_high) A),  r = exp(logp - old_logp).
They differ only in how tokens are aggregated (trainer.aggregation, OBJECTIVE_AGG) and in the eps they are
given; keyword arguments beyond eps are a controller's surrogate modifications (see clipped_surrogate). A
controller's extra loss term uses OBJECTIVE_AGG too, so it is aggregated like the surrogate.
"""

import functools
from collections.abc import Callable

import torch

from analysis import schema
from analysis.errors import UsageError
from trainer.aggregation import agg_loss, masked_mean

ObjectiveFn = Callable[..., tuple[torch.Tensor, dict[str, float]]]

OBJECTIVE_AGG = {
    # GRPO (Shao et al. 2024): token mean within each sequence, then mean over sequences.
    "grpo": "seq-mean-token-mean",
    # DAPO (Yu et al. 2025): token-level mean over the batch; its decoupled clip comes in through eps_high.
    "dapo": "token-mean",
    # Dr. GRPO (Liu et al. 2025): token sums divided by a constant length, removing the length bias.
    "dr_grpo": "seq-mean-token-sum-norm",
    # RLOO (Ahmadian et al. 2024): leave-one-out advantages on the clipped surrogate, token-level mean.
    "rloo": "token-mean",
}


def get_objective(name: str) -> ObjectiveFn:
    """`clipped_surrogate` with `name`'s aggregation; UsageError listing the valid names otherwise."""
    if name not in OBJECTIVE_AGG:
        raise UsageError(f"unknown objective {name!r}; valid: {', '.join(sorted(OBJECTIVE_AGG))}")
    return functools.partial(clipped_surrogate, agg_mode=OBJECTIVE_AGG[name])


def clipped_surrogate(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    eps_low: float,
    eps_high: float,
    agg_mode: str,
    detach_mask: torch.Tensor | None = None,
    gp_beta_low: float = 0.0,
    gp_beta_high: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO clipped surrogate aggregated with `agg_mode`, plus loss, k3-KL and clip-fraction metrics.

    Controller modifications (defaults: none): `detach_mask` (B, T) bool stops the gradient of those
    tokens (Clip-Cov); gp_beta_low / gp_beta_high > 0 keep a gradient β·(1 ∓ ε)·A·∇log π where the clip
    is active, on the low / high side (CE-GPPO's gradient-preserving clipping).
    """
    if detach_mask is not None:
        logp = torch.where(detach_mask, logp.detach(), logp)
    log_ratio = logp.float() - old_logp.float()  # (B, T)
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    per_token = torch.maximum(unclipped, clipped)  # (B, T)
    # The clip zeroes the gradient exactly where it is active: A > 0 above the top, A < 0 below the bottom.
    high = (advantages > 0) & (ratio.detach() > 1.0 + eps_high)
    low = (advantages < 0) & (ratio.detach() < 1.0 - eps_low)
    if gp_beta_high or gp_beta_low:
        # Value β·(clipped value), gradient β·(1 ± ε)·(-A)·∇log π: r / sg(r) is 1 with gradient ∇log π.
        r_sg = ratio / ratio.detach()
        gp_high = -gp_beta_high * (1.0 + eps_high) * advantages * r_sg
        gp_low = -gp_beta_low * (1.0 - eps_low) * advantages * r_sg
        per_token = torch.where(high, gp_high, torch.where(low, gp_low, per_token))
    loss = agg_loss(per_token, mask, agg_mode)
    with torch.no_grad():
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
