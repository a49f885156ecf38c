"""Line logs -> rows: verl's file logger and generic JSONL, CSV, and verl's console lines.

- verl's file logger (`trainer.logger=['file']`) writes `{"step": N, "data": {...}}` per `log()` call; the
  validation metrics come as a line of their own with the same step, and merge with the training line.
- Generic JSONL: one object per line holding a step field (`--step-key`, or the first of STEP_KEYS found in
  the first line) beside the metrics; nested objects are flattened with '/'.
- CSV: a header row, a step column (found the same way), metric columns; empty or non-numeric cells are
  not logged values.
- ms-swift's `logging.jsonl`: generic JSONL whose step is `"global_step/max_steps": "10/438"` (step 10).
- verl's console logger prints `step:N - key:value - key:value ...`; other console output is skipped, and so
  is a last line without its newline (a console line cut off mid-value would parse as a wrong number).
Strings, lists and null values are not metrics and are skipped.
"""

import contextlib
import csv
import json
import re
from pathlib import Path
from typing import Any

from analysis.errors import UsageError
from analysis.importers.lines import LineTail
from analysis.importers.rows import RowBuffer, Rows

STEP_KEYS = (
    "step",
    "global_step",
    "global_step/max_steps",
    "_step",
    "train/global_step",
    "iteration",
    "iter",
    "Step",
)
VERL_CONSOLE = re.compile(r"step:(\d+) - (.*)")
_NUMPY_REPR = re.compile(r"^np\.\w+\((.*)\)$")  # pprint of a numpy scalar under numpy 2: np.float64(0.5)
_OF_TOTAL = re.compile(r"^\s*(-?\d+)\s*/\s*\d+\s*$")  # "10/438": step 10 of 438 (ms-swift)
# Steps are stored as int64; past 2**53 a JSON reader may already have rounded them (and no run is that long).
MAX_STEP = 2**53


def as_step(value: Any, where: str) -> int:
    """A step number from an int, an integral float, a string of digits or "A/B" (step A of B), within
    ±MAX_STEP."""
    step = _whole(value)
    if step is None:
        raise UsageError(f"{where}: step {value!r} is not a whole number")
    if abs(step) > MAX_STEP:
        raise UsageError(f"{where}: step {value!r} is out of range (at most {MAX_STEP} either side of 0)")
    return step


def _whole(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and (m := _OF_TOTAL.match(value)):
        value = m.group(1)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        with contextlib.suppress(ValueError):  # "²" is a digit too, and int() refuses 4,300+ digits
            return int(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if number.is_integer() else None


def find_step_key(names: list[str], step_key: str | None, where: str) -> str:
    if step_key is not None:
        if step_key not in names:
            raise UsageError(f"{where}: no step column {step_key!r}; columns: {', '.join(names[:20])}")
        return step_key
    for name in STEP_KEYS:
        if name in names:
            return name
    raise UsageError(f"{where}: no step column (looked for {', '.join(STEP_KEYS)}); name it with --step-key")


class JsonlSource:
    """verl's file-logger JSONL, or generic JSONL with a step field."""

    def __init__(self, path: Path, name: str, kind: str = "jsonl", step_key: str | None = None) -> None:
        self.path, self.name, self.kind = path, name, kind
        self.trainer = kind if kind in ("verl", "ms-swift") else None
        self.location = str(path.resolve())
        self._tail = LineTail(path)
        self._step_key = step_key
        self._buffer = RowBuffer()

    def info(self) -> dict:
        return {}

    def read(self, final: bool = True) -> Rows:
        loads, add = json.loads, self._buffer.add_dict
        for lineno, line, is_tail in self._tail.lines(final):
            where = f"{self.path}:{lineno}"
            try:
                obj = loads(line.decode())  # str: json skips its encoding sniffing
            except ValueError:  # UnicodeDecodeError too
                if is_tail:
                    continue  # the writer's half-written last line
                raise UsageError(f"{where}: not a JSON object line") from None
            if not isinstance(obj, dict):
                raise UsageError(f"{where}: not a JSON object line")
            data = obj.get("data")
            if self._step_key is None and "step" in obj and isinstance(data, dict):
                add(as_step(obj["step"], where), data)  # verl: {"step": N, "data": {...}}
                continue
            key = self._step_key or find_step_key(list(obj), None, where)
            self._step_key = key
            if key not in obj:
                raise UsageError(f"{where}: no step field {key!r}")
            step = as_step(obj[key], where)
            add(step, {k: v for k, v in obj.items() if k != key})
        return self._buffer.take()


class CsvSource:
    """A CSV file with a header row and a step column."""

    kind = "csv"
    trainer = None

    def __init__(self, path: Path, name: str, step_key: str | None = None) -> None:
        self.path, self.name = path, name
        self.location = str(path.resolve())
        self._tail = LineTail(path)
        self._step_key = step_key
        self._header: list[str] | None = None
        self._step_col = 0
        self._buffer = RowBuffer()

    def info(self) -> dict:
        return {}

    def read(self, final: bool = True) -> Rows:
        add = self._buffer.add
        for lineno, line, is_tail in self._tail.lines(final):
            where = f"{self.path}:{lineno}"
            try:
                cells = next(csv.reader([line.decode("utf-8-sig" if lineno == 1 else "utf-8")]))
            except (UnicodeDecodeError, csv.Error) as err:
                raise UsageError(f"{where}: not a CSV line ({err})") from None
            if self._header is None:
                self._header = [c.strip() for c in cells]
                key = find_step_key(self._header, self._step_key, str(self.path))
                self._step_col = self._header.index(key)
                continue
            if len(cells) != len(self._header):
                if is_tail:
                    continue
                raise UsageError(f"{where}: {len(cells)} cells under a header of {len(self._header)}")
            step = as_step(cells[self._step_col], where)
            for i, (name, cell) in enumerate(zip(self._header, cells, strict=True)):
                if i == self._step_col or not cell:
                    continue
                try:
                    value = float(cell)
                except ValueError:
                    continue
                add(step, name, value)
        if self._header is None and final:
            raise UsageError(f"{self.path}: empty CSV (no header row)")
        return self._buffer.take()


def console_value(text: str) -> float | None:
    m = _NUMPY_REPR.match(text)
    try:
        return float(m.group(1) if m else text)
    except ValueError:
        return None


class VerlConsoleSource:
    """verl's console log: lines `step:N - key:value - ...` anywhere in the output."""

    kind = "verl"
    trainer = "verl"

    def __init__(self, path: Path, name: str) -> None:
        self.path, self.name = path, name
        self.location = str(path.resolve())
        self._tail = LineTail(path)
        self._buffer = RowBuffer()

    def info(self) -> dict:
        return {}

    def read(self, final: bool = True) -> Rows:
        add = self._buffer.add
        for lineno, line, is_tail in self._tail.lines(final):
            m = None if is_tail else VERL_CONSOLE.search(line.decode("utf-8", errors="replace"))
            if not m:
                continue
            step = as_step(m.group(1), f"{self.path}:{lineno}")
            for item in m.group(2).split(" - "):
                key, _, text = item.strip().rpartition(":")
                value = console_value(text) if key else None
                if value is not None:
                    add(step, key, value)
        return self._buffer.take()
