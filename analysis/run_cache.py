"""Per-run values kept between reads, keyed by a fingerprint of the run's files, for stores of many runs.

Segments are immutable, so a run whose segments (names, sizes, mtimes) are the ones a value was computed
from gives the same value again: listing or watching a store of a thousand runs then reads only the runs
that changed. A cache lives in memory per store for the process (the dashboard, a polling watch) and in
`<store>/.cache/<name>` for the next process (the CLI), written atomically, so concurrent readers at worst
each recompute a run. A damaged, foreign or outdated file is ignored; a store we cannot write (a read-only
mount) just gets no file.
"""

import json
import os
import threading
from pathlib import Path
from typing import Any

from analysis.atomic import write_bytes_atomic
from analysis.segments import SUPERSEDED, superseded

CACHE_DIR = ".cache"

Fingerprint = list[Any]
_memory: dict[Path, dict[str, Any]] = {}  # cache file -> {run_id: [fingerprint, value]} (this version only)
_memory_lock = threading.Lock()


def segments_fingerprint(run_dir: Path, table: str) -> Fingerprint | None:
    """[name, size, mtime_ns] of each segment of the table a reader scans (analysis.segments.live_segments);
    None when the folder changed while listed (a compaction), so the run is read now and not cached."""
    table_dir = run_dir / table
    if not table_dir.is_dir():
        return []
    try:
        with os.scandir(table_dir) as it:
            entries = sorted(it, key=lambda e: e.name)
        gone = superseded(table_dir) if any(e.name == SUPERSEDED for e in entries) else {}
        # One stat per file from its directory entry; a file removed since the listing raises.
        return [
            [e.name, st.st_size, st.st_mtime_ns]
            for e in entries
            if e.name.endswith(".parquet") and not e.name.startswith(".") and e.name not in gone
            and not e.is_symlink() and (st := e.stat())
        ]  # fmt: skip
    except OSError:
        return None


def _load_file(path: Path, version: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != version or not isinstance(data.get("runs"), dict):
        return {}
    return {k: v for k, v in data["runs"].items() if isinstance(v, list) and len(v) == 2}


class RunCache:
    """One cache of a store: `get` the values still valid, `put` new ones, `save` when done.

    `version` names what the values depend on besides the fingerprinted files (code, settings): a cache
    written under another version is ignored. Values must be JSON (NaN and infinities are kept).
    """

    def __init__(self, store: Path, name: str, version: str) -> None:
        self.path = store / CACHE_DIR / name
        self.version = version
        with _memory_lock:
            known = _memory.get(self.path)
        if known is not None and known.get("version") == version:
            self._runs: dict[str, Any] = dict(known["runs"])
        else:
            self._runs = _load_file(self.path, version)
        self._changed = False

    def get(self, run_id: str, fp: Fingerprint | None) -> Any:
        """The run's value when it was computed from files with this fingerprint, else None."""
        entry = self._runs.get(run_id)
        return entry[1] if entry is not None and fp is not None and entry[0] == fp else None

    def put(self, run_id: str, fp: Fingerprint | None, value: Any) -> None:
        if fp is not None:
            self._runs[run_id] = [fp, value]
            self._changed = True

    def save(self, run_ids: list[str]) -> None:
        """Keep the entries of `run_ids` (runs since removed drop out); write the file if anything changed."""
        kept = {r: self._runs[r] for r in run_ids if r in self._runs}
        self._changed |= len(kept) != len(self._runs)
        self._runs = kept
        with _memory_lock:
            _memory[self.path] = {"version": self.version, "runs": kept}
        if not self._changed:
            return
        self._changed = False
        try:
            text = json.dumps({"version": self.version, "runs": kept}, separators=(",", ":"))
            write_bytes_atomic(self.path, text.encode())
        except OSError:
            pass  # a read-only store: the next process recomputes, nothing is lost
