"""Measured vs predicted batch ΔH (trainer/entropy_delta.py): the prediction against the real change for a
small step, the quadrant parts against independent per-quadrant gradients, and the parts' sum."""

import copy

import numpy as np
import pytest
import torch

from analysis import schema
from trainer.aggregation import agg_loss
from trainer.config import load_config
from trainer.diagnostics import quadrants
from trainer.entropy_delta import PART_KEYS, DeltaTracker, EntropyFn
from trainer.models import load_policy
from trainer.policy import response_logprobs
from trainer.rollout import sample
from trainer.tasks import make_task

BONUS = 0.1  # weight of the test loss's entropy term: reaches zero-advantage tokens, as a bonus does


@pytest.fixture(scope="module")
def batch():
    """A random tiny policy, one rollout of it and ±1 advantages per completion (some zero)."""
    torch.manual_seed(0)
    model, tokenizer = load_policy("tiny-qwen2", seed=0)
    model.eval()
    with torch.no_grad():  # away from the uniform policy, where the entropy gradient vanishes
        model.get_output_embeddings().weight.mul_(30.0)
    cfg = load_config(None, ["max_new_tokens=6", "entropy_chunk=7"])
    prompts = make_task("digit_sum", seed=0).sample(np.random.default_rng(0), 6)
    gen = torch.Generator().manual_seed(0)
    rollout = sample(
        model,
        tokenizer,
        prompts,
        group_size=4,
        max_new_tokens=6,
        temperature=1.0,
        precision="fp32",
        generator=gen,
    )
    adv = torch.tensor([1.0, -1.0, 0.0, -0.5] * 6)  # (B,)
    return model, rollout, adv, cfg


def outputs(model, rollout, rows, cfg):
    """Log-probs and entropy (b, R) with gradient."""
    return response_logprobs(
        model,
        rollout.input_ids[rows],
        rollout.attention_mask[rows],
        rollout.response_mask.shape[1],
        temperature=1.0,
        precision="fp32",
        chunk_size=cfg.entropy_chunk,
        with_entropy=True,
        entropy_grad=True,
    )


def loss_of(logp, entropy, adv, mask, keep=None):
    """Policy-gradient surrogate plus an entropy term, over the tokens `keep` (B, R) of the full batch."""
    keep = mask.bool() if keep is None else keep
    per_token = (-adv[:, None] * logp - BONUS * entropy) * keep
    return agg_loss(per_token, mask, "seq-mean-token-mean")


def run_iteration(model, rollout, adv, cfg, optimizer, tracker, step, splits, grad_clip):
    """One measured iteration driven by hand: begin, then split / backward / clip / step / after_step."""
    mask = rollout.response_mask
    with torch.no_grad():
        logp0, ent0 = outputs(model, rollout, torch.arange(len(adv)), cfg)
    quadrant = quadrants(adv[:, None], logp0, ent0, mask)
    entropy_of = EntropyFn(model, rollout, [torch.arange(len(adv))], cfg)
    tracker.begin(step, entropy_of, quadrant)
    for rows in splits:
        logp, ent = outputs(model, rollout, rows, cfg)
        loss = loss_of(logp, ent, adv[rows], mask[rows])
        split = tracker.split_grads(loss, [logp, ent], rows)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip))
        optimizer.step()
        tracker.after_step(split, min(1.0, grad_clip / (norm + 1e-6)))
    return tracker.end(entropy_of), quadrant


def entropy_gradient(model, rollout, cfg):
    """∇θ of the token-mean entropy over the batch, flat, at the model's current parameters."""
    mask = rollout.response_mask
    _, ent = outputs(model, rollout, torch.arange(mask.shape[0]), cfg)
    return flat(torch.autograd.grad((ent * mask).sum() / mask.sum(), list(model.parameters())))


def flat(tensors):
    return torch.cat([t.reshape(-1).double() for t in tensors])


def test_sgd_prediction_matches_the_real_change_and_each_part_its_own_gradient(batch):
    model, rollout, adv, cfg = batch
    model = type(model)(model.config)
    model.load_state_dict(batch[0].state_dict())
    lr, clip = 1e-3, 0.5
    params = list(model.parameters())
    rows = torch.arange(len(adv))
    # Independent reference: ∇H̄ and each quadrant's gradient g_q at the starting parameters.
    mask = rollout.response_mask
    logp, ent = outputs(model, rollout, rows, cfg)
    grad_h0 = entropy_gradient(model, rollout, cfg)
    quadrant = quadrants(adv[:, None], logp.detach(), ent.detach(), mask)
    full = flat(torch.autograd.grad(loss_of(logp, ent, adv, mask), params, retain_graph=True))
    coef = min(1.0, clip / (float(full.norm()) + 1e-6))
    assert coef < 1.0  # the clip binds, so a part that ignored it would be off by 1 / coef
    g_q = [
        flat(torch.autograd.grad(loss_of(logp, ent, adv, mask, quadrant == q), params, retain_graph=True))
        for q in (1, 2, 3, 4)
    ]

    opt = torch.optim.SGD(model.parameters(), lr=lr)
    m, _ = run_iteration(model, rollout, adv, cfg, opt, DeltaTracker(opt), 1, [rows], clip)
    # SGD moved θ by -lr·c·g_q for each quadrant; the parts weigh that with ∇H̄ averaged along the step
    # (Simpson: start, middle, end).
    mid = copy.deepcopy(model)
    mid.load_state_dict({k: (v + batch[0].state_dict()[k]) / 2 for k, v in model.state_dict().items()})
    grad_mean = (
        grad_h0 + 4 * entropy_gradient(mid, rollout, cfg) + entropy_gradient(model, rollout, cfg)
    ) / 6
    parts = [m[k] for k in PART_KEYS]
    assert parts == pytest.approx([-lr * coef * float(grad_mean @ g) for g in g_q], rel=1e-4, abs=1e-9)
    assert min(abs(p) for p in parts) > 0
    # The entropy term reaches zero-advantage tokens: their share is "other", not E1..E4.
    assert abs(m[schema.ENTROPY_DELTA_PRED_OTHER]) > 1e-3 * abs(m[schema.ENTROPY_DELTA_PRED])
    assert sum(parts) + m[schema.ENTROPY_DELTA_PRED_OTHER] == pytest.approx(
        m[schema.ENTROPY_DELTA_PRED], rel=1e-4
    )
    # A small step's real change on the same states: g(θ0) · Δθ to first order, Simpson's rule to fourth.
    measured, first = m[schema.ENTROPY_DELTA_BATCH], m[schema.ENTROPY_DELTA_PRED_FIRST]
    assert first == pytest.approx(measured, rel=0.02)
    assert abs(m[schema.ENTROPY_DELTA_PRED] - measured) < 0.1 * abs(first - measured)


def test_adam_parts_add_up_over_several_steps_and_consecutive_iterations(batch):
    model, rollout, _, cfg = batch
    model = type(model)(model.config)
    model.load_state_dict(batch[0].state_dict())
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5] * 6)  # no zero advantage: E1..E4 hold every token
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    tracker = DeltaTracker(opt)
    gen = torch.Generator().manual_seed(1)
    results = []
    for step in (1, 2, 4):
        splits = list(torch.randperm(len(adv), generator=gen).chunk(2)) * 2  # 2 epochs x 2 minibatches
        m, _ = run_iteration(model, rollout, adv, cfg, opt, tracker, step, splits, grad_clip=0.3)
        results.append(m)
    for m in results[:2]:
        # Momentum attributed since the first optimizer step: the parts hold the whole update.
        total = m[schema.ENTROPY_DELTA_PRED]
        assert sum(m[k] for k in PART_KEYS) == pytest.approx(total, rel=1e-4)
        assert abs(m[schema.ENTROPY_DELTA_PRED_OTHER]) < 1e-4 * abs(total)
    # Step 3 went unmeasured: its momentum, carried into step 4, is nobody's part.
    gap = results[2]
    assert abs(gap[schema.ENTROPY_DELTA_PRED_OTHER]) > 1e-3 * abs(gap[schema.ENTROPY_DELTA_PRED])


def test_unsupported_optimizer_gives_the_total_without_parts(batch):
    model, rollout, adv, cfg = batch
    model = type(model)(model.config)
    model.load_state_dict(batch[0].state_dict())
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-4)
    m, _ = run_iteration(model, rollout, adv, cfg, opt, DeltaTracker(opt), 1, [torch.arange(len(adv))], 1.0)
    totals = (schema.ENTROPY_DELTA_BATCH, schema.ENTROPY_DELTA_PRED, schema.ENTROPY_DELTA_PRED_FIRST)
    assert set(m) == {*totals, schema.TIME_DELTA}
