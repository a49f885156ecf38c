"""jsonl:PATH — prompts and answers from a JSON-lines file, sampled with replacement.

Each non-blank line is an object with string fields `prompt` and `answer`, and optionally `verifier`
(`exact`, the default: the stripped response must equal the answer; `regex`: the answer is a regular
expression fullmatched against the stripped response) and `example` (a response that passes, used as
the warm-up demonstration of a regex line).
"""

import hashlib
import json
import re
from functools import lru_cache
from pathlib import Path

import numpy as np

from analysis.errors import UsageError
from trainer.tasks import Prompt

VERIFIERS = ("exact", "regex")


@lru_cache(maxsize=4096)
def _compiled(pattern: str) -> re.Pattern:
    return re.compile(pattern)


def _passes(prompt: Prompt, response: str) -> bool:
    text = response.strip()
    if prompt.verifier == "regex":
        return _compiled(prompt.answer).fullmatch(text) is not None
    return text == prompt.answer.strip()


class JsonlTask:
    def __init__(self, path: str) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise UsageError(
                f"task file {path!r} does not exist; pass task=jsonl:PATH with an existing .jsonl file"
            )
        raw = self.path.read_bytes()
        self.name = f"jsonl:{path}"
        self.digest = hashlib.sha256(raw).hexdigest()  # the warm-up cache keys on content, not only the path
        self.prompts: list[Prompt] = []
        self.examples: dict[Prompt, str] = {}
        for number, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), start=1):
            if line.strip():
                self._add(number, line)
        if not self.prompts:
            raise UsageError(
                f"task file {path!r} has no lines; add one JSON object per line with prompt and answer"
            )
        # Known-good responses of all lines: other lines' answers serve as plausible wrong demonstrations.
        self.pool = [
            self.examples.get(p, p.answer)
            for p in self.prompts
            if p.verifier == "exact" or p in self.examples
        ]

    def _add(self, number: int, line: str) -> None:
        where = f"task file {str(self.path)!r} line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UsageError(f"{where}: invalid JSON ({e.msg}); write one JSON object per line") from None
        if not isinstance(row, dict):
            raise UsageError(f"{where}: expected a JSON object with prompt and answer fields")
        for field in ("prompt", "answer"):
            if not isinstance(row.get(field), str):
                raise UsageError(
                    f"{where}: missing or non-string field {field!r}; every line needs prompt and answer strings"
                )
        verifier = row.get("verifier", "exact")
        if verifier not in VERIFIERS:
            raise UsageError(f"{where}: verifier {verifier!r} is not one of {', '.join(VERIFIERS)}")
        if verifier == "regex":
            try:
                _compiled(row["answer"])
            except re.error as e:
                raise UsageError(f"{where}: answer is not a valid regex ({e}); fix the pattern") from None
        prompt = Prompt(row["prompt"], row["answer"], verifier)
        example = row.get("example")
        if example is not None and not (isinstance(example, str) and _passes(prompt, example)):
            raise UsageError(
                f"{where}: example {example!r} does not pass its own verifier; fix it or drop it"
            )
        self.prompts.append(prompt)
        if example is not None:
            self.examples[prompt] = example

    def sample(self, rng: np.random.Generator, n: int) -> list[Prompt]:
        return [self.prompts[int(i)] for i in rng.integers(0, len(self.prompts), size=n)]

    def reward(self, prompt: Prompt, response: str) -> tuple[float, bool]:
        correct = _passes(prompt, response)
        return float(correct), correct

    def demonstration(self, prompt: Prompt, rng: np.random.Generator, correct: bool) -> str:
        if correct:
            return self._right(prompt)
        # Another line's answer makes a plausible wrong one; fall back to a mangled or empty response
        # (and to "" even if it passes, for a verifier that accepts everything).
        picks = rng.integers(0, len(self.pool), size=8) if self.pool else []
        candidates = [self.pool[int(i)] for i in picks] + [prompt.answer + "?", ""]
        return next((c for c in candidates if not _passes(prompt, c)), "")

    def _right(self, prompt: Prompt) -> str:
        if prompt in self.examples:
            return self.examples[prompt]
        if _passes(prompt, prompt.answer):  # exact answers, and regexes that match themselves ("42")
            return prompt.answer
        raise UsageError(
            f"task file {str(self.path)!r}: the regex line with prompt {prompt.text[:40]!r} needs an 'example' "
            "field (a passing response) for supervised warm-up; add one or set warmup_steps=0"
        )
