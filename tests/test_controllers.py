"""Controllers: driven by synthetic entropy series (direction and bounds), and their tensor modifications
checked against hand-computed values."""

import math

import pytest
import torch

from analysis import schema
from trainer.config import TrainConfig
from trainer.controllers import CONTROLLERS, build_controller
from trainer.controllers.adapo import adapo_step
from trainer.controllers.bonus import bonus_step, entropy_bonus_loss
from trainer.controllers.cov import clip_cov_mask, kl_cov_loss, kl_cov_mask, token_cov
from trainer.controllers.repo import (
    entropy_drift,
    ladder_pos,
    ladder_zeta,
    repo_d_advantages,
    repo_r_advantages,
    setpoint_step,
)
from trainer.logprobs import token_logprobs
from trainer.objectives import clipped_surrogate

DEFAULTS = TrainConfig()
KI, KP, BONUS_KP = DEFAULTS.zeta_ki, DEFAULTS.zeta_kp, DEFAULTS.bonus_kp


def drive(ctrl, series, target):
    values = []
    for step, h in enumerate(series, 1):
        ctrl.update(h, target, step)
        values.append(ctrl.value)
    return values


def test_factory_builds_every_controller_and_rejects_unknown():
    for name in CONTROLLERS:
        ctrl = build_controller(TrainConfig(controller=name))
        m = ctrl.metrics(0.2, 0.28)
        assert set(m) == {
            schema.CONTROLLER_ZETA,
            schema.CONTROLLER_EPS_LOW,
            schema.CONTROLLER_EPS_HIGH,
            schema.CONTROLLER_COEF,
            schema.CONTROLLER_AT_BOUND,
            schema.CONTROLLER_BOUND_DIR,
            schema.CONTROLLER_CLOSED_LOOP,
        }
        # Those that steer toward entropy/target say so (the off_target alert judges only them).
        closed = {"repo_r", "repo_d", "adapo", "entropy_bonus"}
        assert m[schema.CONTROLLER_CLOSED_LOOP] == float(name in closed), name


@pytest.mark.parametrize(
    ("cfg", "low", "high"),
    [
        ({"controller": "repo_r"}, [0.1] * 30, [3.0] * 60),
        ({"controller": "repo_d"}, [0.1] * 30, [3.0] * 60),
        ({"controller": "adapo"}, [0.1] * 30, [3.0] * 60),
        ({"controller": "entropy_bonus", "bonus_coef_min": -0.05}, [0.1] * 60, [3.0] * 60),
        ({"controller": "entropy_bonus", "bonus_coef_min": 0.0}, [0.1] * 60, [3.0] * 60),
    ],
)
def test_bound_dir_names_the_bound_a_controller_is_pinned_at(cfg, low, high):
    """+1 pushing entropy up as hard as it may, -1 down (the bonus with no penalty: no bonus at all)."""
    ctrl = build_controller(TrainConfig(**cfg))

    def side():
        return ctrl.metrics(0.2, 0.2)[schema.CONTROLLER_BOUND_DIR]

    assert side() == 0.0
    drive(ctrl, low, target=1.0)
    assert side() == 1.0
    drive(ctrl, high, target=1.0)
    assert side() == -1.0
    drive(ctrl, [1.0], target=1.0)
    drive(ctrl, [0.8], target=1.0)
    assert side() == 0.0  # off the bound again
    assert (
        build_controller(TrainConfig(controller="kl_cov")).metrics(0.2, 0.2)[schema.CONTROLLER_BOUND_DIR] == 0
    )


# --- REPO setpoint law -------------------------------------------------------------------------------


@pytest.mark.parametrize("name,zmin,zmax", [("repo_r", 0.05, 1.25), ("repo_d", 1e-3, 10.0)])
def test_repo_low_entropy_raises_zeta_to_its_bound(name, zmin, zmax):
    ctrl = build_controller(TrainConfig(controller=name))
    assert ctrl.value == zmin
    values = drive(ctrl, [0.1] * 30, target=1.0)
    assert all(b >= a for a, b in zip(values, values[1:], strict=False))
    # e = 0.9: the integral climbs one rung (a doubling) per step, the proportional term adds KP * 0.9 rungs
    assert values[0] == pytest.approx(zmin * 2 ** (1 + KP * 0.9))
    assert values[-1] == pytest.approx(zmax)
    assert ctrl.at_bound and ctrl.metrics(0.2, 0.2)[schema.CONTROLLER_AT_BOUND] == 1.0


def test_repo_high_entropy_flips_sign_and_pushes_down():
    ctrl = build_controller(TrainConfig(controller="repo_r", zeta_max=0.5))
    drive(ctrl, [0.1] * 5, target=1.0)
    values = drive(ctrl, [2.0] * 40, target=1.0)
    assert all(b <= a for a, b in zip(values, values[1:], strict=False))
    assert values[-1] == pytest.approx(-0.5) and ctrl.at_bound  # flipped below ζ_min and grew negative
    assert all(abs(v) <= 0.5 + 1e-12 for v in values)


def test_ladder_and_setpoint_step_hand_values_and_deadband():
    assert ladder_zeta(1.0, 1e-4) == 1e-4 and ladder_zeta(3.0, 1e-4) == pytest.approx(4e-4)
    assert ladder_zeta(-2.0, 1e-4) == pytest.approx(-2e-4) and ladder_zeta(0.5, 1e-4) == 5e-5
    for z in (3e-3, -0.7, 5e-5, 0.0):
        assert ladder_zeta(ladder_pos(z, 1e-4), 1e-4) == pytest.approx(z)
    # e = +0.2: integral +KI*0.2 rungs; output KP*0.2 rungs above it
    u_i, z = setpoint_step(5.0, 0.8, 1.0, 1e-4, 1.0, 0.0, KI, KP)
    assert u_i == pytest.approx(5.0 + KI * 0.2) and z == pytest.approx(1e-4 * 2 ** (4.0 + (KI + KP) * 0.2))
    # a large error moves the integral at most one rung (the paper's doubling) per step
    assert setpoint_step(5.0, 0.0, 1.0, 1e-4, 1.0, 0.0, KI, KP)[0] == 6.0
    assert setpoint_step(5.0, 1.6, 1.0, 1e-4, 1.0, 0.0, KI, KP)[0] == 4.0
    # inside the dead band the integral is held; the output still has the proportional term
    u_i, z = setpoint_step(5.0, 0.95, 1.0, 1e-4, 1.0, 0.1, KI, KP)
    assert u_i == 5.0 and z == pytest.approx(1e-4 * 2 ** (4.0 + KP * 0.05))
    # |ζ| <= ζ_max, on both sides
    assert setpoint_step(100.0, 0.0, 1.0, 1e-4, 1.0, 0.0, KI, KP)[1] == pytest.approx(1.0)
    assert setpoint_step(-100.0, 9.0, 1.0, 1e-4, 1.0, 0.0, KI, KP)[1] == pytest.approx(-1.0)


def test_integral_holds_while_the_error_alone_saturates_zeta():
    """Anti-windup: far above target (KP·e past the ladder's end) ζ sits at -ζ_max but the integral stays put,
    so ζ leaves the bound as soon as the entropy nears the target; away from the bound it integrates."""
    u_i, z = setpoint_step(1.0, 4.0, 1.0, 0.05, 1.0, 0.0, KI, KP)  # e = -3: 1 + KP·e = -8, past -5.3
    assert u_i == 1.0 and z == pytest.approx(-1.0)
    u_i, z = setpoint_step(1.0, 1.1, 1.0, 0.05, 1.0, 0.0, KI, KP)  # e = -0.1: inside the ladder
    assert u_i == pytest.approx(1.0 - KI * 0.1) and abs(z) < 1.0
    # a descent from 4x the target: the held integral lets ζ turn positive within a step of reaching it,
    # where an integral that wound down for the whole descent would still hold ζ at its negative end
    ctrl = build_controller(TrainConfig(controller="repo_r"))
    drive(ctrl, [4.0] * 30, target=1.0)
    assert ctrl.u_i == 1.0 and ctrl.value == pytest.approx(-ctrl.zmax)
    drive(ctrl, [0.9], target=1.0)
    assert ctrl.value > 0


def _track(ctrl, steps=300, h=1.0, target=0.5):
    """A lagged toy plant: ζ sets (through a first-order lag) the entropy's rate of change against a
    constant collapse pressure."""
    trace, rate = [], 0.0
    for step in range(1, steps + 1):
        rate = 0.5 * rate + 0.5 * (0.05 * ctrl.value - 0.02)  # equilibrium at ζ = 0.4
        h = max(0.0, h + rate)
        ctrl.update(h, target, step)
        trace.append(h)
    return trace


def test_damped_law_settles_on_a_lagged_plant():
    ctrl = build_controller(TrainConfig(controller="repo_r", zeta_min=0.01))
    trace = _track(ctrl)
    assert max(abs(h - 0.5) / 0.5 for h in trace[150:]) < 0.08


def test_undamped_doubling_law_keeps_oscillating():
    """The REPO paper's law (KP = 0, one full rung per step) on the same plant: a limit cycle."""
    trace = _track(build_controller(TrainConfig(controller="repo_r", zeta_min=0.01, zeta_kp=0, zeta_ki=1e9)))
    assert max(abs(h - 0.5) / 0.5 for h in trace[150:]) > 0.15


def test_repo_r_advantages_hand_computed():
    adv = torch.tensor([[1.0, -1.0, 0.0, -0.5]])
    logp = torch.tensor([[-2.0, -3.0, -1.0, -30.0]])
    out = repo_r_advantages(adv, logp, zeta=0.5)
    # 1 - 0.5*1*(-2) = 2;  -1 - 0.5*1*(-3) = 0.5 -> clamped to 0;  0 stays 0;  floor -20: -0.5 + 0.5*0.5*20 = 4.5 -> 0
    torch.testing.assert_close(out, torch.tensor([[2.0, 0.0, 0.0, 0.0]]))
    out = repo_r_advantages(adv, logp, zeta=-0.1)
    # 1 + 0.1*(-2) = 0.8;  -1 + 0.1*(-3) = -1.3;  -0.5 - 0.1*0.5*20 = -1.5
    torch.testing.assert_close(out, torch.tensor([[0.8, -1.3, 0.0, -1.5]]))


def test_repo_d_advantages_hand_computed():
    adv = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
    logp = torch.tensor([[-0.5, -1.5], [-1.0, -3.0]])
    ent = torch.tensor([[1.0, 1.0], [2.0, 2.0]])
    mask = torch.ones(2, 2)
    # mean logp -1.5, mean A 0: cov = (1*1 + 0*1 + 0.5*-1 + -1.5*-1) / 4 = 0.5
    assert entropy_drift(logp, adv, mask) == pytest.approx(0.5)
    out = repo_d_advantages(adv, logp, ent, mask, zeta=2.0)  # β = 1; A' = A - (logp + H)
    torch.testing.assert_close(out, torch.tensor([[0.5, 1.5], [-2.0, 0.0]]))


# --- ADAPO ------------------------------------------------------------------------------------------


def test_adapo_raises_eps_high_when_entropy_low_and_lowers_when_high():
    ctrl = build_controller(TrainConfig(controller="adapo", eps_high_max=1.0, eps_high_min=0.1))
    assert ctrl.value == 0.28
    up = drive(ctrl, [0.5] * 20, target=1.0)
    assert all(b >= a for a, b in zip(up, up[1:], strict=False)) and up[-1] == 1.0 and ctrl.at_bound
    down = drive(ctrl, [1.5] * 40, target=1.0)
    assert all(b <= a for a, b in zip(down, down[1:], strict=False)) and down[-1] == 0.1
    assert ctrl.clip_range(0.2, 0.28) == (0.2, 0.1)
    assert adapo_step(0.28, 0.5, 1.0, 0.5, 0.1, 2.0) == pytest.approx(0.28 * math.exp(0.25))
    assert adapo_step(0.28, 1.0, 1.0, 0.5, 0.1, 2.0) == pytest.approx(0.28)  # on target: held


# --- entropy bonus ------------------------------------------------------------------------------------


def test_bonus_coefficient_is_a_projected_multiplier_within_bounds():
    ctrl = build_controller(TrainConfig(controller="entropy_bonus", bonus_coef_max=0.5, bonus_coef_min=0))
    up = drive(ctrl, [0.2] * 100, target=1.0)
    assert all(b >= a for a, b in zip(up, up[1:], strict=False)) and up[-1] == pytest.approx(0.5)
    assert ctrl.at_bound
    down = drive(ctrl, [3.0] * 200, target=1.0)  # above target: the bonus winds down to nothing, never below
    assert all(b <= a for a, b in zip(down, down[1:], strict=False)) and down[-1] == 0.0 and min(down) == 0.0
    assert not ctrl.at_bound
    # e = 0.5: the integral moves by gain * α_max * e, the output KP * α_max * e beyond it
    integral, coef = bonus_step(0.01, 0.5, 1.0, 0.2, BONUS_KP, 1.0)
    assert integral == pytest.approx(0.01 + 0.1)
    assert coef == pytest.approx(0.11 + BONUS_KP * 0.5)
    assert bonus_step(0.01, 1.0, 1.0, 0.2, BONUS_KP, 1.0) == pytest.approx((0.01, 0.01))  # on target: held
    assert ctrl.metrics(0.2, 0.2)[schema.CONTROLLER_COEF] == ctrl.value


def test_bonus_turns_into_a_bounded_penalty_above_target_by_default():
    ctrl = build_controller(TrainConfig(controller="entropy_bonus", bonus_coef_max=0.5))
    down = drive(ctrl, [3.0] * 200, target=1.0)
    assert down[-1] == pytest.approx(-0.05) and min(down) == pytest.approx(-0.05)
    assert not ctrl.at_bound  # at_bound flags the bonus pushing up as hard as it may, not the penalty
    up = drive(ctrl, [0.2] * 200, target=1.0)
    assert up[-1] == pytest.approx(0.5) and ctrl.at_bound


def test_entropy_bonus_loss_and_gradient_raise_entropy():
    torch.manual_seed(0)
    hidden = torch.randn(5, 4, dtype=torch.float32, requires_grad=True)
    head = torch.nn.Linear(4, 7, bias=False)
    targets = torch.randint(0, 7, (5,))
    _, ent = token_logprobs(
        hidden, head, targets, temperature=1.0, precision="fp32", chunk_size=2, entropy_grad=True
    )
    ref = torch.distributions.Categorical(logits=(hidden.double() @ head.weight.double().T)).entropy()
    torch.testing.assert_close(ent.double(), ref.detach(), rtol=1e-5, atol=1e-6)
    loss = entropy_bonus_loss(ent[None], torch.ones(1, 5), 0.1, "token-mean")
    torch.testing.assert_close(loss, -0.1 * ent.mean())
    loss.backward()
    (ref_grad,) = torch.autograd.grad(-0.1 * ref.mean(), hidden)
    torch.testing.assert_close(hidden.grad.double(), ref_grad.double(), rtol=1e-4, atol=1e-6)
    # Default stays detached.
    _, ent2 = token_logprobs(hidden, head, targets, temperature=1.0, precision="fp32", chunk_size=2)
    assert not ent2.requires_grad


def test_capped_bonus_pays_only_tokens_below_the_cap_and_keeps_the_normaliser():
    ent = torch.tensor([[0.2, 1.5, 0.7, 3.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])  # the last token is padding
    loss = entropy_bonus_loss(ent, mask, 0.1, "token-mean", cap=1.0)
    torch.testing.assert_close(loss, torch.tensor(-0.1 * (0.2 + 0.7) / 3))  # 3 real tokens, not 2
    loss.backward()
    torch.testing.assert_close(ent.grad, torch.tensor([[-0.1 / 3, 0.0, -0.1 / 3, 0.0]]))
    uncapped = entropy_bonus_loss(ent, mask, 0.1, "token-mean")
    torch.testing.assert_close(uncapped, torch.tensor(-0.1 * (0.2 + 1.5 + 0.7) / 3))


# --- Clip-Cov / KL-Cov ---------------------------------------------------------------------------------


def test_token_cov_and_masks_hand_computed():
    logp = torch.tensor([[-1.0, -3.0, -2.0, -2.0]])
    adv = torch.tensor([[2.0, -2.0, 0.0, 0.0]])
    mask = torch.ones(1, 4)
    cov = token_cov(logp, adv, mask)  # mean logp -2, mean A 0: (1*2, -1*-2, 0, 0)
    torch.testing.assert_close(cov, torch.tensor([[2.0, 2.0, 0.0, 0.0]]))
    g = torch.Generator().manual_seed(0)
    pick = clip_cov_mask(cov, mask, frac=0.25, lb=1.0, ub=5.0, generator=g)  # int(0.25*4) = 1 of the 2
    assert pick.sum() == 1 and pick[0, :2].any() and not pick[0, 2:].any()
    assert (
        clip_cov_mask(cov, mask, frac=2e-4, lb=1.0, ub=5.0, generator=g).sum() == 0
    )  # the paper's r, toy batch
    top = kl_cov_mask(torch.tensor([[0.5, 3.0, -1.0, 2.0]]), mask, frac=0.5)
    assert top.tolist() == [[False, True, False, True]]
    new = torch.tensor([[-1.0, -2.5, -2.0, -2.2]], requires_grad=True)
    loss = kl_cov_loss(new, logp, top, mask, coef=1.0, agg_mode="token-mean")
    assert float(loss.detach()) == pytest.approx((0.5 + 0.2) / 4)


def test_clip_cov_detaches_picked_tokens():
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    adv, mask = torch.tensor([[1.0, 1.0]]), torch.ones(1, 2)
    loss, _ = clipped_surrogate(
        logp,
        logp.detach(),
        adv,
        mask,
        eps_low=0.2,
        eps_high=0.2,
        agg_mode="token-mean",
        detach_mask=torch.tensor([[True, False]]),
    )
    loss.backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, -0.5]]))


# --- CE-GPPO ---------------------------------------------------------------------------------------------


def test_gradient_preserving_clip_hand_computed():
    old = torch.zeros(1, 3)
    # ratios e^0.5 (A>0, above 1.2: high clip), e^-0.5 (A<0, below 0.8: low clip), 1 (unclipped)
    adv, mask = torch.tensor([[1.0, -1.0, 1.0]]), torch.ones(1, 3)

    def grads(**kw):
        logp = torch.tensor([[0.5, -0.5, 0.0]], requires_grad=True)
        loss, m = clipped_surrogate(
            logp, old, adv, mask, eps_low=0.2, eps_high=0.2, agg_mode="token-mean", **kw
        )
        loss.backward()
        return logp.grad, float(loss.detach()), m

    g_ppo, loss_ppo, m = grads()
    torch.testing.assert_close(g_ppo, torch.tensor([[0.0, 0.0, -1 / 3]]))
    assert m[schema.CLIP_FRAC_HIGH] == pytest.approx(1 / 3) and m[schema.CLIP_FRAC_LOW] == pytest.approx(
        1 / 3
    )
    g, loss, _ = grads(gp_beta_low=0.5, gp_beta_high=1.0)
    # high: -β2(1+ε)A/3 = -1.2/3; low: -β1(1-ε)A/3 = +0.4/3
    torch.testing.assert_close(g, torch.tensor([[-1.2 / 3, 0.4 / 3, -1 / 3]]))
    # Value: β times the clipped value per token: (-1.2 + 0.5*0.8 - 1) / 3
    assert loss == pytest.approx((-1.2 + 0.4 - 1.0) / 3)
    g1, loss1, _ = grads(gp_beta_low=1.0, gp_beta_high=1.0)
    assert loss1 == pytest.approx(loss_ppo)  # β = 1 keeps PPO's loss value, only the gradient differs


def test_ce_gppo_controller_passes_betas():
    ctrl = build_controller(TrainConfig(controller="ce_gppo", gppo_beta_low=0.25, gppo_beta_high=0.75))
    kw = ctrl.objective_kwargs(None, None, None, None, None)
    assert kw == {"gp_beta_low": 0.25, "gp_beta_high": 0.75}


# --- state -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CONTROLLERS))
def test_state_dict_round_trip(name):
    cfg = TrainConfig(controller=name)
    a = build_controller(cfg)
    drive(a, [0.3, 0.2, 0.1, 0.5], target=1.0)
    b = build_controller(cfg)
    b.load_state_dict(a.state_dict())
    assert b.value == a.value and b.at_bound == a.at_bound
    assert drive(a, [2.0, 0.1], 1.0) == drive(b, [2.0, 0.1], 1.0)
