"""Statistics over seeds (analysis.stats) against known answers: interval coverage, P(improvement) = U / (n·m),
the verdict rule's false alarms on groups from one distribution, and its power on separated groups."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from analysis import stats
from analysis.metrics import final_value


def test_final_values_are_the_mean_of_the_last_tenth():
    trace = np.arange(20.0)  # last 10% = the last 2 steps
    assert stats.final_values([trace, [5.0], []]).tolist()[:2] == [18.5, 5.0]
    assert math.isnan(stats.final_values([[]])[0])
    assert final_value(np.arange(9.0)) == 8.0  # at least one step


def test_iqm_is_the_mean_of_the_middle_half():
    assert stats.iqm([100.0, 1, 2, 3, 4, 5, 6, -100]) == pytest.approx(3.5)  # 2..5 kept
    assert stats.iqm([1.0, 2, 3, 4]) == pytest.approx(2.5)


def test_mean_interval_covers_the_true_mean_92_to_98_percent_at_n30():
    """1,000 synthetic experiments of 30 normal draws: the 95% interval of the mean holds the true mean in
    92-98% of them (the plain percentile bootstrap lands near 93%, the expanded one near 95% at this n)."""
    x = np.random.default_rng(2021).normal(loc=3.0, scale=2.0, size=(1000, 30))
    lo, hi = stats.interval(x, stats.mean, n_resamples=1000, seed=7)
    coverage = np.mean((lo <= 3.0) & (hi >= 3.0))
    assert 0.92 <= coverage <= 0.98, coverage


def test_iqm_interval_covers_a_symmetric_distributions_centre():
    x = np.random.default_rng(5).normal(loc=-1.0, size=(1000, 30))
    lo, hi = stats.interval(x, stats.iqm, n_resamples=1000, seed=7)
    assert 0.92 <= np.mean((lo <= -1.0) & (hi >= -1.0)) <= 0.98


def test_interval_is_deterministic_and_undefined_below_two_values():
    x = [0.3, 0.1, 0.7, 0.4, 0.2]
    assert stats.interval(x) == stats.interval(x)
    assert all(math.isnan(v) for v in stats.interval([1.0]))
    assert stats.interval([0.0, 0.0, 0.0]) == (0.0, 0.0)  # constant: no spread, no failure


@pytest.mark.parametrize(
    ("x", "y"),
    [
        ([1.0, 2.0, 3.0], [0.5, 2.0, 2.5, 4.0]),
        ([0.0] * 4, [0.0] * 4),
        ([5.0, 6.0], [1.0]),
        (list(range(9)), [4.0]),
    ],
)
def test_prob_improvement_is_mann_whitney_u_over_nm(x, y):
    brute = np.mean([(a > b) + 0.5 * (a == b) for a in x for b in y])
    u = sps.mannwhitneyu(x, y).statistic
    assert stats.prob_improvement(x, y) == pytest.approx(u / (len(x) * len(y))) == pytest.approx(brute)
    assert stats._u_fraction(np.array(x), np.array(y)) == pytest.approx(brute)  # what the bootstrap resamples


def test_prob_improvement_interval_of_separated_groups_is_one():
    assert stats.prob_improvement_interval([5.0, 6.0, 7.0], [1.0, 2.0, 3.0]) == (1.0, 1.0)


def test_ratio_of_iqms_and_when_it_is_undefined():
    pair = stats.pair_stats([2.0, 2.2, 1.8, 2.0], [1.0, 1.1, 0.9, 1.0])
    assert pair.ratio == pytest.approx(2.0)
    assert pair.ratio_ci[0] < 2.0 < pair.ratio_ci[1]
    crossing = stats.pair_stats([1.0, 2.0, 3.0], [-1.0, 1.0, 2.0])  # B's IQM could be resampled to 0
    assert math.isnan(crossing.ratio) and all(math.isnan(v) for v in crossing.ratio_ci)


def _distinguished(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The verdict rule over many trials at once (rows are trials)."""
    lo, hi = stats.prob_improvement_interval(x, y, n_resamples=1000, seed=3)
    p_values = np.array([stats.rank_test(a, b) for a, b in zip(x, y, strict=True)])
    return np.array([stats.distinguishable((a, b), p) for a, b, p in zip(lo, hi, p_values, strict=True)])


@pytest.mark.parametrize("n", [3, 4, 8, 16])
def test_groups_from_one_distribution_are_not_distinguishable_in_90_percent(n):
    rng = np.random.default_rng(100 + n)
    x, y = rng.normal(size=(2, 400, n))
    assert np.mean(~_distinguished(x, y)) >= 0.90


def test_the_bootstrap_alone_would_cry_wolf_at_three_seeds():
    """Why the rule needs the rank test: at 3 seeds a side the interval of P(X > Y) alone excludes 0.5 for
    well over 10% of same-distribution pairs."""
    x, y = np.random.default_rng(3).normal(size=(2, 400, 3))
    lo, hi = stats.prob_improvement_interval(x, y, n_resamples=1000, seed=3)
    assert np.mean((lo > 0.5) | (hi < 0.5)) > 0.10


@pytest.mark.parametrize("n", [6, 8, 16])
def test_clearly_separated_groups_are_told_apart(n):
    rng = np.random.default_rng(200 + n)
    x = rng.normal(loc=3.0, size=(200, n))  # 3 standard deviations apart
    y = rng.normal(size=(200, n))
    assert np.mean(_distinguished(x, y)) >= 0.95


def test_verdict_sentences():
    rng = np.random.default_rng(0)
    x, y = rng.normal(1.0, 0.05, 16), rng.normal(0.5, 0.05, 16)
    assert stats.verdict("repo_r", "none", stats.pair_stats(x, y), "keeps more entropy") == (
        "repo_r keeps more entropy than none: P = 1.00 [1.00, 1.00], 16 seeds each"
    )
    # said the way round that reads as "more", whichever group comes first
    assert stats.verdict("none", "repo_r", stats.pair_stats(y, x), "keeps more entropy").startswith(
        "repo_r keeps more entropy than none: P = 1.00"
    )
    close = stats.pair_stats([1.0, 1.3, 0.9, 1.2], [1.1, 0.8, 1.0, 0.95])  # P = 11.5 / 16, one tie
    assert stats.verdict("a", "b", close) == (
        "a vs b: not distinguishable from seed noise with 4 seeds each (P = 0.72 [0.28, 1.00]); "
        "about 28 per group would tell"
    )


def test_verdicts_of_same_distribution_groups_end_to_end():
    rng = np.random.default_rng(11)
    said = [stats.verdict("a", "b", stats.pair_stats(*rng.normal(size=(2, 4)))) for _ in range(100)]
    assert sum("not distinguishable" in s for s in said) >= 90


def test_seeds_needed_is_noethers_formula():
    # (z_0.975 + z_0.8)^2 / (6 (0.75 - 0.5)^2) = 7.849 / 0.375 = 20.9
    assert stats.seeds_needed(0.75) == 21
    assert stats.seeds_needed(0.25) == 21
    assert stats.seeds_needed(0.99) == 6  # 7.849 / (6 * 0.49^2) = 5.4
    assert stats.seeds_needed(1.0) == 6  # the fewest any difference needs at 5% and 80% power
    assert stats.seeds_needed(0.5) == math.inf


def test_group_stats_of_one_run_has_no_interval():
    g = stats.group_stats([0.4])
    assert (g.n, g.mean, g.iqm) == (1, 0.4, 0.4)
    assert all(math.isnan(v) for v in (*g.mean_ci, *g.iqm_ci))
    with pytest.raises(ValueError, match="non-empty"):
        stats.group_stats([])
