"""Per-run values kept between reads, keyed by a fingerprint of the run's files, for stores of many runs.

Segments are immutable, so a run whose segments (names, sizes, mtimes) are the ones a value was computed
from gives the same value again: listing or watching a store of a thousand runs then reads only the runs
that changed. A cache lives in memory per store for the process (the dashboard, a polling watch) and in
`<store>/.cache/<name>` for the next process (the CLI), written atomically, so concurrent readers at worst
each recompute a run. A damaged, foreign or outdated file is ignored; a store we cannot write (a read-only
mount) just gets no file.

An ended run also carries its values in `<run>/.summary.json` (RUN_FILE), written once by whoever ended it
(analysis.run_seal): `{cache name: [version, fingerprint, value]}`. A cache that misses a run takes the
run's entry when version and fingerprint match, so a store written by entropyscope's own tools is cheap on
its very first listing too; a missing, damaged or outdated entry just means the run is read as before.
"""

import json
import os
import threading
from pathlib import Path
from typing import Any

from analysis.atomic import write_bytes_atomic
from analysis.segments import SUPERSEDED, superseded

CACHE_DIR = ".cache"
RUN_FILE = ".summary.json"
"""In a run's folder: its sealed values, per cache name (see the module docstring)."""

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


def read_run_file(run_dir: Path) -> dict[str, Any]:
    """A run's sealed entries (RUN_FILE); {} when absent or damaged."""
    try:
        data = json.loads((run_dir / RUN_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_run_file(run_dir: Path, entries: dict[str, list[Any]]) -> bool:
    """Write a run's sealed entries atomically; False on a store we cannot write (nothing is lost)."""
    try:
        write_bytes_atomic(run_dir / RUN_FILE, json.dumps(entries, separators=(",", ":")).encode())
    except OSError:
        return False
    return True


class RunCache:
    """One cache of a store: `get` the values still valid, `put` new ones, `save` when done.

    `version` names what the values depend on besides the fingerprinted files (code, settings): a cache
    written under another version is ignored. Values must be JSON (NaN and infinities are kept).
    """

    def __init__(self, store: Path, name: str, version: str) -> None:
        self.store = store
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
        """The run's value when it was computed from files with this fingerprint (here, or in the run's
        sealed entries), else None."""
        if fp is None:
            return None
        entry = self._runs.get(run_id)
        if entry is not None and entry[0] == fp:
            return entry[1]
        sealed = read_run_file(self.store / run_id).get(self.path.name)
        if isinstance(sealed, list) and len(sealed) == 3 and sealed[0] == self.version and sealed[1] == fp:
            self.put(run_id, fp, sealed[2])  # kept in the store's cache file too: one file to read next time
            return sealed[2]
        return None

    def put(self, run_id: str, fp: Fingerprint | None, value: Any) -> None:
        if fp is not None:
            self._runs[run_id] = [fp, value]
            self._changed = True

    def save(self, run_ids: list[str] | None) -> None:
        """Keep the entries of `run_ids`, every run of the store (runs since removed drop out), or all entries
        (None: the caller read some runs only); write the file if anything changed."""
        kept = dict(self._runs) if run_ids is None else {r: self._runs[r] for r in run_ids if r in self._runs}
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
