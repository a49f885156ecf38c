"""RunWriter: the one writer of a run directory `<store>/<run_id>/` (see DESIGN.md, Run store).

Rows are buffered in memory per table and written as new immutable Parquet segments
`<run>/<table>/<seq>-<pid>-<uuid>.parquet`, each atomically, so readers in other processes never see a
partial file and a killed writer loses at most the unflushed rows.
"""

import contextlib
import importlib.metadata
import json
import math
import os
import platform
import re
import socket
import time
import traceback
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pyarrow as pa

from analysis import run_ids
from analysis.atomic import write_json_atomic, write_parquet_atomic
from analysis.errors import UsageError
from analysis.schema import EVENT_KINDS, RUN_STATUSES, SEVERITIES, TABLES
from analysis.segments import sweep_run

RUN_JSON = "run.json"
VERSIONED_PACKAGES = ("torch", "transformers", "duckdb", "pyarrow", "entropyscope")
HEARTBEAT_MIN_INTERVAL_S = 1.0
# A safety valve: flush whatever the step/time triggers say once this many rows wait in memory.
MAX_BUFFERED_ROWS = 500_000
_SEGMENT_NAME = re.compile(r"^(\d+)-")
_WARNED: set[tuple[str, int, int]] = set()  # versions of damaged run.json files already warned about


def read_run_json(run_dir: Path) -> dict[str, Any] | None:
    """A run's run.json as a dict; None when it is missing, unreadable or not an object (the last two warned
    once per version of the file: readers go on without the run's metadata)."""
    path = run_dir / RUN_JSON
    try:
        info = json.loads(path.read_text())
        if isinstance(info, dict):
            return info
        problem = f"a JSON {type(info).__name__}, not an object"
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:  # UnicodeDecodeError is a ValueError
        problem = f"{type(err).__name__}: {err}"
    with contextlib.suppress(OSError):
        st = path.stat()
        version = (str(path), st.st_mtime_ns, st.st_size)
        if version not in _WARNED:
            _WARNED.add(version)
            warnings.warn(f"skipping unreadable {path} ({problem})", RuntimeWarning, stacklevel=2)
    return None


def package_versions() -> dict[str, str]:
    """Python and installed package versions, read from metadata so torch is never imported here."""
    versions = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    return versions


def next_seq(run_dir: Path) -> int:
    """One past the highest segment number in the run, so a resumed run's segments sort after the old ones."""
    seqs = [
        int(m.group(1))
        for table in TABLES
        for p in (run_dir / table).glob("*.parquet")
        if (m := _SEGMENT_NAME.match(p.name))
    ]
    return max(seqs, default=0) + 1


def segment_name(seq: int) -> str:
    """Sequence first (readers order segments by name), then pid and a random tag: unique beside any writer."""
    return f"{seq:08d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.parquet"


def event_columns(
    events: Sequence[tuple[int, str, str, str, dict[str, Any] | None]], wall_time: float
) -> dict[str, list[Any]]:
    """Columns of the events table (run_id aside) for (step, kind, severity, message, payload) rows; events of
    one call get wall times a microsecond apart, so readers keep their order."""
    for _, kind, severity, _, _ in events:
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {kind!r}; valid kinds: {', '.join(EVENT_KINDS)}")
        if severity not in SEVERITIES:
            raise ValueError(f"unknown severity {severity!r}; valid: {', '.join(SEVERITIES)}")
    return {
        "step": [int(e[0]) for e in events],
        "wall_time": [wall_time + i * 1e-6 for i in range(len(events))],
        "kind": [e[1] for e in events],
        "severity": [e[2] for e in events],
        "message": [str(e[3]) for e in events],
        "payload": [json.dumps(e[4] or {}, default=str) for e in events],
    }


def write_events(run_dir: Path, events: Sequence[tuple[int, str, str, str, dict[str, Any] | None]]) -> Path:
    """Append events to a run as one new segment, from outside its writer (`watch` records alerts so)."""
    columns = {"run_id": [run_dir.name] * len(events), **event_columns(events, time.time())}
    table = pa.table(columns, schema=TABLES["events"])
    return write_parquet_atomic(run_dir / "events" / segment_name(next_seq(run_dir)), table)


class RunWriter:
    """Append-only writer of one run; use as a context manager so a crash marks the run 'failed'."""

    def __init__(
        self,
        store: str | Path,
        run_id: str,
        config: dict[str, Any],
        *,
        resume: bool = False,
        flush_every_s: float = 2.0,
        flush_every_steps: int = 5,
        meta: dict[str, Any] | None = None,
    ) -> None:
        """meta: more top-level run.json fields (an imported run's `source`)."""
        self.store = Path(store)
        self.run_id = run_id
        self.run_dir = run_ids.run_dir(self.store, run_id)  # refuses ids and links that leave the store
        self.flush_every_s = flush_every_s
        self.flush_every_steps = flush_every_steps
        meta_path = self.run_dir / RUN_JSON
        if meta_path.exists() and not resume:
            raise UsageError(
                f"run '{run_id}' already exists in {self.store}; pass --resume to continue it or choose another --run-id"
            )
        if resume and not meta_path.exists():
            raise UsageError(
                f"cannot resume run '{run_id}': it does not exist in {self.store} (no {RUN_JSON})"
            )
        now = time.time()
        # A damaged run.json must not block a resume: the segments are the data, run.json is rebuilt.
        previous = (read_run_json(self.run_dir) or {}) if resume else {}
        if resume:  # this is the run's only writer: a temp file left now is a killed writer's
            sweep_run(self.run_dir, temp_age_s=0)
        self._meta: dict[str, Any] = {
            "run_id": run_id,
            "config": config,
            "status": "running",
            "created": previous.get("created", now),
            "heartbeat": now,
            "last_step": previous.get("last_step"),
            "versions": package_versions(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            **(meta or {}),
        }
        self._buffers: dict[str, list[pa.Table]] = {table: [] for table in TABLES}
        self._buffered_rows = 0
        self._pending_steps: set[int] = set()
        self._last_flush = time.monotonic()
        self._last_heartbeat_write = -math.inf
        self._max_step: int | None = previous.get("last_step")
        self._seq = next_seq(self.run_dir)
        self._closed = False
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._write_meta()

    # ---- logging -------------------------------------------------------------------------------------

    def log_scalars(self, step: int, metrics: dict[str, float]) -> None:
        """One `steps` row per key; NaN and inf are stored as they are (they are the signal)."""
        if not metrics:
            return
        now = time.time()
        keys = list(metrics)
        self._append(
            "steps",
            {
                "step": [int(step)] * len(keys),
                "key": [str(k) for k in keys],
                "value": [float(metrics[k]) for k in keys],
                "wall_time": [now] * len(keys),
            },
        )
        self._see_step(step)
        self._pending_steps.add(int(step))
        due_time = time.monotonic() - self._last_flush >= self.flush_every_s
        if due_time or len(self._pending_steps) >= self.flush_every_steps:
            self.flush()

    def log_rows(self, step: Any, key: Any, value: Any, wall_time: Any) -> None:
        """Many `steps` rows at once, columnar (arrays or Arrow arrays), each with its own wall time: an
        import keeps the source's clock. Written at the next flush."""
        self._append("steps", {"step": step, "key": key, "value": value, "wall_time": wall_time})
        self._see_steps(step)

    def log_tokens(self, columns: dict[str, Sequence]) -> None:
        """Columnar per-token records; keys are the `tokens` columns except run_id."""
        self._append("tokens", columns)
        self._see_steps(columns.get("step", ()))

    def log_samples(self, rows: list[dict[str, Any]]) -> None:
        """One `samples` row per dict; keys are the `samples` columns except run_id."""
        if not rows:
            return
        names = [n for n in TABLES["samples"].names if n != "run_id"]
        missing = sorted({n for row in rows for n in names if n not in row})
        if missing:
            raise ValueError(f"samples rows lack {missing}; expected keys {names}")
        self._append("samples", {n: [row[n] for row in rows] for n in names})
        self._see_steps([row["step"] for row in rows])

    def log_hist(self, step: int, edges: Sequence[float], counts: Sequence[int]) -> None:
        """An entropy histogram: `counts[i]` values fell in [edges[i], edges[i+1])."""
        edges_a = np.asarray(edges, dtype=np.float64)
        counts_a = np.asarray(counts, dtype=np.int64)
        if edges_a.ndim != 1 or counts_a.ndim != 1 or len(edges_a) != len(counts_a) + 1:
            raise ValueError(
                f"log_hist needs n+1 edges for n counts, got {edges_a.shape} and {counts_a.shape}"
            )
        n = len(counts_a)
        self._append(
            "hists",
            {"step": [int(step)] * n, "bin_lo": edges_a[:-1], "bin_hi": edges_a[1:], "count": counts_a},
        )
        self._see_step(step)

    def log_event(
        self,
        step: int,
        kind: str,
        message: str,
        *,
        severity: str = "info",
        payload: dict[str, Any] | None = None,
    ) -> None:
        """Record an event and write it at once: readers (dashboard, `control`) wait on acks and errors."""
        row = event_columns([(step, kind, severity, message, payload)], time.time())
        self._append("events", row)
        self._flush_table("events")

    def set_meta(self, fields: dict[str, Any]) -> None:
        """More top-level run.json fields, written with the next heartbeat or close."""
        self._meta.update(fields)

    def heartbeat(self, step: int, *, force: bool = False) -> None:
        """Record liveness and progress in run.json; written at most once a second unless forced."""
        self._see_step(step)
        self._meta["last_step"] = int(step)
        self._meta["heartbeat"] = time.time()
        if force or time.monotonic() - self._last_heartbeat_write >= HEARTBEAT_MIN_INTERVAL_S:
            self._write_meta()

    # ---- flushing and lifecycle ----------------------------------------------------------------------

    def flush(self) -> None:
        """Write every non-empty buffer as a new segment."""
        for table in TABLES:
            self._flush_table(table)
        self._pending_steps.clear()
        self._last_flush = time.monotonic()

    def close(self, status: str = "finished") -> None:
        """Flush and record the final status; a second call does nothing."""
        if self._closed:
            return
        if status not in RUN_STATUSES:
            raise ValueError(f"unknown run status {status!r}; valid: {', '.join(RUN_STATUSES)}")
        try:
            self.flush()
        except BaseException:
            status = "failed"  # rows were lost: never report such a run as finished
            raise
        finally:
            self._closed = True
            self._meta["status"] = status
            self._meta["heartbeat"] = time.time()
            self._write_meta()

    def __enter__(self) -> "RunWriter":
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            self.close("finished")
            return
        # Record what still can be: on a full or read-only store these writes fail too, and their errors
        # must not hide the one that stopped the run.
        with contextlib.suppress(OSError):
            self.log_event(
                self._max_step if self._max_step is not None else 0,
                "error",
                f"{exc_type.__name__ if exc_type else 'Error'}: {exc}",
                severity="critical",
                payload={"traceback": "".join(traceback.format_exception(exc_type, exc, tb))},
            )
        with contextlib.suppress(OSError):
            self.close("failed")

    # ---- internals -----------------------------------------------------------------------------------

    def _append(self, table: str, columns: dict[str, Any]) -> None:
        if self._closed:
            raise RuntimeError(f"RunWriter for run '{self.run_id}' is closed")
        schema = TABLES[table]
        expected = [n for n in schema.names if n != "run_id"]
        if sorted(columns) != sorted(expected):
            raise ValueError(
                f"{table} columns {sorted(columns)} do not match the schema; expected {expected}"
            )
        n = len(columns[expected[0]])
        if n == 0:
            return
        arrays = [pa.array([self.run_id], pa.string()).take(np.zeros(n, dtype=np.int32))]  # no n-item list
        # pa.array converts lists and numpy arrays to the contract type, refusing lossy ones (1.5 -> int).
        arrays += [pa.array(columns[name], type=schema.field(name).type) for name in expected]
        self._buffers[table].append(pa.Table.from_arrays(arrays, schema=schema))
        self._buffered_rows += n
        if self._buffered_rows >= MAX_BUFFERED_ROWS:
            self.flush()

    def _flush_table(self, table: str) -> None:
        chunks = self._buffers[table]
        if not chunks:
            return
        data = pa.concat_tables(chunks)
        write_parquet_atomic(self.run_dir / table / segment_name(self._seq), data)
        self._seq += 1
        self._buffers[table] = []
        self._buffered_rows -= data.num_rows

    def _see_step(self, step: int) -> None:
        self._max_step = int(step) if self._max_step is None else max(self._max_step, int(step))

    def _see_steps(self, steps: Sequence[int]) -> None:
        if len(steps):
            self._see_step(int(np.max(np.asarray(steps))))

    def _write_meta(self) -> None:
        write_json_atomic(self.run_dir / RUN_JSON, self._meta)
        self._last_heartbeat_write = time.monotonic()
