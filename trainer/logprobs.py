"""Per-token log-probs and full-vocabulary entropy without materialising the (N, V) logits.

The head is applied in chunks of rows: memory is O(chunk x V) instead of O(N x V), which for a 152k
vocabulary is the difference between ~300 MiB and several GiB. With gradients and more than one chunk,
each chunk runs under activation checkpointing, so backward recomputes a chunk's logits instead of storing
all of them; a batch that fits one chunk keeps its buffers and is not recomputed.

Precision modes (DESIGN.md, "Precision"): `fp32` and `bf16_fixed` compute logits and log-softmax in fp32
(`bf16_fixed` also clamps log p <= 0); `bf16` is the naive path, logits and log-softmax in bf16.
Entropy is always computed in fp32 from the mode's log-softmax output; it carries gradient only when asked
(`entropy_grad=True`, for an entropy bonus), still chunk by chunk under activation checkpointing.
"""

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

PRECISIONS = ("fp32", "bf16", "bf16_fixed")


def _head_dtype(precision: str) -> torch.dtype:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    return torch.bfloat16 if precision == "bf16" else torch.float32


def forward_hidden(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Final hidden states (B, T, D), after the final norm, without computing the lm_head logits."""
    # Positions count real tokens only, as HF generate does, so left padding does not shift them.
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # (B, T)
    out = model.base_model(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
    )
    return out.last_hidden_state  # (B, T, D)


def _logits(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype
) -> torch.Tensor:
    """Head logits (n, V) computed in `dtype` (casts are no-ops when the tensors already have it)."""
    return F.linear(hidden.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype))


def _tempered(logits: torch.Tensor, temperature: float, *, inplace: bool) -> torch.Tensor:
    """logits / temperature; at temperature 1 the logits themselves (x / 1 == x exactly, so results are
    bitwise those of dividing, without a pass over the (n, V) logits)."""
    if temperature == 1.0:
        return logits
    return logits.div_(temperature) if inplace else logits / temperature


def _log_softmax(logits: torch.Tensor, temperature: float, precision: str) -> torch.Tensor:
    """Log-softmax of logits / temperature over the last dim, in the mode's dtype (fp32 or naive bf16)."""
    logits = _tempered(logits.to(_head_dtype(precision)), temperature, inplace=False)
    logsm = F.log_softmax(logits, dim=-1)
    # In exact arithmetic log p <= 0; the clamp removes rounding that would bias the ratio upward.
    return logsm.clamp(max=0.0) if precision == "bf16_fixed" else logsm


def logprobs_from_logits(
    logits: torch.Tensor, targets: torch.Tensor, *, temperature: float, precision: str
) -> torch.Tensor:
    """Log-probs (...) float32 of `targets` (...) under logits (..., V), e.g. HF generate's step logits."""
    logsm = _log_softmax(logits, temperature, precision)  # (..., V)
    return logsm.gather(-1, targets.unsqueeze(-1)).squeeze(-1).float()


def head_logprobs(
    hidden: torch.Tensor, lm_head: nn.Module, *, temperature: float, precision: str
) -> torch.Tensor:
    """Full-vocabulary log-probs (B, V) float32 of the tempered policy at hidden states (B, D): rollout path."""
    with torch.autocast(device_type=hidden.device.type, enabled=False):
        logits = _logits(hidden, lm_head.weight, getattr(lm_head, "bias", None), _head_dtype(precision))
        return _log_softmax(logits, temperature, precision).float()  # (B, V)


def _fp32_chunk(
    z: torch.Tensor,
    targets: torch.Tensor,
    *,
    clamp: bool,
    with_entropy: bool,
    inplace: bool,
    entropy_grad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs and entropy (c,) from tempered fp32 logits z (c, V).

    One explicit formula for both paths (in place without autograd, out of place under checkpoint), so
    old and new log-probs of an unchanged policy agree bitwise and the first on-policy ratio is exactly 1.
    """
    zs = z.sub_(z.amax(-1, keepdim=True)) if inplace else z - z.detach().amax(-1, keepdim=True)  # (c, V) <= 0
    target_z = zs.gather(1, targets[:, None]).squeeze(1)  # (c,)
    e = zs.exp_() if inplace else zs.exp()  # (c, V) unnormalised probabilities; exp(<= 0) cannot overflow
    sum_e = e.sum(-1)  # (c,) >= 1
    log_sum = sum_e.log()
    logp = target_z - log_sum
    if clamp:
        # In exact arithmetic log p <= 0; the clamp removes rounding that would bias the ratio upward.
        logp = logp.clamp(max=0.0)
    if not with_entropy:
        return logp, None
    if entropy_grad and not inplace:
        # Same formula with gradient: H = log S - sum(e z) / S.
        return logp, log_sum - (e * zs).sum(-1) / sum_e
    with torch.no_grad():
        # H = log S - sum(e z) / S with S = sum(e), and -e z = entr(e) = -e ln e (in place when allowed).
        e = e.detach()
        terms = torch.special.entr(e, out=e) if inplace else torch.special.entr(e)  # (c, V)
        return logp, terms.sum(-1) / sum_e.detach() + log_sum.detach()


def _bf16_chunk(
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    temperature: float,
    with_entropy: bool,
    entropy_grad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The naive path: bf16 logits (c, V) and bf16 log-softmax, results cast to fp32 (c,)."""
    logsm = F.log_softmax(_tempered(logits, temperature, inplace=False), dim=-1)  # (c, V) bf16
    logp = logsm.gather(1, targets[:, None]).squeeze(1).float()
    if not with_entropy:
        return logp, None
    if entropy_grad and logsm.requires_grad:
        lp32 = logsm.float()
        return logp, -(lp32.exp() * lp32).sum(-1)
    with torch.no_grad():
        probs = logsm.detach().float().exp_()  # (c, V) fp32 copy; p = exp(bf16 log p), as this path sees it
        del logsm
        return logp, torch.special.entr(probs, out=probs).sum(-1)  # -sum p ln p


def _chunk(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    *,
    temperature: float,
    precision: str,
    with_entropy: bool,
    inplace: bool,
    entropy_grad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs and entropy (c,) of one chunk of hidden states (c, D)."""
    logits = _logits(hidden, weight, bias, _head_dtype(precision))  # (c, V)
    if precision == "bf16":
        return _bf16_chunk(
            logits, targets, temperature=temperature, with_entropy=with_entropy, entropy_grad=entropy_grad
        )
    z = _tempered(logits, temperature, inplace=inplace)
    return _fp32_chunk(
        z,
        targets,
        clamp=precision == "bf16_fixed",
        with_entropy=with_entropy,
        inplace=inplace,
        entropy_grad=entropy_grad,
    )


def token_logprobs(
    hidden: torch.Tensor,
    lm_head: nn.Module,
    targets: torch.Tensor,
    *,
    temperature: float,
    precision: str,
    chunk_size: int,
    with_entropy: bool = True,
    entropy_grad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs (N,) float32 of `targets` (N,) at hidden states (N, D), and entropy (N,) float32 or None.

    Full-vocabulary log-softmax of (hidden @ W.T + b) / temperature, `chunk_size` rows at a time.
    `entropy_grad=True` returns entropy with gradient when gradients are enabled (memory stays
    O(chunk x V): backward recomputes each chunk when there are several); otherwise entropy is detached.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    weight, bias = lm_head.weight, getattr(lm_head, "bias", None)  # (V, D), (V,) or None
    needs_grad = torch.is_grad_enabled() and (
        hidden.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
    )
    # Cast the head once, not once per chunk (a no-op when it already has the mode's dtype).
    dtype = _head_dtype(precision)
    weight, bias = weight.to(dtype), (None if bias is None else bias.to(dtype))
    # One chunk holds O(chunk x V) whether or not backward recomputes it, so only several chunks are
    # checkpointed: a single one keeps its buffers and skips the recompute (one head matmul of four).
    recompute = needs_grad and hidden.shape[0] > chunk_size
    fn = partial(
        _chunk,
        temperature=temperature,
        precision=precision,
        with_entropy=with_entropy,
        inplace=not needs_grad,
        entropy_grad=entropy_grad,
    )
    logps, entropies = [], []
    # The head's dtypes are set by `precision`, never by an enclosing autocast.
    with torch.autocast(device_type=hidden.device.type, enabled=False), torch.set_grad_enabled(needs_grad):
        for start in range(0, hidden.shape[0], chunk_size):
            h, t = hidden[start : start + chunk_size], targets[start : start + chunk_size]  # (c, D), (c,)
            if recompute:
                logp, ent = checkpoint(fn, h, weight, bias, t, use_reentrant=False)
            else:
                logp, ent = fn(h, weight, bias, t)
            logps.append(logp)
            entropies.append(ent)
    if not logps:  # N == 0
        empty = hidden.new_zeros(0, dtype=torch.float32)
        return empty, (empty if with_entropy else None)
    logp = torch.cat(logps)
    if not with_entropy:
        return logp, None
    entropy = torch.cat(entropies)
    return logp, (entropy if entropy_grad and needs_grad else entropy.detach())
