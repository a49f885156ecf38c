"""Rows for the run store's `samples` and `tokens` tables, built from one step's tensors."""

import torch
from transformers import PreTrainedTokenizerBase

from trainer.rollout import Rollout


def sample_rows(
    step: int,
    base_id: int,
    rollout: Rollout,
    rewards: torch.Tensor,
    correct: list[bool],
    tokenizer: PreTrainedTokenizerBase,
) -> list[dict]:
    """One row per completion; sample_id = base_id + row, unique within a run."""
    prompt_texts = {}
    rows = []
    per_row = zip(
        rollout.prompts,
        *rollout.token_ids(),
        rollout.group_ids.tolist(),
        rewards.tolist(),
        correct,
        strict=True,
    )  # python lists up front: one conversion per tensor, not one per element
    for i, (prompt, prompt_ids, response_ids, group_id, reward, ok) in enumerate(per_row):
        key = tuple(prompt_ids)
        if key not in prompt_texts:
            prompt_texts[key] = tokenizer.decode(prompt_ids, skip_special_tokens=True)
        rows.append(
            {
                "step": step,
                "sample_id": base_id + i,
                "group_id": int(group_id),
                "prompt_token_ids": prompt_ids,
                "response_token_ids": response_ids,
                "prompt_text": prompt_texts[key] or prompt.text,
                "response_text": rollout.responses[i],
                "reward": float(reward),
                "correct": bool(ok),
            }
        )
    return rows


def token_columns(
    step: int,
    base_id: int,
    picks: list[int],
    rollout: Rollout,
    logp: torch.Tensor,  # (B, R) rollout policy, training path
    entropy: torch.Tensor,  # (B, R)
    seq_adv: torch.Tensor,  # (B,)
    ratio: torch.Tensor,  # (B, R) last pass
    clip_side: torch.Tensor,  # (B, R) int8
    quadrant: torch.Tensor,  # (B, R) int8
) -> dict[str, list]:
    """Columnar per-token records for the picked sequences' response tokens."""
    cols: dict[str, list] = {
        k: []
        for k in (
            "step",
            "sample_id",
            "position",
            "token_id",
            "logp",
            "entropy",
            "advantage",
            "ratio",
            "clip_side",
            "quadrant",
        )
    }
    p = rollout.prompt_len
    for i in picks:
        n = int(rollout.response_mask[i].sum())
        cols["step"] += [step] * n
        cols["sample_id"] += [base_id + i] * n
        cols["position"] += list(range(n))
        cols["token_id"] += rollout.input_ids[i, p : p + n].tolist()
        cols["logp"] += logp[i, :n].tolist()
        cols["entropy"] += entropy[i, :n].tolist()
        cols["advantage"] += [float(seq_adv[i])] * n
        cols["ratio"] += ratio[i, :n].tolist()
        cols["clip_side"] += clip_side[i, :n].tolist()
        cols["quadrant"] += quadrant[i, :n].tolist()
    return cols
