"""Entropy, clipping and precision diagnostics: pure functions over tensors, keyed by schema constants.

Shapes: B sequences x T response tokens; `mask` (B, T) is 1 on response tokens. The science behind each
number is in DESIGN.md, "The science in one page".
"""

import math

import numpy as np
import torch

from analysis import schema
from trainer.aggregation import masked_mean

_QUADRANT_KEYS = (schema.QUADRANT_E1, schema.QUADRANT_E2, schema.QUADRANT_E3, schema.QUADRANT_E4)


def _masked_values(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The unmasked entries of x (B, T) as a flat float64 tensor (n,)."""
    return x.detach().double()[mask.bool()]


def entropy_stats(entropy: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """Token-mean, mean of per-sequence means, and 10/50/90th percentiles of entropy (B, T); NaN if empty."""
    values = _masked_values(entropy, mask)
    if values.numel() == 0:
        keys = (
            schema.ENTROPY_MEAN,
            schema.ENTROPY_SEQ_MEAN,
            schema.ENTROPY_P10,
            schema.ENTROPY_P50,
            schema.ENTROPY_P90,
        )
        return dict.fromkeys(keys, math.nan)
    m = mask.double()
    seq_mean = masked_mean(entropy.detach().double(), m, dim=-1)  # (B,)
    q = np.quantile(values.cpu().numpy(), [0.1, 0.5, 0.9])
    return {
        schema.ENTROPY_MEAN: float(values.mean()),
        schema.ENTROPY_SEQ_MEAN: float(masked_mean(seq_mean, m.sum(-1) > 0)),
        schema.ENTROPY_P10: float(q[0]),
        schema.ENTROPY_P50: float(q[1]),
        schema.ENTROPY_P90: float(q[2]),
    }


def entropy_histogram(
    entropy: torch.Tensor, mask: torch.Tensor, bins: int, vocab_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Counts (bins,) over fixed edges (bins + 1,) spanning [0, log V], so histograms compare across steps.

    Entropy lies in [0, log V] exactly; values rounding outside are counted in the edge bins.
    """
    edges = np.linspace(0.0, math.log(vocab_size), bins + 1)
    values = np.clip(_masked_values(entropy, mask).cpu().numpy(), edges[0], edges[-1])
    counts, _ = np.histogram(values, bins=edges)
    return edges, counts.astype(np.int64)


def entropy_dynamics(
    logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, lr: float
) -> dict[str, float]:
    """Batch estimate of the entropy-drift covariance and the covariance proxy of the entropy change.

    cov = mean((logp - mean logp) * (A - mean A)) over unmasked tokens; pred_delta = -lr * cov, the first-order
    change for a plain gradient step of size lr on a softmax policy's logits. With Adam, clipping and a network
    between logits and parameters it is a proxy, informative in sign only; trainer/entropy_delta.py measures
    and predicts the change from the update actually applied.
    """
    lp, adv = _masked_values(logp, mask), _masked_values(advantages, mask)
    if lp.numel() == 0:
        return {schema.ENTROPY_COV: 0.0, schema.ENTROPY_PRED_DELTA: 0.0}
    cov = float(((lp - lp.mean()) * (adv - adv.mean())).mean())
    return {schema.ENTROPY_COV: cov, schema.ENTROPY_PRED_DELTA: -lr * cov}


def quadrants(
    advantages: torch.Tensor, logp: torch.Tensor, entropy: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Quadrant (B, T) int8 by sign(A) x sign(L), L = logp + entropy ("likely" when L > 0): 1 A>0 likely,
    2 A>0 unlikely, 3 A<0 likely, 4 A<0 unlikely; 0 where A == 0 or masked."""
    valid = mask.bool()
    pos, neg = (advantages > 0) & valid, (advantages < 0) & valid
    likely = (logp + entropy) > 0
    quadrant = torch.zeros(mask.shape, dtype=torch.int8, device=mask.device)  # (B, T)
    for q, sel in enumerate((pos & likely, pos & ~likely, neg & likely, neg & ~likely), start=1):
        quadrant[sel] = q
    return quadrant


def clip_and_quadrants(
    ratio: torch.Tensor,
    advantages: torch.Tensor,
    logp: torch.Tensor,
    entropy: torch.Tensor,
    mask: torch.Tensor,
    eps_low: float,
    eps_high: float,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """Per-token clip side and quadrant (B, T) int8, and the clip / quadrant / ratio metrics.

    clip_side: +1 where A > 0 and r > 1 + eps_high, -1 where A < 0 and r < 1 - eps_low (the tokens whose
    gradient the clip removes), else 0; quadrant as `quadrants`.
    QUADRANT_Ei is the fraction of quadrant i's tokens that were clipped (0 for an empty quadrant).
    """
    valid = mask.bool()
    pos, neg = (advantages > 0) & valid, (advantages < 0) & valid
    high, low = pos & (ratio > 1.0 + eps_high), neg & (ratio < 1.0 - eps_low)
    clip_side = high.to(torch.int8) - low.to(torch.int8)  # (B, T)
    quadrant = quadrants(advantages, logp, entropy, mask)
    clipped = clip_side != 0
    n = max(int(valid.sum()), 1)
    r = _masked_values(ratio, mask)
    metrics = {
        schema.CLIP_FRAC: int(clipped.sum()) / n,
        schema.CLIP_FRAC_LOW: int(low.sum()) / n,
        schema.CLIP_FRAC_HIGH: int(high.sum()) / n,
        schema.RATIO_MEAN: float(r.mean()) if r.numel() else 1.0,
        schema.RATIO_MAX: float(r.max()) if r.numel() else 1.0,
    }
    for q, key in enumerate(_QUADRANT_KEYS, start=1):
        in_q = quadrant == q
        metrics[key] = int((in_q & clipped).sum()) / max(int(in_q.sum()), 1)
    return clip_side, quadrant, metrics


def onpolicy_deviation(ratio: torch.Tensor, mask: torch.Tensor) -> float:
    """max |r - 1| over unmasked tokens: 0 up to rounding before the policy has moved."""
    r = _masked_values(ratio, mask)
    return float((r - 1.0).abs().max()) if r.numel() else 0.0


def _pearson(x: torch.Tensor, y: torch.Tensor) -> float:
    """Pearson correlation of two flat float64 tensors: 1.0 when both are constant, 0.0 when one is."""
    dx, dy = x - x.mean(), y - y.mean()
    sx, sy = float(dx.square().sum().sqrt()), float(dy.square().sum().sqrt())
    if sx == 0.0 and sy == 0.0:
        return 1.0
    if sx == 0.0 or sy == 0.0:
        return 0.0
    return float((dx * dy).sum()) / (sx * sy)


def precision_metrics(
    rollout_logp: torch.Tensor, train_logp: torch.Tensor, mask: torch.Tensor
) -> dict[str, float]:
    """Drift between the rollout path's and the training forward's log-probs (B, T) on the same tokens."""
    a, b = _masked_values(rollout_logp, mask), _masked_values(train_logp, mask)
    if a.numel() == 0:
        keys = (
            schema.PRECISION_LOGP_POS_FRAC,
            schema.PRECISION_LOGP_DIFF_MEAN,
            schema.PRECISION_LOGP_DIFF_MAX,
            schema.PRECISION_PROB_DIFF_MEAN,
            schema.PRECISION_PROB_DIFF_MAX,
        )
        return {**dict.fromkeys(keys, 0.0), schema.PRECISION_PEARSON: 1.0}
    logp_diff = (a - b).abs()
    pa, pb = a.exp(), b.exp()
    prob_diff = (pa - pb).abs()  # as verl's training/rollout_probs_diff_*
    return {
        schema.PRECISION_LOGP_POS_FRAC: float(((a > 0) | (b > 0)).double().mean()),
        schema.PRECISION_LOGP_DIFF_MEAN: float(logp_diff.mean()),
        schema.PRECISION_LOGP_DIFF_MAX: float(logp_diff.max()),
        schema.PRECISION_PROB_DIFF_MEAN: float(prob_diff.mean()),
        schema.PRECISION_PROB_DIFF_MAX: float(prob_diff.max()),
        schema.PRECISION_PEARSON: _pearson(pa, pb),
    }
