"""Objectives, aggregation and advantage estimators against hand-computed values on tiny tensors."""

import math

import pytest
import torch

from analysis import schema
from analysis.errors import UsageError
from trainer.advantages import get_advantage, zero_advantage_frac
from trainer.aggregation import agg_loss, masked_mean
from trainer.objectives import get_objective

# 2 sequences x 3 tokens; old_logp = 0 so the ratio is exp(logp).
RATIO = [[1.5, 1.0, 0.7], [0.5, 1.1, 1.0]]
ADV = [[1.0, 1.0, 1.0], [-2.0, -2.0, -2.0]]
MASK = [[1, 1, 1], [1, 1, 0]]
# Per-token clipped loss with eps_low 0.2, eps_high 0.28: max(-A r, -A clip(r, 0.8, 1.28))
#   row 0 (A=1):  r=1.5 -> -1.28 (clipped high), r=1.0 -> -1.0, r=0.7 -> -0.7 (A>0: no low clip)
#   row 1 (A=-2): r=0.5 -> 1.6 (clipped low), r=1.1 -> 2.2, third token masked
TOKEN_LOSS = [[-1.28, -1.0, -0.7], [1.6, 2.2, 0.0]]
EXPECTED = {
    "grpo": ((-2.98 / 3) + (3.8 / 2)) / 2,  # seq-mean-token-mean
    "dapo": 0.82 / 5,  # token-mean
    "rloo": 0.82 / 5,
    "dr_grpo": ((-2.98 / 3) + (3.8 / 3)) / 2,  # token sums / T, mean over sequences
}


def inputs():
    logp = torch.tensor(RATIO).log().requires_grad_()
    return logp, torch.zeros(2, 3), torch.tensor(ADV), torch.tensor(MASK)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_objective_hand_values(name):
    logp, old, adv, mask = inputs()
    loss, metrics = get_objective(name)(logp, old, adv, mask, eps_low=0.2, eps_high=0.28)
    assert float(loss.detach()) == pytest.approx(EXPECTED[name], abs=1e-6)
    assert metrics[schema.LOSS_POLICY] == pytest.approx(EXPECTED[name], abs=1e-6)
    assert metrics[schema.CLIP_FRAC_HIGH] == pytest.approx(1 / 5)
    assert metrics[schema.CLIP_FRAC_LOW] == pytest.approx(1 / 5)
    assert metrics[schema.CLIP_FRAC] == pytest.approx(2 / 5)
    k3 = [r - 1 - math.log(r) for r in (1.5, 1.0, 0.7, 0.5, 1.1)]
    assert metrics[schema.KL_APPROX] == pytest.approx(sum(k3) / 5, abs=1e-6)
    loss.backward()
    # Clipped tokens and the masked token carry no gradient; the others do.
    grad = logp.grad
    assert grad[0, 0] == 0 and grad[1, 0] == 0 and grad[1, 2] == 0
    assert (grad[0, 1:] != 0).all() and grad[1, 1] != 0


def test_clip_bounds_are_asymmetric():
    """Just inside a bound keeps the gradient, just outside removes it; the clip only acts on its side."""
    ratio = torch.tensor([[1.27, 1.29, 0.81, 0.79, 0.5, 2.0]])
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0, 1.0, -1.0]])
    logp = ratio.log().requires_grad_()
    loss, m = get_objective("dapo")(
        logp, torch.zeros(1, 6), adv, torch.ones(1, 6), eps_low=0.2, eps_high=0.28
    )
    loss.backward()
    assert (logp.grad[0] != 0).tolist() == [True, False, True, False, True, True]
    assert m[schema.CLIP_FRAC_HIGH] == pytest.approx(1 / 6) and m[schema.CLIP_FRAC_LOW] == pytest.approx(
        1 / 6
    )


def test_onpolicy_loss_is_minus_mean_advantage():
    adv = torch.tensor([[0.5, 0.5], [-1.0, -1.0]])
    logp = torch.full((2, 2), -1.3, requires_grad=True)
    loss, m = get_objective("grpo")(logp, logp.detach(), adv, torch.ones(2, 2), eps_low=0.2, eps_high=0.2)
    assert (
        float(loss.detach()) == pytest.approx(0.25) and m[schema.KL_APPROX] == 0 and m[schema.CLIP_FRAC] == 0
    )


def test_agg_modes_and_masked_mean():
    loss, mask = torch.tensor(TOKEN_LOSS), torch.tensor(MASK)
    assert float(agg_loss(loss, mask, "token-mean")) == pytest.approx(EXPECTED["dapo"])
    assert float(agg_loss(loss, mask, "seq-mean-token-mean")) == pytest.approx(EXPECTED["grpo"])
    assert float(agg_loss(loss, mask, "seq-mean-token-sum")) == pytest.approx((-2.98 + 3.8) / 2)
    assert float(agg_loss(loss, mask, "seq-mean-token-sum-norm")) == pytest.approx(EXPECTED["dr_grpo"])
    # A sequence with an empty mask is left out of the sequence mean.
    padded = torch.cat([loss, torch.full((1, 3), 9.0)])
    empty = torch.cat([mask, torch.zeros(1, 3, dtype=torch.long)])
    assert float(agg_loss(padded, empty, "seq-mean-token-mean")) == pytest.approx(EXPECTED["grpo"])
    assert masked_mean(loss, mask, dim=-1).tolist() == pytest.approx([-2.98 / 3, 1.9])
    with pytest.raises(ValueError, match="seq-mean-token-sum-norm"):
        agg_loss(loss, mask, "token-sum")


REWARDS = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 5.0])
GROUPS = torch.tensor([3, 3, 3, 3, 7, 7, 9])  # mixed group, all-equal group, group of one
STD3 = math.sqrt(0.1875)  # population std of [1, 0, 1, 1]


@pytest.mark.parametrize(
    "name, expected",
    [
        ("grpo", [0.25 / STD3, -0.75 / STD3, 0.25 / STD3, 0.25 / STD3, 0, 0, 0]),
        ("dapo", [0.25 / STD3, -0.75 / STD3, 0.25 / STD3, 0.25 / STD3, 0, 0, 0]),
        ("dr_grpo", [0.25, -0.75, 0.25, 0.25, 0, 0, 0]),
        ("rloo", [1 - 2 / 3, 0 - 1, 1 - 2 / 3, 1 - 2 / 3, 0, 0, 0]),
    ],
)
def test_advantage_hand_values(name, expected):
    adv = get_advantage(name)(REWARDS, GROUPS)
    assert adv.shape == (7,) and adv.dtype == torch.float32
    assert adv.tolist() == pytest.approx(expected, abs=1e-5)


def test_zero_advantage_frac():
    assert zero_advantage_frac(REWARDS, GROUPS) == pytest.approx(2 / 3)
    assert zero_advantage_frac(torch.tensor([1.0, 0.0]), torch.tensor([0, 0])) == 0.0


def test_unknown_names_list_valid_ones():
    with pytest.raises(UsageError, match="dr_grpo.*grpo.*rloo"):
        get_objective("ppo2")
    with pytest.raises(UsageError, match="dapo.*dr_grpo.*grpo.*rloo"):
        get_advantage("gae")
