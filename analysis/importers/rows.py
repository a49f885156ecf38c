"""Rows read from a source, columnar: (step, key, value, wall_time), keys interned as integer codes.

Readers append rows one at a time into a RowBuffer (typed arrays: a 2M-row import holds ~50 MB, not the
~400 MB of Python tuples) and hand over `Rows`. A wall time of NaN means the source has no clock; the
importer stamps those rows with the import time.
"""

import contextlib
import math
from array import array
from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np

NO_TIME = math.nan


@dataclass
class Rows:
    """Columns of equal length; `code` indexes `keys`."""

    keys: list[str]
    code: np.ndarray  # int32
    step: np.ndarray  # int64
    value: np.ndarray  # float64
    wall_time: np.ndarray  # float64, NaN where unknown

    def __len__(self) -> int:
        return len(self.step)

    @classmethod
    def of_series(cls, series: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]) -> "Rows":
        """Rows from per-key columns (key, steps, values, wall times)."""
        if not series:
            return cls([], *(np.empty(0, dtype=t) for t in (np.int32, np.int64, np.float64, np.float64)))
        return cls(
            [key for key, *_ in series],
            np.repeat(np.arange(len(series), dtype=np.int32), [len(s) for _, s, _, _ in series]),
            np.concatenate([s for _, s, _, _ in series]).astype(np.int64),
            np.concatenate([v for _, _, v, _ in series]).astype(np.float64),
            np.concatenate([t for _, _, _, t in series]).astype(np.float64),
        )


class RowBuffer:
    """Append-only builder of Rows."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self._codes: dict[str, int] = {}
        self._key_sets: dict[tuple[str, ...], array] = {}
        self._code = array("i")
        self._step = array("q")
        self._value = array("d")
        self._time = array("d")

    def __len__(self) -> int:
        return len(self._step)

    def code(self, key: str) -> int:
        code = self._codes.get(key)
        if code is None:
            code = self._codes[key] = len(self.keys)
            self.keys.append(key)
        return code

    def add(self, step: int, key: str, value: float, wall_time: float = NO_TIME) -> None:
        self._code.append(self.code(key))
        self._step.append(step)
        self._value.append(value)
        self._time.append(wall_time)

    def extend(self, steps: list[int], keys: list[str], values: list[float], wall_times: list[float]) -> None:
        """Many rows at once, as parallel lists."""
        code = self.code
        self._code.extend([code(k) for k in keys])
        self._step.extend(steps)
        self._value.extend(values)
        self._time.extend(wall_times)

    def add_dict(
        self, step: int, values: dict[str, Any], wall_time: float = NO_TIME, prefix: str = ""
    ) -> None:
        """Every number in `values` (nested dicts flattened with '/', booleans as 0/1); strings, lists and
        None are skipped."""
        if not prefix:
            try:
                numbers = array("d", values.values())  # all or nothing: raises on any non-number
            except (TypeError, OverflowError):
                numbers = None
            if numbers is not None:  # the common line, all numbers: C-level appends, codes cached per key set
                names = tuple(values)
                codes = self._key_sets.get(names)
                if codes is None:
                    codes = self._key_sets[names] = array("i", [self.code(k) for k in names])
                self._code.extend(codes)
                self._value.extend(numbers)
                self._step.extend(array("q", [step]) * len(numbers))
                self._time.extend(array("d", [wall_time]) * len(numbers))
                return
        for key, value in values.items():
            if isinstance(value, Real):
                with contextlib.suppress(OverflowError):  # an int beyond float range is no metric
                    self.add(step, prefix + key, float(value), wall_time)
            elif isinstance(value, dict):
                self.add_dict(step, value, wall_time, f"{prefix}{key}/")

    def take(self) -> Rows:
        """The rows so far as Rows; the buffer starts empty again (keys keep their codes)."""
        rows = Rows(
            list(self.keys),
            np.frombuffer(self._code, dtype=np.int32).copy(),
            np.frombuffer(self._step, dtype=np.int64).copy(),
            np.frombuffer(self._value, dtype=np.float64).copy(),
            np.frombuffer(self._time, dtype=np.float64).copy(),
        )
        self._code, self._step, self._value, self._time = array("i"), array("q"), array("d"), array("d")
        return rows
