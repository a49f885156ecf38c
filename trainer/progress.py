"""The trainer's progress display: a tqdm bar on a terminal, plain lines in a log file or CI.

A bar redraws itself with carriage returns; written to a file every frame piles up on one line. Off a
terminal the run prints one line every `len(steps) // PLAIN_LINES` steps (and at the first and last step,
so a log shows the run going within its first step) instead.
"""

import sys
from collections.abc import Iterator
from typing import TextIO

from tqdm import tqdm

PLAIN_LINES = 20
"""About this many progress lines per run when stdout is not a terminal."""


class Progress:
    """Iterate over the steps; `report` after each one, `write` for a message that must not tear the bar."""

    def __init__(self, steps: range, desc: str, enabled: bool = True, file: TextIO | None = None) -> None:
        self.steps, self.desc, self.enabled = steps, desc, enabled
        self.file = file or sys.stdout
        self.on_terminal = enabled and self.file.isatty()
        self.bar = tqdm(steps, desc=desc, disable=not self.on_terminal, dynamic_ncols=True, file=self.file)
        self.every = max(1, len(steps) // PLAIN_LINES)

    def __iter__(self) -> Iterator[int]:
        return iter(self.bar)

    def write(self, message: str) -> None:
        if self.on_terminal:
            self.bar.write(message, file=self.file)
        else:
            print(message, file=self.file, flush=True)

    def report(self, step: int, **fields: str) -> None:
        if self.on_terminal:
            self.bar.set_postfix(fields)
            return
        done = step - self.steps.start + 1
        if self.enabled and (done == 1 or done % self.every == 0 or step == self.steps[-1]):
            shown = " ".join(f"{k} {v}" for k, v in fields.items())
            print(f"{self.desc}: step {step}/{self.steps[-1]} {shown}", file=self.file, flush=True)

    def close(self) -> None:
        self.bar.close()
