"""Per-token log-probs and entropy of the policy on a rollout batch: the training path."""

from contextlib import AbstractContextManager, nullcontext

import torch
from transformers import PreTrainedModel

from trainer.logprobs import forward_hidden, token_logprobs


def precision_autocast(precision: str, device: torch.device) -> AbstractContextManager:
    """bf16 modes run the transformer body in bf16 over fp32 master weights, as FSDP mixed precision does."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def response_logprobs(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_len: int,
    *,
    temperature: float,
    precision: str,
    chunk_size: int,
    with_entropy: bool,
    entropy_grad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs (B, R) of the response tokens and, if asked, their full-vocabulary entropy (B, R)
    (with gradient when `entropy_grad`)."""
    device = input_ids.device
    with precision_autocast(precision, device):
        hidden = forward_hidden(model, input_ids, attention_mask)  # (B, T, D)
    b, t, d = hidden.shape
    start = t - response_len
    states = hidden[:, start - 1 : t - 1].reshape(-1, d)  # (B*R, D): the states that predict response tokens
    targets = input_ids[:, start:].reshape(-1)  # (B*R,)
    # The head's dtypes are decided by `precision` inside token_logprobs, not by autocast.
    with torch.autocast(device_type=device.type, enabled=False):
        logp, entropy = token_logprobs(
            states,
            model.get_output_embeddings(),
            targets,
            temperature=temperature,
            precision=precision,
            chunk_size=chunk_size,
            with_entropy=with_entropy,
            entropy_grad=entropy_grad,
        )
    logp = logp.view(b, response_len)
    return logp, (entropy.view(b, response_len) if entropy is not None else None)


class LogprobModule(torch.nn.Module):
    """`response_logprobs` as a module's forward, the root of distributed wrapping: FSDP2 gathers the head's
    weight only inside its root's forward (calling `model.base_model` and then the head outside it mixes
    Tensors with DTensors), and DDP all-reduces gradients only of what went through its forward."""

    def __init__(self, lm: PreTrainedModel):
        super().__init__()
        self.lm = lm

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_len: int, **kwargs):
        logp, entropy = response_logprobs(self.lm, input_ids, attention_mask, response_len, **kwargs)
        # Not views: FSDP2 hooks a root's outputs for backward, and a view's hook an in-place op would drop.
        return logp.clone(), None if entropy is None else entropy.clone()


def as_root(model: torch.nn.Module) -> torch.nn.Module:
    """A callable policy root: a bare (or PEFT) model gets wrapped, a root (sharded, under DDP, or not) is kept."""
    from torch.nn.parallel import DistributedDataParallel

    return model if isinstance(model, (LogprobModule, DistributedDataParallel)) else LogprobModule(model)
