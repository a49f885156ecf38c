"""Sequence-level advantage estimators, registered by name (modelled on verl's advantage registry).

Each estimator maps rewards (B,) float and group ids (B,) long (completions of the same prompt share an
id; ids need not be contiguous) to advantages (B,); the loop broadcasts them over response tokens.
"""

from collections.abc import Callable

import torch

from analysis.errors import UsageError

AdvantageFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
ADVANTAGE_ESTIMATORS: dict[str, AdvantageFn] = {}


def register_advantage(name: str) -> Callable[[AdvantageFn], AdvantageFn]:
    """Decorator: register an estimator under `name`."""

    def deco(fn: AdvantageFn) -> AdvantageFn:
        ADVANTAGE_ESTIMATORS[name] = fn
        return fn

    return deco


def get_advantage(name: str) -> AdvantageFn:
    """The estimator registered as `name`; UsageError listing the valid names otherwise."""
    if name not in ADVANTAGE_ESTIMATORS:
        raise UsageError(
            f"unknown advantage estimator {name!r}; valid: {', '.join(sorted(ADVANTAGE_ESTIMATORS))}"
        )
    return ADVANTAGE_ESTIMATORS[name]


def _group_stats(
    rewards: torch.Tensor, group_ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-completion group size, group mean and population std (unbiased=False), each (B,)."""
    r = rewards.double()
    _, inv = torch.unique(group_ids, return_inverse=True)  # (B,) dense group index
    n_groups = int(inv.max()) + 1 if inv.numel() else 0
    count = torch.zeros(n_groups, dtype=r.dtype, device=r.device).index_add_(0, inv, torch.ones_like(r))
    total = torch.zeros_like(count).index_add_(0, inv, r)
    mean = total / count
    var = torch.zeros_like(count).index_add_(0, inv, (r - mean[inv]) ** 2) / count
    return count[inv], mean[inv], var.sqrt()[inv]


@register_advantage("grpo")
def grpo_advantage(rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """(r - group mean) / (group std + 1e-6), population std (unbiased=False): a group of one gets 0, not NaN."""
    _, mean, std = _group_stats(rewards, group_ids)
    return ((rewards.double() - mean) / (std + 1e-6)).to(rewards.dtype)


@register_advantage("dapo")
def dapo_advantage(rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """DAPO keeps GRPO's group-normalised advantage (its changes are in the loss and the clip)."""
    return grpo_advantage(rewards, group_ids)


@register_advantage("dr_grpo")
def dr_grpo_advantage(rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """r - group mean, without the std division that up-weights near-uniform groups (Liu et al. 2025)."""
    _, mean, _ = _group_stats(rewards, group_ids)
    return (rewards.double() - mean).to(rewards.dtype)


@register_advantage("rloo")
def rloo_advantage(rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """r minus the mean of the other members of its group; 0 for a group of one."""
    count, mean, _ = _group_stats(rewards, group_ids)
    # r - (n*mean - r)/(n-1) = n/(n-1) * (r - mean)
    scale = torch.where(count > 1, count / (count - 1).clamp(min=1), torch.zeros_like(count))
    return (scale * (rewards.double() - mean)).to(rewards.dtype)


def zero_advantage_frac(rewards: torch.Tensor, group_ids: torch.Tensor) -> float:
    """Fraction of groups whose members all got the same reward (no policy-gradient signal)."""
    _, inv = torch.unique(group_ids, return_inverse=True)
    if inv.numel() == 0:
        return 0.0
    n_groups = int(inv.max()) + 1
    r = rewards.double()
    hi = torch.full((n_groups,), -torch.inf, dtype=r.dtype, device=r.device).scatter_reduce(0, inv, r, "amax")
    lo = torch.full((n_groups,), torch.inf, dtype=r.dtype, device=r.device).scatter_reduce(0, inv, r, "amin")
    return float((hi == lo).double().mean())
