"""The one masked-aggregation helper, used by the losses and every diagnostic (modelled on verl's agg_loss).

Sequences with an empty mask are left out of the `seq-mean-*` means instead of counting as zero.
"""

import torch

AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of x over the positions where mask is nonzero (all of them, or along `dim`); 0 where empty."""
    m = mask.to(x.dtype)
    if dim is None:
        return (x * m).sum() / m.sum().clamp(min=1)
    return (x * m).sum(dim) / m.sum(dim).clamp(min=1)


def _seq_mean(per_seq: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the sequences (B,) that have at least one unmasked token."""
    return masked_mean(per_seq, mask.sum(-1) > 0)


def agg_loss(loss_mat: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Aggregate a per-token loss (B, T) under mask (B, T) into a scalar.

    - `token-mean`: every unmasked token weighs the same (DAPO).
    - `seq-mean-token-mean`: mean over tokens within a sequence, then over sequences (GRPO).
    - `seq-mean-token-sum`: sum over tokens within a sequence, then mean over sequences.
    - `seq-mean-token-sum-norm`: token sums divided by the constant T = mask.shape[-1], then mean over
      sequences (Dr. GRPO's 1/G * 1/MAX_LEN; verl sums over sequences instead, which scales with B).
    """
    m = mask.to(loss_mat.dtype)
    if mode == "token-mean":
        return masked_mean(loss_mat, m)
    token_sum = (loss_mat * m).sum(-1)  # (B,)
    if mode == "seq-mean-token-mean":
        return _seq_mean(token_sum / m.sum(-1).clamp(min=1), m)
    if mode == "seq-mean-token-sum":
        return _seq_mean(token_sum, m)
    if mode == "seq-mean-token-sum-norm":
        return _seq_mean(token_sum / mask.shape[-1], m)
    raise ValueError(f"unknown aggregation mode {mode!r}; valid: {', '.join(AGG_MODES)}")
