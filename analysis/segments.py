"""A table folder's segments: which are live, which a compaction superseded, and when they are removed.

Compaction writes the merged segment and records the parts it replaced in the folder's `.superseded.json`
(name -> unix time). The parts stay where they are, so a reader that listed them a moment before can still
open them: StoreReader and `watch` skip superseded parts from then on, and the deduplicating views of
analysis.store_views show their rows once. `sweep_run` deletes parts superseded more than `grace_s` ago,
and temp files that no writer can still be writing; it runs when `entropyscope compact` does, when a run is
resumed and when a run finishes, never while another process may be listing those files for a long query.
"""

import contextlib
import json
import time
from pathlib import Path

from analysis.atomic import write_json_atomic
from analysis.schema import TABLES

SUPERSEDED = ".superseded.json"
GRACE_S = 60.0
"""Seconds a superseded part outlives its compaction: far longer than any reader's list-then-open."""


def superseded(table_dir: Path) -> dict[str, float]:
    """Parts of the folder a compaction merged, with the time it did; {} when none (or unreadable)."""
    try:
        data = json.loads((table_dir / SUPERSEDED).read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): float(v) for k, v in data.items()} if isinstance(data, dict) else {}


def live_segments(table_dir: Path) -> list[Path]:
    """The folder's segments a reader should scan, in name (= write) order: finished, not superseded, and
    not a link (writers never make one; it could lead out of the store)."""
    gone = superseded(table_dir)
    return [
        p
        for p in sorted(table_dir.glob("*.parquet"))
        if not p.name.startswith(".") and p.name not in gone and not p.is_symlink()
    ]


def mark_superseded(table_dir: Path, names: list[str], now: float | None = None) -> None:
    """Record `names` as merged into the folder's compacted segment (atomically, beside earlier records)."""
    now = time.time() if now is None else now
    write_json_atomic(table_dir / SUPERSEDED, superseded(table_dir) | dict.fromkeys(names, now))


def _sweep_table(table_dir: Path, grace_s: float, now: float) -> int:
    gone = superseded(table_dir)
    expired = [name for name, at in gone.items() if now - at >= grace_s]
    for name in expired:
        with contextlib.suppress(FileNotFoundError):
            (table_dir / name).unlink()
    keep = {k: v for k, v in gone.items() if k not in expired}
    if not expired:
        return 0
    if keep:
        write_json_atomic(table_dir / SUPERSEDED, keep)
    else:
        (table_dir / SUPERSEDED).unlink(missing_ok=True)
    return len(expired)


def sweep_run(run_dir: Path, grace_s: float = GRACE_S, temp_age_s: float | None = None) -> int:
    """Delete the run's parts superseded at least `grace_s` ago and, when `temp_age_s` is given, its temp
    files at least that old (0: every one, when no writer of this run is alive); returns files removed."""
    now = time.time()
    removed = 0
    for table in TABLES:
        table_dir = run_dir / table
        if table_dir.is_dir():
            removed += _sweep_table(table_dir, grace_s, now)
    if temp_age_s is not None:
        for tmp in run_dir.rglob(".*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                if now - tmp.stat().st_mtime >= temp_age_s:
                    tmp.unlink()
                    removed += 1
    return removed
