"""The offline TRL setup of examples/trl_grpo.py, bench/trl_overhead.py and docs/trl.md: digit_sum prompts as a
Hugging Face dataset, its 0/1 reward as a TRL reward function, and our policy (the tiny-qwen2 preset, warm-started
on digit_sum as our trainer does, or a local model directory). No download anywhere."""

from typing import Any

import numpy as np
import torch
from datasets import Dataset

from trainer.config import TrainConfig
from trainer.loop import build_policy
from trainer.tasks import Prompt


def digit_sum_setup(model: str, seed: int, n_prompts: int = 4096) -> tuple[Any, Any, Dataset, Any]:
    """(model, tokenizer, dataset, reward function) for GRPO on digit_sum ("3+5=" -> "8", reward 1 if right)."""
    cfg = TrainConfig(model=model, task="digit_sum", seed=seed)
    policy, tokenizer, task = build_policy(cfg, torch.device("cpu"))
    bos = tokenizer.bos_token or ""  # our policies are prompted with <bos> (trainer/warmup.py encode_prompt)
    prompts = task.sample(np.random.default_rng(seed), n_prompts)
    dataset = Dataset.from_list([{"prompt": bos + p.text, "answer": p.answer} for p in prompts])

    def correct_sum(completions: list[str], answer: list[str], **kwargs: Any) -> list[float]:
        return [task.reward(Prompt("", a), c)[0] for c, a in zip(completions, answer, strict=True)]

    return policy, tokenizer, dataset, correct_sum
