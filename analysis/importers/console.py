"""Console output of Hugging Face Trainer-based trainers and of OpenRLHF -> rows.

- The HF Trainer (so TRL, Unsloth and ms-swift too) prints each log as a Python dict repr,
  `{'loss': 0.0751, 'grad_norm': 47.75, ..., 'epoch': 0.01}`, anywhere in the output (after a progress bar
  on the same line, in a Markdown file, sometimes split over two lines). The dict holds no step, so the
  training dicts are numbered in order, times the logging interval: `--step-every K`, else `logging_steps`
  where the log states it, else `global_step / number of dicts` where the log states a `global_step` that
  fits, else 1. A dict that states its step (`global_step`, ms-swift's `"global_step/max_steps": "10/438"`)
  keeps it. An evaluation dict (`eval_*` keys) and the end-of-training summary (`train_runtime`, ...) take the
  step of the training dict before them; `eval_*` keys go to the `eval/` namespace; `epoch` is kept.
- OpenRLHF's trainer logs `✨ Global step N: {...}` per step, with its step.
A last line without its newline is left for later: a console line cut off mid-value would parse as a wrong
number, and a cut dict has no end.
"""

import contextlib
import re
from pathlib import Path
from typing import Any

from analysis.errors import UsageError
from analysis.importers.lines import LineTail
from analysis.importers.rows import RowBuffer, Rows
from analysis.importers.tabular import MAX_STEP, as_step, console_value
from analysis.importers.trl_state import eval_name

DICT_START = re.compile(r"\{'[^'\n]{1,200}':\s*")
OPENRLHF_STEP = re.compile(r"Global step (\d+): \{'")
_VALUE = r"np\.\w+\([^()]*\)|'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|\[[^\]]*\]|\([^()]*\)|[^,{}'\"]+?"
_PAIR = re.compile(rf"\s*'((?:[^'\\]|\\.)*)'\s*:\s*({_VALUE})\s*(,|\}})")
_LOGGING_STEPS = re.compile(r"""\blogging_steps['"]?\s*[=:]\s*(\d+)""")
_GLOBAL_STEP = re.compile(r"""\bglobal_step['"]?\s*[=:]\s*(\d+)\b(?!\s*/)""")
_STEP_KEYS = ("global_step/max_steps", "global_step", "step")
_SUMMARY = "train_runtime"
_LOG_KEYS = ("epoch", "loss", _SUMMARY)  # a Trainer log carries one (it adds epoch to every log)
MAX_JOINED_LINES = 8  # a dict split over more lines than this is not a dict


def parse_dict(text: str) -> dict[str, Any] | None:
    """The flat `{'key': value, ...}` at the start of `text`, values as written; None while it has no end
    (it goes on on the next line), {} when it is no flat dict of that kind (a nested config dict)."""
    pos, out = 1, {}
    while pos < len(text):
        m = _PAIR.match(text, pos)
        if not m:
            return None if "}" not in text[pos:] else {}
        out[m.group(1)] = m.group(2).strip()
        pos = m.end()
        if m.group(3) == "}":
            return out
    return None


def numbers(entry: dict[str, str]) -> dict[str, float]:
    """The entry's numeric values (nan, numpy-2 reprs and transformers 5's quoted `'0.0751'` included);
    other strings, lists and booleans skipped."""
    out = {}
    for key, text in entry.items():
        if len(text) >= 2 and text[0] in "'\"" and text[-1] == text[0]:
            text = text[1:-1]
        value = None if text in ("True", "False") else console_value(text)
        if value is not None:
            out[key] = value
    return out


class HfConsoleSource:
    """HF Trainer console dicts (kind `hf-console`) or OpenRLHF's `Global step N: {...}` lines (`openrlhf`)."""

    def __init__(
        self, path: Path, name: str, kind: str = "hf-console", step_every: int | None = None
    ) -> None:
        self.path, self.name, self.kind = path, name, kind
        self.trainer = "openrlhf" if kind == "openrlhf" else None  # HF: TRL when its names say so,
        self.family = "transformers"  # else a Trainer all the same (its names: grad_norm, learning_rate)
        self.location = str(path.resolve())
        self._tail = LineTail(path)
        self._buffer = RowBuffer()
        self._pending: list[str] = []
        self._entries: list[tuple[int | None, dict[str, float], bool]] = []  # (stated step, metrics, counts)
        self._every = step_every
        self._how = "--step-every" if step_every else None
        self._stated: dict[str, int] = {}
        self._count = 0
        self._step = 0

    def info(self) -> dict:
        if self.kind == "openrlhf":
            return {"source": {"steps": "OpenRLHF's own (Global step N)"}}
        return {"source": {"steps": f"HF console dicts numbered in order, step = n x {self._every or 1} "
                                    f"({self._how or 'no logging interval stated in the log'})"}}  # fmt: skip

    def read(self, final: bool = True) -> Rows:
        for lineno, line, is_tail in self._tail.lines(final):
            if not is_tail:
                self._line(line.decode("utf-8", errors="replace"), lineno)
        if self._entries:
            self._fix_every()
            for stated, metrics, counts in self._entries:
                self._add(stated, metrics, counts)
            self._entries.clear()
        return self._buffer.take()

    def _line(self, text: str, lineno: int) -> None:
        if self._pending:
            self._pending.append(text)
            taken = self._take("".join(self._pending), lineno)
            if taken is None and len(self._pending) < MAX_JOINED_LINES:
                return
            self._pending.clear()
            if taken:
                return
            # not the rest of that dict: the line stands on its own
        for key, pattern in (("logging_steps", _LOGGING_STEPS), ("global_step", _GLOBAL_STEP)):
            if m := pattern.search(text):
                self._stated[key] = int(m.group(1))
        if self.kind == "openrlhf":
            if m := OPENRLHF_STEP.search(text):
                step = as_step(m.group(1), f"{self.path}:{lineno}")
                if metrics := numbers(parse_dict(text[m.end() - 2 :]) or {}):
                    self._entries.append((step, metrics, False))
            return
        if (m := DICT_START.search(text)) and self._take(text[m.start() :], lineno) is None:
            self._pending = [text[m.start() :]]

    def _take(self, text: str, lineno: int) -> bool | None:
        """Take the dict `text` starts with: True when taken, None when it has no end yet, False when it is
        no flat dict."""
        entry = parse_dict(text)
        if not entry:
            return None if entry is None else False
        metrics = numbers(entry)
        stated = next((k for k in _STEP_KEYS if k in entry), None)
        step = None
        with contextlib.suppress(UsageError):  # a `step` that is no step number: the dict is numbered
            step = as_step(entry[stated].strip("'\""), f"{self.path}:{lineno}") if stated else None
        evaluation = all(k.startswith("eval_") or k == "epoch" for k in metrics)
        counts = step is None and not evaluation and _SUMMARY not in metrics
        if metrics and (step is not None or _trainer_log(metrics)):
            self._entries.append((step, {k: v for k, v in metrics.items() if k not in _STEP_KEYS}, counts))
        return True

    def _fix_every(self) -> None:
        """The logging interval, fixed at the first read that has dicts (their steps are written then)."""
        if self._every is not None:
            return
        if "logging_steps" in self._stated:
            self._every, self._how = self._stated["logging_steps"], "logging_steps stated in the log"
            return
        n = sum(counts for stated, _, counts in self._entries if stated is None)
        total = self._stated.get("global_step")
        if n and total and n * (total // n) <= total < (n + 1) * (total // n):
            self._every, self._how = total // n, f"global_step {total} stated in the log, over {n} dicts"
            return
        self._every = 1

    def _add(self, stated: int | None, metrics: dict[str, float], counts: bool) -> None:
        if stated is not None:
            self._step = stated
        elif counts:
            self._count += 1
            self._step = self._count * (self._every or 1)
            if self._step > MAX_STEP:
                raise UsageError(f"{self.path}: step {self._step} is out of range; lower --step-every")
        self._buffer.add_dict(self._step, {eval_name(k): v for k, v in metrics.items()})


def _trainer_log(metrics: dict[str, float]) -> bool:
    """A Trainer's log, not another dict the script printed (a config's, a batch's)."""
    return any(k in metrics for k in _LOG_KEYS) or any(k.startswith("eval_") for k in metrics)
