"""Torch-free metrics: pass@k against brute force, group diversity, NaN-aware smoothing."""

import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from analysis.metrics import ema, group_metrics, pass_at_k
from analysis.schema import DIVERSITY_DISTINCT_CORRECT, DIVERSITY_DISTINCT_FRAC, PASS_AT_1, PASS_AT_K


def brute_pass_at_k(n: int, c: int, k: int) -> float:
    """Fraction of all k-subsets of n samples (c correct) that contain a correct one."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", range(1, 9))
def test_pass_at_k_matches_brute_force(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(n, c, k), abs=1e-12), (n, c, k)


@given(st.integers(1, 200).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))))
def test_pass_at_k_bounds(nck):
    n, c, k = nck
    p = pass_at_k(n, c, k)
    assert 0.0 <= p <= 1.0
    assert p == pytest.approx(c / n) if k == 1 else p >= pass_at_k(n, c, k - 1) - 1e-12


@pytest.mark.parametrize("args", [(3, 4, 1), (3, -1, 1), (3, 1, 0), (3, 1, 4)])
def test_pass_at_k_rejects_bad_input(args):
    with pytest.raises(ValueError):
        pass_at_k(*args)


def test_group_metrics_hand_example():
    # Group 0: two distinct correct answers of four; group 1: all wrong, three identical.
    group_ids = [0, 0, 0, 0, 1, 1, 1, 1]
    responses = ["7", "7", "07", "8", "9", "9", "9", "5"]
    correct = [True, True, True, False, False, False, False, False]
    m = group_metrics(group_ids, responses, correct)
    assert m[PASS_AT_1] == pytest.approx(3 / 8)
    assert m[PASS_AT_K] == pytest.approx(1 / 2)
    assert m[DIVERSITY_DISTINCT_FRAC] == pytest.approx((3 / 4 + 2 / 4) / 2)
    assert m[DIVERSITY_DISTINCT_CORRECT] == pytest.approx((2 + 0) / 2)


def test_group_metrics_edge_cases():
    assert all(math.isnan(v) for v in group_metrics([], [], []).values())
    with pytest.raises(ValueError, match="lengths differ"):
        group_metrics([0, 0], ["a"], [True])


def test_ema_skips_nan_and_inf():
    out = ema([math.nan, 1.0, math.nan, 3.0, math.inf], alpha=0.5)
    assert math.isnan(out[0])
    np.testing.assert_allclose(out[1:], [1.0, 1.0, 2.0, 2.0])
    np.testing.assert_allclose(ema([1.0, 2.0, 3.0], alpha=1.0), [1.0, 2.0, 3.0])
    with pytest.raises(ValueError):
        ema([1.0], alpha=0.0)
