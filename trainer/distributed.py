"""Data-parallel training on torch.distributed: FSDP2 (`fully_shard`) or DDP; gloo on CPU, nccl on GPU.

How a step is split (docs/distributed.md): every rank draws the same prompts and the same sampling noise for
the whole batch from the step's seed, samples only its own sequences (global rows rank::N), and the
per-sequence tensors are then summed into full-batch tensors on every rank. Each row comes from exactly
one rank, so the sum is exact (x + 0 = x) and every rank holds the batch a single process would have drawn.
Advantages, metrics and controller decisions are then computed from the global batch on every rank,
identically; only the forward and backward passes are split. Rank 0 alone writes the run store and reads
the control file, and hands each control change to the others at the same step.
"""

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from analysis.errors import UsageError
from trainer.policy import LogprobModule

# Mixed precision per mode under FSDP2 (docs/distributed.md, "Precision"): `bf16` casts every unit's
# parameters, the root's head and final norm included (the casting trap); `bf16_fixed` casts only the
# decoder layers and keeps the root (embeddings, final norm, head) in fp32.
BF16_ROOT = {"fp32": False, "bf16": True, "bf16_fixed": False}


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job; world 1 is a plain single-process run."""

    rank: int = 0
    world: int = 1
    kind: str = "single"  # "single", "fsdp2" or "ddp"

    @property
    def main(self) -> bool:
        return self.rank == 0

    def rows(self, n: int) -> torch.Tensor:
        """Which of n global rows this rank computes: rank, rank + N, ..."""
        return torch.arange(self.rank, n, self.world)

    def assemble(self, local: torch.Tensor, n: int) -> torch.Tensor:
        """The full (n, ...) tensor from each rank's rows (this rank's are `local`, rows(n)); exact, since
        every entry is one rank's value plus zeros."""
        if self.world == 1:
            return local
        full = local.new_zeros((n, *local.shape[1:]))
        full[self.rows(n).to(local.device)] = local
        dist.all_reduce(full)
        return full

    def any(self, flag: torch.Tensor) -> bool:
        """True when `flag` (a bool scalar) holds on any rank."""
        if self.world == 1:
            return bool(flag)
        t = flag.to(torch.int32).reshape(1)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t)

    def share(self, obj):
        """Rank 0's `obj` on every rank."""
        if self.world == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


SINGLE = Ranks()


def init_ranks(kind: str, device: torch.device) -> Ranks:
    """Join the process group that torchrun (or `--nproc`) described in the environment, if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return SINGLE
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Ranks(dist.get_rank(), world, kind)


def local_device(device: torch.device) -> torch.device:
    """One GPU per process: cuda:LOCAL_RANK."""
    if device.type != "cuda" or "LOCAL_RANK" not in os.environ:
        return device
    torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    return torch.device("cuda", int(os.environ["LOCAL_RANK"]))


def check_batch(batch: int, minibatches: int, world: int) -> None:
    """Every minibatch must give every rank at least one sequence (FSDP2 gathers on every rank's forward)."""
    if world == 1:
        return
    smallest = min(len(c) for c in torch.arange(batch).chunk(minibatches))
    if smallest < world:
        raise UsageError(
            f"a minibatch of {smallest} sequences cannot be split over {world} processes; raise "
            "prompts_per_step or group_size, or lower minibatches"
        )


def decoder_layers(lm: nn.Module) -> list[nn.Module]:
    """The transformer's block list (Qwen2 `model.layers`, GPT-2 `transformer.h`): the first ModuleList."""
    return next((list(m) for m in lm.modules() if isinstance(m, nn.ModuleList)), [])


def wrap(lm: nn.Module, ranks: Ranks, device: torch.device, precision: str) -> nn.Module:
    """The training root: a LogprobModule (its forward is the whole log-prob pass, so FSDP2 gathers the
    head inside it and DDP all-reduces its gradients), sharded or replicated across ranks."""
    root = LogprobModule(lm)
    if ranks.world == 1:
        return root
    if ranks.kind == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(root, device_ids=ids, forward_sync_buffers=False)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    # Explicit mesh: FSDP2 otherwise builds a CUDA mesh whenever CUDA exists, even for a CPU run.
    mesh = init_device_mesh(device.type, (ranks.world,))
    fp32 = MixedPrecisionPolicy()
    bf16 = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    # Under an fp32 root the layers get fp32 inputs, the attention mask among them, and must not cast it:
    # the mask's fp32 minimum rounds to -inf in bf16, a fully masked (left-pad) row's softmax is then NaN,
    # and the NaN spreads through attention to every position (measured). Autocast runs their matmuls in bf16.
    layer_bf16 = MixedPrecisionPolicy(
        param_dtype=torch.bfloat16, reduce_dtype=torch.float32, cast_forward_inputs=BF16_ROOT[precision]
    )
    for layer in decoder_layers(lm):
        fully_shard(layer, mesh=mesh, mp_policy=fp32 if precision == "fp32" else layer_bf16)
    fully_shard(root, mesh=mesh, mp_policy=bf16 if BF16_ROOT[precision] else fp32)
    return root


def full_value(t: torch.Tensor) -> torch.Tensor:
    """A sharded parameter's (or norm's) whole value on every rank; plain tensors as they are."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def _options():
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_weights(root: nn.Module, ranks: Ranks) -> dict[str, torch.Tensor] | None:
    """The HF model's whole state dict, on rank 0 (collective under FSDP2); None when not sharded."""
    if ranks.kind != "fsdp2" or ranks.world == 1:
        return None
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    prefix = "lm."
    sd = get_model_state_dict(root, options=_options())
    return {k.removeprefix(prefix): v for k, v in sd.items()}


def optimizer_state(root: nn.Module, optimizer: torch.optim.Optimizer, ranks: Ranks) -> dict:
    """The optimizer's state, whole (gathered on rank 0 under FSDP2)."""
    if ranks.kind != "fsdp2" or ranks.world == 1:
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(root, optimizer, options=_options())


def load_optimizer_state(
    root: nn.Module, optimizer: torch.optim.Optimizer, state: dict, ranks: Ranks
) -> None:
    if ranks.kind != "fsdp2" or ranks.world == 1:
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(root, optimizer, state, options=StateDictOptions(full_state_dict=True))


class NullWriter:
    """What ranks other than 0 log to: the run store is written once per step, by rank 0."""

    def __enter__(self) -> "NullWriter":
        return self

    def __exit__(self, *exc) -> bool:
        return False

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None
