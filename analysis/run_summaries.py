"""Per-run summaries (step count, H0, final entropy and reward) kept between reads, keyed by the run's segments.

Listing a store of a thousand runs must not scan every step of every run each time: segments are immutable,
so a run whose `steps/` segments (names, sizes, mtimes) are the ones its summary was computed from has the
same summary. Summaries live in memory per store for the process (the dashboard) and in
`<store>/.cache/run_summaries.json` for the next one (the CLI), written atomically, so concurrent readers
at worst each recompute a run; a damaged, foreign or outdated file is ignored. A store we cannot write
(read-only mount) just gets no file.
"""

import json
import numbers
import os
import threading
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.atomic import write_bytes_atomic
from analysis.metrics import FINAL_TAIL
from analysis.schema import ENTROPY_MEAN, REWARD_MEAN
from analysis.segments import SUPERSEDED, superseded

CACHE_FILE = Path(".cache") / "run_summaries.json"
SUMMARY_COLUMNS = ("n_steps", "max_step", "h0", "entropy", "entropy_last", "reward")
# What a summary depends on besides the segments: a change of any of these outdates every cached one.
_VERSION = f"1:{ENTROPY_MEAN}:{REWARD_MEAN}:{FINAL_TAIL}"

Fingerprint = list[list[Any]]
_memory: dict[str, dict[str, Any]] = {}  # resolved store path -> {run_id: [fingerprint, summary]}
_memory_lock = threading.Lock()


def fingerprint(run_dir: Path) -> Fingerprint | None:
    """[name, size, mtime_ns] of each steps segment a reader scans (analysis.segments.live_segments);
    None when the folder changed while listed (a compaction), so the run is read now and not cached."""
    table_dir = run_dir / "steps"
    if not table_dir.is_dir():
        return []
    try:
        with os.scandir(table_dir) as it:
            entries = sorted(it, key=lambda e: e.name)
        gone = superseded(table_dir) if any(e.name == SUPERSEDED for e in entries) else {}
        # One stat per file from the directory entry; a file removed since the listing (compaction) raises.
        return [
            [e.name, st.st_size, st.st_mtime_ns]
            for e in entries
            if e.name.endswith(".parquet") and not e.name.startswith(".") and e.name not in gone
            and not e.is_symlink() and (st := e.stat())
        ]  # fmt: skip
    except OSError:
        return None


def _load_file(store: Path) -> dict[str, Any]:
    try:
        data = json.loads((store / CACHE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    if (
        not isinstance(data, dict)
        or data.get("version") != _VERSION
        or not isinstance(data.get("runs"), dict)
    ):
        return {}
    return {
        k: v
        for k, v in data["runs"].items()
        if isinstance(v, list) and len(v) == 2 and isinstance(v[1], dict)
    }


class SummaryCache:
    """The cached summaries of one store: `get` those still valid, `put` new ones, `save` when done."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self._key = str(store.resolve())
        with _memory_lock:
            known = _memory.get(self._key)
        self._runs: dict[str, Any] = dict(known) if known is not None else _load_file(store)
        self._changed = False

    def get(self, run_id: str, fp: Fingerprint | None) -> dict[str, Any] | None:
        entry = self._runs.get(run_id)
        if entry is None or fp is None or entry[0] != fp:
            return None
        return {c: entry[1].get(c) for c in SUMMARY_COLUMNS}

    def put(self, run_id: str, fp: Fingerprint | None, summary: dict[str, Any]) -> None:
        if fp is None:
            return
        self._runs[run_id] = [fp, {c: _plain(summary.get(c)) for c in SUMMARY_COLUMNS}]
        self._changed = True

    def save(self, run_ids: list[str]) -> None:
        """Keep the entries of `run_ids` (runs since removed drop out); write the file if anything changed."""
        kept = {r: self._runs[r] for r in run_ids if r in self._runs}
        self._changed |= len(kept) != len(self._runs)
        with _memory_lock:
            _memory[self._key] = kept
        if not self._changed:
            return
        try:
            text = json.dumps({"version": _VERSION, "runs": kept}, separators=(",", ":"))
            write_bytes_atomic(self.store / CACHE_FILE, text.encode())
        except OSError:
            pass  # a read-only store: summaries are recomputed by the next process, nothing is lost


def _plain(value: Any) -> int | float | None:
    """A JSON-safe number: None for missing or NaN (JSON has no NaN); infinities survive Python's json."""
    if value is None or pd.isna(value):
        return None
    return int(value) if isinstance(value, numbers.Integral) else float(value)
