"""One optimizer step's entropy diagnostics, gathered from another trainer's own training forward passes.

An integration calls `StepStats.add` once per micro-batch with the tensors that trainer already computed
(log-probs, full-vocabulary entropy, ratio), then `finish` once per optimizer step. Token values are gathered
from every rank before any statistic is taken, so means are token-weighted over the whole step and all ranks
(never means of per-rank or per-micro-batch means), and every rank computes the same numbers (the controllers
decide identically everywhere). The statistics themselves are trainer/diagnostics.py's, as in our own loop.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from analysis import schema
from analysis.metrics import group_metrics
from trainer.advantages import zero_advantage_frac
from trainer.diagnostics import (
    clip_and_quadrants,
    entropy_dynamics,
    entropy_histogram,
    entropy_stats,
    precision_metrics,
)
from trainer.records import token_columns
from trainer.rollout import Rollout

Gather = Callable[[torch.Tensor], torch.Tensor]
"""Concatenates a flat tensor (n,) over ranks in rank order; the identity on one process."""


def _ones(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A flat tensor (n,) as one row (1, n) with an all-ones mask, the shape the diagnostics take."""
    return x[None], torch.ones(1, x.numel(), dtype=torch.bool, device=x.device)


@dataclass
class _Rows:
    """Full (B, T) tensors of a few sequences, kept for the `tokens` table."""

    sample_ids: list[int] = field(default_factory=list)
    parts: list[dict[str, torch.Tensor]] = field(default_factory=list)


class StepStats:
    """Token values of one optimizer step's micro-batches on this rank; `finish` turns them into metrics."""

    def __init__(self, token_records: int) -> None:
        self.token_records = token_records
        self._flat: dict[str, list[torch.Tensor]] = {}
        self._onpolicy_dev = -1.0  # none measured yet this step
        self._rows = _Rows()

    def add(
        self,
        sample_ids: torch.Tensor,  # (B,) run-unique id of each sequence
        completion_ids: torch.Tensor,  # (B, T)
        mask: torch.Tensor,  # (B, T) 1 on tokens the loss sees
        logp: torch.Tensor,  # (B, T) training forward
        entropy: torch.Tensor,  # (B, T) training forward, full vocabulary
        old_logp: torch.Tensor,  # (B, T) the policy that sampled (the ratio's denominator)
        advantages: torch.Tensor,  # (B,) the estimator's, before any controller shaping
        sampling_logp: torch.Tensor | None,  # (B, T) a separate sampler's (vLLM), or None
        first_pass: bool,
    ) -> None:
        """Record one micro-batch. `first_pass`: the first micro-batch of a fresh rollout, where the policy has
        not moved yet, so its ratio's distance from 1 is pure numerical drift (ratio/onpolicy_dev)."""
        valid = mask.bool()
        logp, entropy, old_logp = logp.detach().float(), entropy.detach().float(), old_logp.detach().float()
        ratio = torch.exp(logp - old_logp)  # (B, T) as the clipped objective forms it
        adv = advantages.detach().float().reshape(-1, 1).expand_as(logp)  # (B, T)
        values = {"entropy": entropy, "logp": logp, "ratio": ratio, "adv": adv}
        if sampling_logp is not None:
            values["sampling_logp"] = sampling_logp.detach().float()
        for key, x in values.items():
            self._flat.setdefault(key, []).append(x[valid])
        n = valid.sum(1)  # (B,) tokens per sequence
        seq_mean = (entropy * valid).sum(1)[n > 0] / n[n > 0]
        self._flat.setdefault("seq_entropy", []).append(seq_mean)
        if first_pass and valid.any():
            self._onpolicy_dev = max(self._onpolicy_dev, float((ratio[valid] - 1.0).abs().max()))
        take = self.token_records - len(self._rows.sample_ids)
        if take > 0:
            rows = slice(0, min(take, len(sample_ids)))
            self._rows.sample_ids += sample_ids[rows].tolist()
            part = {"ids": completion_ids, "mask": mask, "adv": adv, **values}
            self._rows.parts.append({k: v[rows].detach().cpu() for k, v in part.items()})

    @property
    def empty(self) -> bool:
        return not self._flat

    def finish(
        self,
        gather: Gather,
        reduce_max: Callable[[float], float],
        eps_low: float,
        eps_high: float,
        lr: float,
        bins: int,
        vocab_size: int,
    ) -> tuple[dict[str, float], tuple]:
        """(step metrics, histogram (edges, counts)) over every rank's tokens of the step; resets for the next.

        Collective: every rank must call it at the same step."""
        cat = {k: gather(torch.cat(v)).double().cpu() for k, v in sorted(self._flat.items())}
        entropy, mask = _ones(cat["entropy"])
        logp, ratio, adv = cat["logp"][None], cat["ratio"][None], cat["adv"][None]
        _, _, m = clip_and_quadrants(ratio, adv, logp, entropy, mask, eps_low, eps_high)
        m.update(entropy_stats(entropy, mask))
        m[schema.ENTROPY_SEQ_MEAN] = float(cat["seq_entropy"].mean())  # flat tokens lost the sequences
        m.update(entropy_dynamics(logp, adv, mask, lr))
        if "sampling_logp" in cat:
            m.update(precision_metrics(cat["sampling_logp"][None], logp, mask))
        dev = reduce_max(self._onpolicy_dev)
        if dev >= 0:  # only steps that start on a fresh rollout measure it
            m[schema.RATIO_ONPOLICY_DEV] = dev
        hist = entropy_histogram(entropy, mask, bins, vocab_size)
        self._flat, self._onpolicy_dev = {}, -1.0
        return m, hist

    def token_rows(self, step: int, eps_low: float, eps_high: float) -> dict[str, list]:
        """The `tokens` table's columns for the sequences this rank kept; resets them."""
        cols: dict[str, list] = {}
        done = 0
        for part in self._rows.parts:
            n = len(part["ids"])
            side, quadrant, _ = clip_and_quadrants(
                part["ratio"], part["adv"], part["logp"], part["entropy"], part["mask"], eps_low, eps_high
            )
            view = Rollout(
                input_ids=part["ids"],
                attention_mask=part["mask"],
                response_mask=part["mask"],
                rollout_logp=part["logp"],
                group_ids=torch.zeros(n, dtype=torch.long),
                prompts=[],
                responses=[],
            )
            for i, sid in enumerate(self._rows.sample_ids[done : done + n]):
                # token_columns numbers rows base_id + i; these rows carry their own ids
                row = token_columns(
                    step, sid - i, [i], view, part["logp"], part["entropy"], part["adv"][:, 0],
                    part["ratio"], side, quadrant,
                )  # fmt: skip
                for k, v in row.items():
                    cols.setdefault(k, []).extend(v)
            done += n
        self._rows = _Rows()
        return cols


def rollout_metrics(
    rewards: torch.Tensor, group_ids: torch.Tensor, responses: list[str], lengths: torch.Tensor
) -> tuple[dict[str, float], list[bool]]:
    """Reward, adv/zero_frac and response length of one rollout batch (all ranks' rows), plus pass@1/pass@k
    and diversity when every reward is 0 or 1 (then correct = reward 1); returns (metrics, correct)."""
    r = rewards.double()
    finite = r[torch.isfinite(r)]
    binary = bool(((finite == 0) | (finite == 1)).all()) and finite.numel() > 0
    correct = [bool(x == 1.0) for x in r.tolist()] if binary else [False] * len(responses)
    m = {
        schema.REWARD_MEAN: float(finite.mean()) if finite.numel() else float("nan"),
        schema.REWARD_STD: float(finite.std(unbiased=False)) if finite.numel() else float("nan"),
        schema.ADV_ZERO_FRAC: zero_advantage_frac(r.nan_to_num(0.0), group_ids),
        schema.RESPONSE_LEN_MEAN: float(lengths.double().mean()),
    }
    if binary:
        m.update(group_metrics(group_ids.tolist(), responses, correct))
    return m, correct
