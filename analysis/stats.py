"""Statistics over seeds, as RL papers now report them (Agarwal et al. 2021, "Deep RL at the Edge of the
Statistical Precipice"): per group of runs the mean and interquartile mean (IQM) of their final values with
95% bootstrap intervals; between two groups the ratio of IQMs and the probability of improvement
P(X > Y) = Mann-Whitney U / (n·m), each with an interval, and a one-sentence verdict.

Pure functions of arrays, built on scipy.stats (bootstrap, trim_mean, mannwhitneyu); names follow rliable
(`aggregate_iqm`, `get_interval_estimates`, `probability_of_improvement`) without depending on it (archived,
pins an old `arch`). Intervals are seeded, so the same runs always print the same figures.

The bootstrap is too narrow at small n (docs/statistics.md, `python bench/stats_coverage.py`). A group's
intervals are therefore Hesterberg's expanded percentile intervals, and a verdict needs both the interval of
P(X > Y) to exclude 0.5 and the two-sided Mann-Whitney test (exact at small n) to reject at 5%, which keeps two
groups from one distribution "not distinguishable" in about 95% of trials at any n.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from analysis.metrics import final_value

CONFIDENCE = 0.95
N_RESAMPLES = 2000
SEED = 0
ALPHA = 0.05
"""Two-sided level of the Mann-Whitney test behind a verdict."""
POWER = 0.8
"""The power that "about N per group would tell" is sized for."""
MAX_SEEDS_SIZED = 1000
Statistic = Callable[..., np.ndarray]


def final_values(traces: Sequence[ArrayLike]) -> np.ndarray:
    """One final value per run (analysis.metrics.final_value) from its metric trace in step order."""
    return np.array([final_value(t) for t in traces], dtype=np.float64)


def iqm(x: ArrayLike, axis: int = -1) -> np.ndarray | float:
    """Interquartile mean: the mean of the middle 50% (25% trimmed from each end), along `axis`."""
    return stats.trim_mean(np.asarray(x, dtype=np.float64), 0.25, axis=axis)


def mean(x: ArrayLike, axis: int = -1) -> np.ndarray | float:
    return np.mean(np.asarray(x, dtype=np.float64), axis=axis)


def expanded_confidence(n: int, confidence: float = CONFIDENCE) -> float:
    """The percentile level of Hesterberg's expanded percentile interval ("What Teachers Should Know About the
    Bootstrap", 2015): the bootstrap spread is sqrt((n-1)/n) too small and normal quantiles too short at small n,
    so take the percentiles whose normal quantile is sqrt(n/(n-1)) * t_{n-1}'s. Measured coverage of a nominal
    95% interval of the mean, normal data: 80% plain -> 87% expanded at n = 4, 88% -> 94% at 8, 92% -> 95% at 16
    (bench/stats_coverage.py)."""
    tail = (1 - confidence) / 2
    z = math.sqrt(n / (n - 1)) * stats.t.ppf(1 - tail, n - 1)
    return float(1 - 2 * stats.norm.sf(z))


def _bootstrap(
    samples: tuple[np.ndarray, ...], statistic: Statistic, confidence: float, n_resamples: int, seed: int
) -> tuple:
    """Percentile-bootstrap interval along the last axis (other axes: independent experiments), each sample
    resampled on its own (rliable's stratified bootstrap with one task). Resamples go in batches of about 4M
    values (a pairwise statistic compares n x m), which bounds memory for stacks of experiments."""
    res = stats.bootstrap(
        samples,
        statistic,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="percentile",  # BCa fails on constant data (every seed ends at 0 reward); coverage is alike
        axis=-1,
        vectorized=True,
        paired=False,
        batch=max(1, 4_000_000 // max(1, math.prod(s.shape[-1] for s in samples[1:]) * samples[0].size)),
        rng=np.random.default_rng(seed),
    )
    lo, hi = res.confidence_interval
    return (float(lo), float(hi)) if np.ndim(lo) == 0 else (np.asarray(lo), np.asarray(hi))


def interval(
    x: ArrayLike,
    statistic: Statistic = iqm,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
    expanded: bool = True,
) -> tuple:
    """95% bootstrap interval of `statistic` (mean or iqm) over the last axis of `x`: floats for one sample,
    arrays for a stack of them; NaN with fewer than two values. expanded=False: the plain percentile interval
    (too narrow at small n; bench/stats_coverage.py shows by how much)."""
    a = np.asarray(x, dtype=np.float64)
    if a.shape[-1] < 2:
        nan = np.full(a.shape[:-1], np.nan)
        return (math.nan, math.nan) if a.ndim == 1 else (nan, nan)
    level = expanded_confidence(a.shape[-1]) if expanded else CONFIDENCE
    return _bootstrap((a,), statistic, level, n_resamples, seed)


def iqm_ratio(x: ArrayLike, y: ArrayLike, axis: int = -1) -> np.ndarray | float:
    return iqm(x, axis=axis) / iqm(y, axis=axis)


def ratio_interval(x: ArrayLike, y: ArrayLike, n_resamples: int = N_RESAMPLES, seed: int = SEED) -> tuple:
    """95% bootstrap interval of iqm(x) / iqm(y); NaN unless y's values are all nonzero and of one sign (else
    some resampled denominators are zero or flip sign, and the ratio means nothing)."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if min(len(a), len(b)) < 2 or not (np.all(b > 0) or np.all(b < 0)):
        return math.nan, math.nan
    return _bootstrap((a, b), iqm_ratio, CONFIDENCE, n_resamples, seed)


def prob_improvement(x: ArrayLike, y: ArrayLike, axis: int = -1) -> np.ndarray | float:
    """P(X > Y) (ties count half) = Mann-Whitney U of x against y / (n·m)."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    u = stats.mannwhitneyu(a, b, axis=axis).statistic
    return u / (a.shape[axis] * b.shape[axis])


def _u_fraction(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """U / (n·m) by counting pairs: the same number as prob_improvement (tested), but mannwhitneyu ranks and
    computes a p-value for each of the thousands of resamples, which made the bootstrap ~10x slower."""
    a, b = np.moveaxis(x, axis, -1)[..., :, None], np.moveaxis(y, axis, -1)[..., None, :]
    return np.mean((a > b) + 0.5 * (a == b), axis=(-2, -1))


def prob_improvement_interval(
    x: ArrayLike, y: ArrayLike, n_resamples: int = N_RESAMPLES, seed: int = SEED
) -> tuple:
    """95% percentile-bootstrap interval of P(X > Y), each group resampled on its own; NaN with fewer than two
    values in a group. Too narrow at small n like any bootstrap: verdicts also need the rank test."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if min(a.shape[-1], b.shape[-1]) < 2:
        return math.nan, math.nan
    return _bootstrap((a, b), _u_fraction, CONFIDENCE, n_resamples, seed)


def rank_test(x: ArrayLike, y: ArrayLike) -> float:
    """Two-sided Mann-Whitney p-value (exact when a group has <= 8 values and no ties, else normal approx.)."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if min(len(a), len(b)) < 1:
        return math.nan
    return float(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)


def distinguishable(p_ci: tuple[float, float], p_value: float) -> bool:
    """The verdict rule: the interval of P(X > Y) excludes 0.5 AND the rank test rejects at ALPHA. The bootstrap
    alone says "different" for 18% of same-distribution pairs at 3 seeds each; the exact test caps that at 5%."""
    lo, hi = p_ci
    return (lo > 0.5 or hi < 0.5) and p_value < ALPHA


def seeds_needed(p: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """Seeds per group for the two-sided Mann-Whitney test to detect P(X > Y) = p at `alpha` with `power`.

    Noether (1987): total N = (z_{1-alpha/2} + z_power)^2 / (12 c (1-c) (p - 1/2)^2) with c = 1/2 of N in each
    group, so n per group = (z_{1-alpha/2} + z_power)^2 / (6 (p - 1/2)^2): 6 even for p = 1 (at 5% and 80%).
    It takes the observed p as the true one, so it is a rough guide, not a promise; bench/stats_coverage.py
    measures the verdict's power at the size it gives.
    """
    if not math.isfinite(p) or p == 0.5:
        return math.inf
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return float(math.ceil(z**2 / (6 * (p - 0.5) ** 2)))


@dataclass(frozen=True)
class GroupStats:
    """One group's final values summarised: n, mean and IQM with their 95% intervals."""

    n: int
    mean: float
    mean_ci: tuple[float, float]
    iqm: float
    iqm_ci: tuple[float, float]


def group_stats(values: ArrayLike) -> GroupStats:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or not len(x):
        raise ValueError(f"group_stats needs a non-empty 1-D array of final values, got shape {x.shape}")
    return GroupStats(len(x), float(mean(x)), interval(x, mean), float(iqm(x)), interval(x, iqm))


@dataclass(frozen=True)
class PairStats:
    """Group A against group B: ratio of IQMs, P(A > B), each with a 95% interval, and the rank test."""

    n: int
    m: int
    ratio: float
    ratio_ci: tuple[float, float]
    p: float
    p_ci: tuple[float, float]
    p_value: float


def pair_stats(x: ArrayLike, y: ArrayLike) -> PairStats:
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if not (len(a) and len(b)):
        raise ValueError(f"pair_stats needs values in both groups, got {len(a)} and {len(b)}")
    ratio = float(iqm_ratio(a, b)) if np.all(b > 0) or np.all(b < 0) else math.nan
    return PairStats(
        len(a), len(b), ratio, ratio_interval(a, b), float(prob_improvement(a, b)),
        prob_improvement_interval(a, b), rank_test(a, b),
    )  # fmt: skip


def _sizes(n: int, m: int) -> str:
    if n == m:
        return f"{n} seed{'s' if n != 1 else ''} each"
    return f"{n} and {m} seeds"


def verdict(a: str, b: str, pair: PairStats, higher: str = "ends higher") -> str:
    """One sentence from P(A > B), its interval, the rank test and the group sizes; `higher` reads after a
    group's name ("keeps more entropy")."""
    p, (lo, hi), n, m = pair.p, pair.p_ci, pair.n, pair.m
    if distinguishable(pair.p_ci, pair.p_value):
        if p < 0.5:  # say it the way round that reads as "more"
            a, b, p, lo, hi, n, m = b, a, 1 - p, 1 - hi, 1 - lo, m, n
        return f"{a} {higher} than {b}: P = {p:.2f} [{lo:.2f}, {hi:.2f}], {_sizes(n, m)}"
    shown = f"P = {p:.2f} [{lo:.2f}, {hi:.2f}]" if math.isfinite(lo) else f"P = {p:.2f}"
    need = seeds_needed(p)
    if need > MAX_SEEDS_SIZED:
        tell = f"the difference seen is too small to size (over {MAX_SEEDS_SIZED} per group)"
    elif need <= min(n, m):  # borderline: the effect seen should show at this size, yet did not
        tell = "borderline: a few more seeds would tell"
    else:
        tell = f"about {need:.0f} per group would tell"
    return f"{a} vs {b}: not distinguishable from seed noise with {_sizes(n, m)} ({shown}); {tell}"
