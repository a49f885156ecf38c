"""Tasks: a prompt sampler, a verifier (reward, correct) and a demonstration writer for supervised warm-up.

Specs: `digit_sum`, `bandit`, `jsonl:PATH`. All randomness comes from the caller's numpy Generator, so a
seed fixes the prompts of every step.
"""

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from analysis.errors import UsageError

TASK_SPECS = ("digit_sum", "bandit", "jsonl:PATH")


@dataclass(frozen=True)
class Prompt:
    """One question: the text the model sees (without <bos>) and the reference answer."""

    text: str
    answer: str
    verifier: str = "exact"
    """How `answer` is checked: `exact` (string match) or `regex` (fullmatch); only jsonl tasks use `regex`."""


class Task(Protocol):
    name: str

    def sample(self, rng: np.random.Generator, n: int) -> list[Prompt]:
        """`n` prompts drawn with `rng`."""
        ...

    def reward(self, prompt: Prompt, response: str) -> tuple[float, bool]:
        """(reward, correct) of a decoded response; surrounding whitespace is ignored."""
        ...

    def demonstration(self, prompt: Prompt, rng: np.random.Generator, correct: bool) -> str:
        """A response for supervised warm-up: right when `correct`, a plausible wrong answer otherwise."""
        ...


def make_task(spec: str, seed: int = 0) -> Task:
    """The task named by `spec`. Tasks have no seeded structure yet; `seed` is accepted for future ones."""
    del seed
    from trainer.tasks.bandit import BanditTask
    from trainer.tasks.digit_sum import DigitSumTask
    from trainer.tasks.jsonl import JsonlTask

    if spec == "digit_sum":
        return DigitSumTask()
    if spec == "bandit":
        return BanditTask()
    if spec.startswith("jsonl:") and spec[len("jsonl:") :].strip():
        return JsonlTask(spec[len("jsonl:") :].strip())
    raise UsageError(f"unknown task {spec!r}; valid tasks: {', '.join(TASK_SPECS)}")
