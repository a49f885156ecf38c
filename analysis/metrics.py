"""Torch-free metrics shared by the trainer, importers and the dashboard: pass@k, diversity, smoothing."""

import math
from collections.abc import Sequence

import numpy as np

from analysis.schema import DIVERSITY_DISTINCT_CORRECT, DIVERSITY_DISTINCT_FRAC, PASS_AT_1, PASS_AT_K

FINAL_TAIL = 10
"""A run's "final" value of a metric is its mean over the last 1/FINAL_TAIL of the steps (at least one step):
one definition for the run summary, `entropyscope runs`, the Runs page and the README's tables."""


def final_window(n_steps: int) -> int:
    """How many of the last steps make up "final" in a run of `n_steps` logged steps."""
    return max(1, n_steps // FINAL_TAIL)


def final_value(values: Sequence[float]) -> float:
    """A run's final value of one metric: the mean of its last final_window(len) logged values, in step order
    (NaN for an empty trace)."""
    x = np.asarray(values, dtype=np.float64)
    return float(x[-final_window(len(x)) :].mean()) if len(x) else math.nan


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k) (Chen et al. 2021)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    # The product form avoids the huge binomials of the textbook formula.
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def group_metrics(
    group_ids: Sequence[int], responses: Sequence[str], correct: Sequence[bool]
) -> dict[str, float]:
    """pass@1, pass@k (k = group size), and distinct (correct) responses per group of one prompt's samples."""
    if not len(group_ids) == len(responses) == len(correct):
        raise ValueError(
            f"lengths differ: {len(group_ids)} group ids, {len(responses)} responses, {len(correct)} flags"
        )
    if not group_ids:
        return dict.fromkeys(
            (PASS_AT_1, PASS_AT_K, DIVERSITY_DISTINCT_FRAC, DIVERSITY_DISTINCT_CORRECT), math.nan
        )
    groups: dict[int, list[tuple[str, bool]]] = {}
    for g, r, c in zip(group_ids, responses, correct, strict=True):
        groups.setdefault(g, []).append((r, bool(c)))
    return {
        PASS_AT_1: float(np.mean([bool(c) for c in correct])),
        PASS_AT_K: float(np.mean([any(c for _, c in g) for g in groups.values()])),
        DIVERSITY_DISTINCT_FRAC: float(np.mean([len({r for r, _ in g}) / len(g) for g in groups.values()])),
        DIVERSITY_DISTINCT_CORRECT: float(np.mean([len({r for r, c in g if c}) for g in groups.values()])),
    }


def ema(values: Sequence[float], alpha: float) -> np.ndarray:
    """Exponential moving average s = alpha*x + (1-alpha)*s; NaN and inf are skipped (s carries over).

    Starts at the first finite value (no bias toward 0); positions before it are NaN.
    """
    if not 0 < alpha <= 1:
        raise ValueError(f"ema alpha must be in (0, 1], got {alpha}")
    x = np.asarray(values, dtype=np.float64)
    out = np.full(x.shape, np.nan)
    s = math.nan
    for i, v in enumerate(x):
        if math.isfinite(v):
            s = v if math.isnan(s) else alpha * v + (1 - alpha) * s
        out[i] = s
    return out


def agreement(predicted: Sequence[float], measured: Sequence[float]) -> tuple[float, float]:
    """(Pearson r, least-squares slope of measured on predicted); NaN where undefined (fewer than 2 points
    or a constant series)."""
    x, y = np.asarray(predicted, dtype=np.float64), np.asarray(measured, dtype=np.float64)
    if len(x) < 2 or np.ptp(x) == 0:
        return math.nan, math.nan
    slope = float(np.polyfit(x, y, 1)[0])
    r = float(np.corrcoef(x, y)[0, 1]) if np.ptp(y) > 0 else math.nan
    return r, slope
