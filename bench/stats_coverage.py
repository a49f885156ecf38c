"""How far to trust the statistics `entropyscope compare` prints (analysis.stats), measured on synthetic data
whose answer is known; the figures of docs/statistics.md.

    .venv/bin/python bench/stats_coverage.py [--trials 1000] [--resamples 2000] [--seed 0]

Per n (seeds per group), over --trials experiments of standard normal draws:
- coverage of the nominal 95% interval of the mean and of the IQM (true value 0), plain percentile bootstrap
  vs Hesterberg's expanded percentile interval (what groups use), and how wide the plain interval of the mean
  is against the exact t interval (1.00 = as wide as an interval with exactly 95% coverage);
- coverage of the 95% interval of P(X > Y) for groups 0.5 standard deviations apart (true P = 0.638);
- false alarms: the share of same-distribution pairs called different by the interval of P alone, and by the
  verdict rule (interval and Mann-Whitney test);
- power: the share of pairs 1 standard deviation apart (P = 0.760) the verdict tells apart; Noether's formula
  (analysis.stats.seeds_needed) says 21 per group give 80%.
Deliberately simple: normal data only; RL returns are often skewed, where the mean's interval does worse.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import stats as sps

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analysis import stats  # noqa: E402

SIZES = (3, 4, 8, 16, 21, 30)


def covers(ci: tuple[np.ndarray, np.ndarray], truth: float) -> float:
    lo, hi = ci
    return float(np.mean((lo <= truth) & (truth <= hi)))


def verdicts(x: np.ndarray, y: np.ndarray, resamples: int) -> tuple[float, float]:
    """(share called different by the interval of P alone, share called different by the verdict rule)."""
    lo, hi = stats.prob_improvement_interval(x, y, n_resamples=resamples)
    p_values = [stats.rank_test(a, b) for a, b in zip(x, y, strict=True)]
    by_ci = (lo > 0.5) | (hi < 0.5)
    rule = [stats.distinguishable((a, b), p) for a, b, p in zip(lo, hi, p_values, strict=True)]
    return float(np.mean(by_ci)), float(np.mean(rule))


def row(n: int, trials: int, resamples: int, rng: np.random.Generator) -> dict[str, float]:
    x = rng.normal(size=(trials, n))
    plain = stats.interval(x, stats.mean, resamples, expanded=False)
    t_half = sps.t.ppf(0.975, n - 1) * x.std(axis=1, ddof=1) / np.sqrt(n)
    shifted = rng.normal(loc=0.5, size=(trials, n))
    same = rng.normal(size=(trials, n))
    apart = rng.normal(loc=1.0, size=(trials, n))
    false_ci, false_rule = verdicts(same, x, resamples)
    return {
        "mean plain": covers(plain, 0.0),
        "mean expanded": covers(stats.interval(x, stats.mean, resamples), 0.0),
        "IQM plain": covers(stats.interval(x, stats.iqm, resamples, expanded=False), 0.0),
        "IQM expanded": covers(stats.interval(x, stats.iqm, resamples), 0.0),
        "width vs t": float(np.mean(plain[1] - plain[0]) / np.mean(2 * t_half)),
        "P(X>Y) ci": covers(stats.prob_improvement_interval(shifted, x, n_resamples=resamples), sps.norm.cdf(0.5 / 2**0.5)),
        "false: ci alone": false_ci,
        "false: verdict": false_rule,
        "power at 1 sd": verdicts(apart, x, resamples)[1],
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=1000, help="synthetic experiments per n (default 1000)")
    ap.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default 2000)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    rows = {n: row(n, args.trials, args.resamples, rng) for n in SIZES}
    cols = list(rows[SIZES[0]])
    print(f"{args.trials} trials per n, {args.resamples} bootstrap resamples, nominal 95%\n")
    print("| n | " + " | ".join(cols) + " |")
    print("|---:|" + "---:|" * len(cols))
    for n, r in rows.items():
        print(f"| {n} | " + " | ".join(f"{r[c]:.3f}" for c in cols) + " |")


if __name__ == "__main__":
    main()
