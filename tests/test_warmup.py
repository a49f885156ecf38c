import logging
import time

import numpy as np
import pytest
import torch

from trainer.models import load_policy
from trainer.tasks import make_task
from trainer.warmup import (
    WEIGHTS_FILE,
    default_cache_dir,
    demo_batch,
    encode_prompt,
    ordinary_ids,
    warm_start,
)


@torch.no_grad()
def evaluate(model, tok, task, *, greedy: bool, n: int = 256, max_new_tokens: int = 4) -> tuple[float, float]:
    """(accuracy, mean full-vocab entropy at T=1 over response positions up to eos) of left-padded decoding."""
    model.eval()
    prompts = task.sample(np.random.default_rng(123), n)
    gen = torch.Generator().manual_seed(123)
    seqs = [encode_prompt(tok, p.text) for p in prompts]
    width = max(map(len, seqs))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(s)) + s for s in seqs])  # (n, P)
    mask = (ids != tok.pad_token_id).long()
    alive, out, entropies = torch.ones(n, dtype=torch.bool), [], []
    for _ in range(max_new_tokens):
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        logp = (
            model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1].log_softmax(-1)
        )  # (n, V)
        entropies.append(-(logp.exp() * logp).sum(-1)[alive])
        tok_ids = logp.argmax(-1) if greedy else torch.multinomial(logp.exp(), 1, generator=gen).squeeze(1)
        out.append(torch.where(alive, tok_ids, tok.pad_token_id))
        alive &= tok_ids != tok.eos_token_id
        ids, mask = (
            torch.cat([ids, out[-1][:, None]], 1),
            torch.cat([mask, torch.ones(n, 1, dtype=torch.long)], 1),
        )
    texts = tok.batch_decode(torch.stack(out, 1).tolist(), skip_special_tokens=True)
    accuracy = float(np.mean([task.reward(p, r)[1] for p, r in zip(prompts, texts, strict=True)]))
    return accuracy, torch.cat(entropies).mean().item()


def test_encode_prompt_is_bos_plus_text():
    _, tok = load_policy("tiny-qwen2", seed=0)
    assert encode_prompt(tok, "3+5=") == [tok.bos_token_id, *tok.encode("3+5=", add_special_tokens=False)]


def test_demo_batch_trains_only_on_response_and_eos():
    _, tok = load_policy("tiny-qwen2", seed=0)
    ids, labels, mask = demo_batch(tok, make_task("digit_sum"), np.random.default_rng(0), 8, 1.0)
    for row_ids, row_labels, row_mask in zip(ids, labels, mask, strict=True):
        seq = row_ids[row_mask.bool()].tolist()
        text = tok.decode(seq, skip_special_tokens=True)
        assert seq[0] == tok.bos_token_id and seq[-1] == tok.eos_token_id
        assert row_mask.tolist() == sorted(row_mask.tolist(), reverse=True)  # right-padded
        target = row_labels[row_labels != -100].tolist()
        assert tok.decode(target, skip_special_tokens=True) == text.split("=")[1]  # the answer
        assert target[-1] == tok.eos_token_id


def test_derailed_demos_end_with_an_unlabelled_slip_then_eos():
    _, tok = load_policy("tiny-qwen2", seed=0)
    task = make_task("digit_sum")
    ids, labels, mask = demo_batch(tok, task, np.random.default_rng(0), 64, 1.0, derail_frac=1.0)
    cuts = set()
    for row_ids, row_labels, row_mask in zip(ids, labels, mask, strict=True):
        seq = row_ids[row_mask.bool()].tolist()
        answer = tok.decode(seq, skip_special_tokens=True).split("=")[1][:-1]  # without the slip
        slip, n = seq[-2], int(row_mask.sum())
        assert seq[-1] == tok.eos_token_id and slip not in tok.all_special_ids
        assert (
            row_labels[n - 2] == -100 and row_labels[n - 1] == tok.eos_token_id
        )  # slip unlabelled, eos taught
        taught = row_labels[: n - 2][row_labels[: n - 2] != -100].tolist()
        assert tok.decode(taught) == answer
        cuts.add(len(taught))
    assert cuts >= {0, 1}  # cut anywhere in the response, from before its first token on


@torch.no_grad()
def after_slip(model, tok, task) -> tuple[float, float]:
    """(mean P(eos), mean entropy) of the next token after a prompt plus one random ordinary token."""
    rng = np.random.default_rng(7)
    ordinary = ordinary_ids(tok)
    prompts = [p for p in task.sample(rng, 128) if len(p.text) == 4]  # one width: no padding needed
    ids = torch.tensor([[*encode_prompt(tok, p.text), int(rng.choice(ordinary))] for p in prompts])
    logp = model.eval()(input_ids=ids).logits[:, -1].log_softmax(-1)
    return logp[:, tok.eos_token_id].exp().mean().item(), -(logp.exp() * logp).sum(-1).mean().item()


def test_derailed_warmup_teaches_stopping_after_a_slip(tmp_path):
    task = make_task("digit_sum")
    seen = {}
    for frac in (0.0, 0.1):
        model, tok = load_policy("tiny-qwen2", seed=0)
        warm_start(
            model, tok, task, steps=300, correct_frac=0.5, seed=0, cache_dir=tmp_path, derail_frac=frac
        )
        seen[frac] = after_slip(model, tok, task)
    # Measured (seed 0): P(eos) 0.57 -> 0.98, entropy after the slip 0.70 -> 0.06 nats.
    assert seen[0.1][0] > 0.9 and seen[0.1][0] > seen[0.0][0]
    assert seen[0.1][1] < seen[0.0][1] / 3


def test_warmup_gives_partial_skill_and_moderate_entropy(tmp_path):
    model, tok = load_policy("tiny-qwen2", seed=0)
    task = make_task("digit_sum")
    acc0, h0 = evaluate(model, tok, task, greedy=False)
    greedy0, _ = evaluate(model, tok, task, greedy=True)
    warm_start(model, tok, task, steps=300, correct_frac=0.5, seed=0, cache_dir=tmp_path)
    acc1, h1 = evaluate(model, tok, task, greedy=False)
    greedy1, _ = evaluate(model, tok, task, greedy=True)
    # Measured (seed 0; seeds 1-3 alike): init acc 0.0 and H ~4.60 nats (~log 101); after warm-up
    # greedy ~0.55-0.73, sampled ~0.20-0.25, H ~0.8 nats.
    assert acc0 <= 0.05 and greedy0 <= 0.05 and h0 > 4.0
    assert greedy1 >= 0.35 and acc1 >= 0.15
    assert acc1 < 0.6  # noisy demonstrations: sampling is far from always right
    assert 0.3 < h1 < min(1.5, h0 / 2)


def test_second_call_hits_the_cache(tmp_path, caplog):
    task = make_task("bandit")
    model, tok = load_policy("tiny-gpt2", seed=2)  # GPT-2 ties its head: the cache must handle shared weights
    caplog.set_level(logging.INFO, logger="trainer.warmup")
    warm_start(model, tok, task, steps=40, correct_frac=0.5, seed=2, cache_dir=tmp_path)
    assert "trained 40 steps" in caplog.text
    entries = list(tmp_path.iterdir())
    assert len(entries) == 1 and (entries[0] / WEIGHTS_FILE).is_file()  # no temp dirs left behind

    caplog.clear()
    fresh, _ = load_policy("tiny-gpt2", seed=2)
    start = time.perf_counter()
    warm_start(fresh, tok, task, steps=40, correct_frac=0.5, seed=2, cache_dir=tmp_path)
    assert time.perf_counter() - start < 1.0
    assert "cache hit" in caplog.text and "trained" not in caplog.text
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), fresh.state_dict().values(), strict=True)
    )
    assert fresh.lm_head.weight.data_ptr() == fresh.transformer.wte.weight.data_ptr()  # still tied

    other, _ = load_policy("tiny-gpt2", seed=2)
    warm_start(other, tok, task, steps=40, correct_frac=0.25, seed=2, cache_dir=tmp_path)
    assert len(list(tmp_path.iterdir())) == 2  # another setting, another cache entry


@pytest.mark.parametrize(("env", "expected"), [("/tmp/es-cache", "/tmp/es-cache"), (None, None)])
def test_default_cache_dir(monkeypatch, tmp_path, env, expected):
    monkeypatch.setenv("HOME", str(tmp_path))
    if env is None:
        monkeypatch.delenv("ENTROPYSCOPE_CACHE", raising=False)
        assert default_cache_dir() == tmp_path / ".cache" / "entropyscope"
    else:
        monkeypatch.setenv("ENTROPYSCOPE_CACHE", env)
        assert str(default_cache_dir()) == expected
