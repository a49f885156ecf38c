"""A tiny offline TRL GRPO setup shared by the TRL integration tests: the project's tiny-qwen2 preset (random
init, character tokenizer, no hub access) and a 0/1 reward that about half the random completions earn."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from trl import GRPOConfig  # noqa: E402

from trainer.integrations.trl import EntropyScopeGRPOTrainer  # noqa: E402
from trainer.models import load_policy  # noqa: E402


def even_length(prompts: list[str], completions: list[str], **kwargs: Any) -> list[float]:
    """1 for a completion of even length in characters, else 0."""
    return [float(len(c) % 2 == 0) for c in completions]


def make_trainer(
    store: Path, run_id: str, out: Path, scope: dict | None = None, reward=even_length, **config: Any
):
    """An EntropyScopeGRPOTrainer on the tiny preset: 2 prompts x 4 completions of up to 6 tokens per step."""
    torch.set_num_threads(1)
    model, tokenizer = load_policy("tiny-qwen2", seed=0)
    dataset = Dataset.from_list([{"prompt": f"{i}+{i}="} for i in range(64)])
    args = dict(
        output_dir=str(out), max_steps=4, per_device_train_batch_size=8, num_generations=4,
        max_completion_length=6, logging_steps=1, report_to=[], use_cpu=True, learning_rate=0.05,
        save_strategy="no", seed=0, disable_tqdm=True,
    )  # fmt: skip
    args.update(config)
    return EntropyScopeGRPOTrainer(
        model=model,
        reward_funcs=reward,
        args=GRPOConfig(**args),
        train_dataset=dataset,
        processing_class=tokenizer,
        store=store,
        run_id=run_id,
        scope=scope,
    )


def trl_logs(trainer) -> dict[int, dict[str, float]]:
    """What TRL itself logged, by optimizer step."""
    return {h["step"]: h for h in trainer.state.log_history if "entropy" in h}
