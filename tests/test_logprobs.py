"""Chunked log-probs and entropy against a naive float64 reference; forward_hidden under left padding."""

import math

import pytest
import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel, Qwen2Config, Qwen2ForCausalLM

from trainer.logprobs import _logits, forward_hidden, head_logprobs, logprobs_from_logits, token_logprobs


def make_head(d: int, v: int, bias: bool, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    head = nn.Linear(d, v, bias=bias)
    nn.init.normal_(head.weight, std=1.0 / math.sqrt(d) * 3)  # logits of order a few nats
    return head


def reference(hidden, head, targets, temperature):
    """float64 log-softmax over the full vocabulary: logp (N,), entropy (N,)."""
    b = None if head.bias is None else head.bias.double()
    logits = nn.functional.linear(hidden.double(), head.weight.double(), b) / temperature  # (N, V)
    logsm = torch.log_softmax(logits, -1)
    return logsm.gather(1, targets[:, None]).squeeze(1), -(logsm.exp() * logsm).sum(-1)


SHAPES = [(1, 8, 11, False), (37, 16, 50, True), (64, 32, 1000, False)]  # (N, D, V, bias)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("chunk", [1, 7, 64, 10_000])
@pytest.mark.parametrize("temperature", [0.6, 1.0, 1.5])
@pytest.mark.parametrize("precision", ["fp32", "bf16_fixed"])
def test_chunked_matches_float64_reference(shape, chunk, temperature, precision):
    n, d, v, bias = shape
    head = make_head(d, v, bias)
    hidden, targets = torch.randn(n, d), torch.randint(0, v, (n,))
    with torch.no_grad():
        logp, ent = token_logprobs(
            hidden, head, targets, temperature=temperature, precision=precision, chunk_size=chunk
        )
    ref_logp, ref_ent = reference(hidden, head, targets, temperature)
    assert logp.dtype == ent.dtype == torch.float32 and logp.shape == ent.shape == (n,)
    torch.testing.assert_close(logp.double(), ref_logp, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(ent.double(), ref_ent, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("precision", ["fp32", "bf16_fixed", "bf16"])
@pytest.mark.parametrize("chunk", [16, 64])  # several chunks (checkpointed), one chunk (kept)
@pytest.mark.parametrize("temperature", [0.8, 1.0])
def test_grad_and_nograd_paths_agree_bitwise(precision, chunk, temperature):
    """Old log-probs (no grad) and new ones (grad) of one policy give a ratio of exactly 1."""
    head = make_head(16, 300, bias=False)
    hidden, targets = torch.randn(40, 16), torch.randint(0, 300, (40,))
    kw = dict(temperature=temperature, precision=precision, chunk_size=chunk)
    with torch.no_grad():
        old, old_ent = token_logprobs(hidden, head, targets, **kw)
    new, new_ent = token_logprobs(hidden.requires_grad_(), head, targets, **kw)
    assert new.requires_grad and not new_ent.requires_grad
    assert torch.equal(old, new.detach()) and torch.equal(old_ent, new_ent)


@pytest.mark.parametrize("chunk", [1, 5, 64])
@pytest.mark.parametrize("bias", [False, True])
def test_gradient_matches_naive(chunk, bias):
    head = make_head(12, 70, bias=bias)
    hidden, targets = torch.randn(23, 12, requires_grad=True), torch.randint(0, 70, (23,))
    weights = torch.randn(23)
    logp, _ = token_logprobs(hidden, head, targets, temperature=0.7, precision="fp32", chunk_size=chunk)
    (logp * weights).sum().backward()

    h64 = hidden.detach().double().requires_grad_()
    head64 = nn.Linear(12, 70, bias=bias).double()
    head64.load_state_dict({k: t.double() for k, t in head.state_dict().items()})
    ref, _ = reference(h64, head64, targets, 0.7)
    (ref * weights.double()).sum().backward()
    torch.testing.assert_close(hidden.grad.double(), h64.grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(head.weight.grad.double(), head64.weight.grad, atol=1e-5, rtol=1e-4)
    if bias:
        torch.testing.assert_close(head.bias.grad.double(), head64.bias.grad, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("chunk", [10, 40])
def test_only_several_chunks_are_recomputed_in_backward(monkeypatch, chunk):
    """A batch that fits one chunk holds O(chunk x V) either way, so backward reuses its logits: the head
    matmul runs once, not twice; several chunks are each recomputed."""
    from trainer import logprobs

    calls = []
    monkeypatch.setattr(logprobs, "_logits", lambda *a: calls.append(1) or _logits(*a))
    head = make_head(8, 50, bias=False)
    hidden, targets = torch.randn(40, 8, requires_grad=True), torch.randint(0, 50, (40,))
    logp, _ = token_logprobs(hidden, head, targets, temperature=1.0, precision="fp32", chunk_size=chunk)
    logp.sum().backward()
    chunks = -(-40 // chunk)
    assert len(calls) == (2 * chunks if chunks > 1 else 1)


def test_grad_path_keeps_no_full_logits():
    """With checkpointing, autograd stores no (c, V) buffer: backward recomputes each chunk."""
    n, d, v = 128, 8, 4000
    head = make_head(d, v, bias=False)
    hidden, targets = torch.randn(n, d, requires_grad=True), torch.randint(0, v, (n,))
    saved: list[int] = []

    def pack(t):
        saved.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logp, _ = token_logprobs(hidden, head, targets, temperature=1.0, precision="fp32", chunk_size=32)
    logp.sum().backward()
    one_chunk = 32 * v * 4
    assert sum(s for s in saved if s >= one_chunk) == 0, saved
    assert hidden.grad is not None and torch.isfinite(hidden.grad).all()


def test_bf16_fixed_logp_nonpositive_and_bf16_is_noisy():
    head = make_head(32, 500, bias=False)
    hidden = torch.randn(128, 32) * 4  # peaked distributions: log p of the argmax token near 0
    targets = nn.functional.linear(hidden, head.weight).argmax(-1)
    kw = dict(temperature=1.0, chunk_size=50)
    with torch.no_grad():
        fixed, _ = token_logprobs(hidden, head, targets, precision="bf16_fixed", **kw)
        naive, naive_ent = token_logprobs(hidden, head, targets, precision="bf16", **kw)
    ref, ref_ent = reference(hidden, head, targets, 1.0)
    assert (fixed <= 0).all()
    assert naive.dtype == naive_ent.dtype == torch.float32
    err = (naive.double() - ref).abs()
    assert err.max() > 1e-4 and err.max() < 0.5  # bf16 rounding noise, not garbage
    torch.testing.assert_close(naive_ent.double(), ref_ent, atol=0.1, rtol=0.05)


@pytest.mark.parametrize("precision", ["fp32", "bf16_fixed", "bf16"])
def test_logprobs_from_logits_and_head_logprobs(precision):
    head = make_head(16, 90, bias=True)
    hidden, targets = torch.randn(6, 16), torch.randint(0, 90, (6,))
    ref, _ = reference(hidden, head, targets, 1.3)
    tol = dict(atol=0.1, rtol=0.05) if precision == "bf16" else dict(atol=2e-5, rtol=1e-5)
    with torch.no_grad():
        full = head_logprobs(hidden, head, temperature=1.3, precision=precision)  # (B, V)
        logits = head(hidden).to(torch.bfloat16 if precision == "bf16" else torch.float32)
        lp = logprobs_from_logits(logits[None], targets[None], temperature=1.3, precision=precision)[0]
    assert full.shape == (6, 90) and full.dtype == lp.dtype == torch.float32
    torch.testing.assert_close(full.gather(1, targets[:, None]).squeeze(1).double(), ref, **tol)
    torch.testing.assert_close(lp.double(), ref, **tol)


def tiny_qwen2() -> nn.Module:
    cfg = Qwen2Config(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
    )
    return Qwen2ForCausalLM(cfg)


def tiny_gpt2() -> nn.Module:
    return GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=32, n_layer=2, n_head=4, n_positions=64))


@pytest.mark.parametrize("build", [tiny_qwen2, tiny_gpt2])
def test_forward_hidden_left_padding(build):
    torch.manual_seed(0)
    model = build().eval()
    seqs = [[5, 9, 3, 7, 1], [2, 4, 6, 8, 10, 12, 14, 16], [11, 13]]
    width = max(map(len, seqs))
    ids = torch.zeros(len(seqs), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(seqs):
        ids[i, width - len(s) :], mask[i, width - len(s) :] = torch.tensor(s), 1
    head = model.get_output_embeddings()
    kw = dict(temperature=1.0, precision="fp32", chunk_size=2)
    with torch.no_grad():
        hidden = forward_hidden(model, ids, mask)  # (B, T, D)
        batch_logp, _ = token_logprobs(hidden[:, -2], head, ids[:, -1], **kw)
        for i, s in enumerate(seqs):
            single = torch.tensor([s])
            h = forward_hidden(model, single, torch.ones_like(single))
            logp, _ = token_logprobs(h[:, -2], head, single[:, -1], **kw)
            # The final norm is applied: same as the model's own logits on the unpadded sequence.
            full = torch.log_softmax(model(single).logits[0, -2].float(), -1)[s[-1]]
            assert abs(float(batch_logp[i]) - float(logp)) < 1e-5
            assert abs(float(full) - float(logp)) < 1e-5
