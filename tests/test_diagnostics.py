"""Diagnostics against hand-computed values: covariance, clip sides, quadrants, precision drift."""

import math

import numpy as np
import pytest
import torch

from analysis import schema
from trainer.diagnostics import (
    clip_and_quadrants,
    entropy_dynamics,
    entropy_histogram,
    entropy_stats,
    onpolicy_deviation,
    precision_metrics,
)


def test_entropy_stats():
    entropy = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    s = entropy_stats(entropy, mask)
    assert s[schema.ENTROPY_MEAN] == pytest.approx(2.5)  # tokens 1, 2, 3, 4
    assert s[schema.ENTROPY_SEQ_MEAN] == pytest.approx(3.0)  # sequences 2 and 4
    assert (s[schema.ENTROPY_P10], s[schema.ENTROPY_P50], s[schema.ENTROPY_P90]) == pytest.approx(
        (1.3, 2.5, 3.7)
    )


def test_entropy_histogram_has_fixed_edges():
    entropy = torch.tensor([[0.0, 1.0, 4.7], [2.0, 9.0, 3.0]])  # 4.7 rounds just above log(100)
    mask = torch.tensor([[1, 1, 1], [1, 0, 1]])
    edges, counts = entropy_histogram(entropy, mask, bins=4, vocab_size=100)
    assert edges.shape == (5,) and counts.shape == (4,) and counts.dtype == np.int64
    assert edges[0] == 0 and edges[-1] == pytest.approx(math.log(100))
    assert counts.tolist() == [2, 1, 1, 1]  # width 1.15: {0, 1}, {2}, {3}, {4.7 -> last bin}


def test_entropy_dynamics_hand_cov():
    logp = torch.tensor([[-1.0, -2.0], [-3.0, -4.0]])
    adv = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
    mask = torch.tensor([[1, 1], [1, 0]])
    # masked: logp [-1, -2, -3] (mean -2), A [1, 1, -1] (mean 1/3)
    # cov = ((1)(2/3) + 0 + (-1)(-4/3)) / 3 = 2/3
    d = entropy_dynamics(logp, adv, mask, lr=0.01)
    assert d[schema.ENTROPY_COV] == pytest.approx(2 / 3)
    assert d[schema.ENTROPY_PRED_DELTA] == pytest.approx(-0.01 * 2 / 3)


def test_clip_sides_and_quadrants():
    ratio = torch.tensor([[1.4, 1.1, 0.7, 0.9], [1.5, 0.5, 0.5, 5.0]])
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0], [1.0, 0.0, -1.0, 1.0]])
    logp = torch.tensor([[-0.1, -3.0, -0.1, -3.0], [-2.0, -1.0, -2.0, -0.1]])
    entropy = torch.tensor([[0.5, 0.5, 0.5, 0.5], [1.0, 1.0, 1.0, 1.0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    side, quad, m = clip_and_quadrants(ratio, adv, logp, entropy, mask, eps_low=0.2, eps_high=0.28)
    assert side.dtype == quad.dtype == torch.int8
    assert side.tolist() == [[1, 0, -1, 0], [1, 0, -1, 0]]  # A == 0 and masked tokens are never clipped
    assert quad.tolist() == [[1, 2, 3, 4], [2, 0, 4, 0]]
    assert m[schema.CLIP_FRAC] == pytest.approx(4 / 7)
    assert m[schema.CLIP_FRAC_LOW] == pytest.approx(2 / 7) and m[schema.CLIP_FRAC_HIGH] == pytest.approx(
        2 / 7
    )
    assert [
        m[k] for k in (schema.QUADRANT_E1, schema.QUADRANT_E2, schema.QUADRANT_E3, schema.QUADRANT_E4)
    ] == [
        1.0,
        0.5,
        1.0,
        0.5,
    ]
    assert m[schema.RATIO_MEAN] == pytest.approx(6.6 / 7) and m[schema.RATIO_MAX] == pytest.approx(1.5)


def test_empty_quadrant_reports_zero():
    ones = torch.ones(1, 2)
    _, quad, m = clip_and_quadrants(ones * 2, ones, ones * -0.1, ones, ones, eps_low=0.2, eps_high=0.2)
    assert quad.tolist() == [[1, 1]] and m[schema.QUADRANT_E1] == 1.0
    assert m[schema.QUADRANT_E2] == m[schema.QUADRANT_E3] == m[schema.QUADRANT_E4] == 0.0


def test_onpolicy_deviation_ignores_masked():
    ratio = torch.tensor([[1.0, 1.0 + 3e-7, 0.5], [0.999999, 1.0, 9.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    assert onpolicy_deviation(ratio, mask) == pytest.approx(1e-6, rel=1e-2)


def test_precision_metrics_recover_injected_perturbation():
    torch.manual_seed(0)
    train = -torch.rand(4, 5) * 3 - 0.05  # (B, T), log-probs in (-3.05, -0.05)
    mask = torch.ones(4, 5, dtype=torch.long)
    mask[3, 3:] = 0  # 18 masked-in tokens
    delta, hit = 0.05, [(0, 1), (2, 0), (3, 2)]
    rollout = train.clone()
    for i, j in hit:
        rollout[i, j] += delta
    rollout[3, 4] += 5.0  # masked: must not count
    m = precision_metrics(rollout, train, mask)
    assert m[schema.PRECISION_LOGP_DIFF_MEAN] == pytest.approx(3 * delta / 18, rel=1e-5)
    assert m[schema.PRECISION_LOGP_DIFF_MAX] == pytest.approx(delta, rel=1e-5)
    prob_diff = [math.exp(float(train[i, j])) * (math.exp(delta) - 1) for i, j in hit]
    assert m[schema.PRECISION_PROB_DIFF_MEAN] == pytest.approx(sum(prob_diff) / 18, rel=1e-4)
    assert m[schema.PRECISION_PROB_DIFF_MAX] == pytest.approx(max(prob_diff), rel=1e-4)
    assert m[schema.PRECISION_LOGP_POS_FRAC] == 0.0
    assert 0.99 < m[schema.PRECISION_PEARSON] < 1.0


def test_precision_metrics_identical_and_positive_logp():
    logp = torch.tensor([[-0.5, -1.0, 0.002]])
    mask = torch.ones(1, 3)
    m = precision_metrics(logp, logp, mask)
    assert m[schema.PRECISION_LOGP_DIFF_MAX] == 0 and m[schema.PRECISION_PEARSON] == pytest.approx(1.0)
    assert m[schema.PRECISION_LOGP_POS_FRAC] == pytest.approx(1 / 3)
    const = torch.full((1, 3), -1.0)
    assert precision_metrics(const, const, mask)[schema.PRECISION_PEARSON] == 1.0
