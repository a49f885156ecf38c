"""`entropyscope import`: another tool's logs -> runs of the store, once or following a live log.

A source is read whole and mapped before anything is written, so bad input leaves the store untouched.
The run id defaults to a stable name derived from the source, and only rows whose (step, key) is new or
whose value changed are written, so importing the same source again adds nothing; within a source, and
against the store, the later value of a repeated step wins (a resumed run repeats steps). Rows keep the
source's wall time where it has one (TensorBoard, MLflow), else get the import time.
"""

import hashlib
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa

from analysis import run_ids
from analysis.errors import UsageError
from analysis.importers.detect import FORMATS, detect_format, json_lines
from analysis.importers.names import KeyMapper, map_key
from analysis.importers.rows import Rows
from analysis.store_writer import RunWriter, read_run_json

FOLLOW_INTERVAL_S = 2.0


class Source(Protocol):
    kind: str
    trainer: str | None
    name: str
    location: str

    def info(self) -> dict[str, Any]: ...
    def read(self, final: bool = True) -> Rows: ...


# ---- which source --------------------------------------------------------------------------------------


def open_sources(
    source: str, fmt: str = "auto", step_key: str | None = None, step_every: int | None = None
) -> list[Source]:
    """The runs SOURCE holds (one, except an MLflow experiment or a TensorBoard tree of several runs)."""
    from analysis.importers import console, mlflow_runs, tabular, tb_events, trl_state, wandb_offline

    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}; formats: {', '.join(FORMATS)}")
    fmt = detect_format(source) if fmt == "auto" else fmt
    if step_every is not None and fmt != "hf-console":
        raise UsageError(
            f"--step-every numbers HF console logs; {source} is {fmt}, whose rows carry their steps"
        )
    if fmt == "mlflow":
        return list(mlflow_runs.open_mlflow(source))
    path = Path(source)
    if not path.exists():
        raise UsageError(f"no such file or directory: {path}")
    name = path.stem if path.is_file() else path.resolve().name
    if fmt == "tensorboard":
        dirs = [path] if path.is_file() else tb_events.run_dirs(path)
        if not dirs:
            raise UsageError(f"no TensorBoard event files ({tb_events.EVENT_GLOB}) in {path}")
        return [tb_events.TensorBoardSource(d, _tb_name(path, d, name)) for d in dirs]
    if fmt == "trl":
        root = trl_state.run_root(path)  # the output folder, a checkpoint and the file inside: one run
        return [trl_state.TrlStateSource(path, root.name if root.is_dir() else name)]
    if fmt == "wandb":
        return wandb_offline.open_wandb(path)
    if path.is_dir():
        raise UsageError(f"{path} is a directory; {fmt} reads a file")
    if fmt == "csv":
        return [tabular.CsvSource(path, name, step_key)]
    if fmt in ("hf-console", "openrlhf"):
        return [console.HfConsoleSource(path, name, fmt, step_every)]
    if fmt == "verl" and not json_lines(path):
        return [tabular.VerlConsoleSource(path, name)]
    return [tabular.JsonlSource(path, name, fmt, step_key)]


def _tb_name(root: Path, run_dir: Path, name: str) -> str:
    if run_dir == root or root.is_file():
        return name
    return f"{name}-{run_dir.relative_to(root).as_posix()}"


def default_run_id(source: Source) -> str:
    """`kind-name-hash`: readable, and stable for the same source (the hash is of its absolute location)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", source.name).strip("-.")[:60] or "run"
    digest = hashlib.sha1(source.location.encode()).hexdigest()[:6]
    return f"{source.kind}-{slug}-{digest}"


# ---- rows -> store ---------------------------------------------------------------------------------------


@dataclass
class Mapped:
    """A batch after name mapping and de-duplication: one row per (key, step), the later value kept."""

    keys: list[str]
    code: np.ndarray
    step: np.ndarray
    value: np.ndarray
    wall_time: np.ndarray

    def __len__(self) -> int:
        return len(self.step)


def map_rows(rows: Rows, table: dict[str, str], mapped: dict[str, str]) -> Mapped:
    """Our names for the rows' keys (recording renamed ones in `mapped`), the last row per (key, step)."""
    out_keys: list[str] = []
    index: dict[str, int] = {}
    lookup = np.empty(len(rows.keys), dtype=np.int32)
    for i, raw in enumerate(rows.keys):
        ours = map_key(table, raw)
        if ours != raw:
            mapped[raw] = ours
        if ours not in index:
            index[ours] = len(out_keys)
            out_keys.append(ours)
        lookup[i] = index[ours]
    code = lookup[rows.code] if len(rows) else rows.code
    n = len(code)
    order = np.lexsort((np.arange(n), rows.step, code))  # by key, step, then position in the source
    c, s = code[order], rows.step[order]
    last = np.ones(n, dtype=bool)
    last[:-1] = (c[1:] != c[:-1]) | (s[1:] != s[:-1])
    keep = order[last]
    return Mapped(out_keys, code[keep], rows.step[keep], rows.value[keep], rows.wall_time[keep])


def _stored_steps(store: Path, run_id: str) -> pd.DataFrame:
    from analysis.store_reader import StoreReader

    reader = StoreReader(store)
    try:
        return reader.query('SELECT "key", step, "value", wall_time FROM steps', [], ["steps"], [run_id])
    finally:
        reader.close()


def new_rows(batch: Mapped, store: Path, run_id: str) -> Mapped:
    """The rows of `batch` that the stored run lacks or holds with another value; a changed value gets a
    wall time after the stored one, so it wins wherever the store resolves repeated steps."""
    stored = _stored_steps(store, run_id)
    if stored.empty or not len(batch):
        return batch
    s_code = pd.Categorical(stored["key"], categories=batch.keys).codes.astype(np.int64)  # -1: not in batch
    known = s_code >= 0
    lo = int(min(batch.step.min(), stored["step"].min()))
    span = int(max(batch.step.max(), stored["step"].max())) - lo + 1
    s_id = s_code[known] * span + (stored["step"].to_numpy()[known] - lo)
    s_val, s_time = stored["value"].to_numpy()[known], stored["wall_time"].to_numpy()[known]
    order = np.argsort(s_id)
    s_id, s_val, s_time = s_id[order], s_val[order], s_time[order]
    b_id = batch.code.astype(np.int64) * span + (batch.step - lo)
    pos = np.clip(np.searchsorted(s_id, b_id), 0, max(len(s_id) - 1, 0))
    hit = (s_id[pos] == b_id) if len(s_id) else np.zeros(len(b_id), dtype=bool)
    same = hit & ((s_val[pos] == batch.value) | (np.isnan(s_val[pos]) & np.isnan(batch.value)))
    keep = ~same
    wall = batch.wall_time.copy()
    changed = hit & keep
    wall[changed] = np.fmax(wall[changed], s_time[pos[changed]] + 1e-6)
    return Mapped(batch.keys, batch.code[keep], batch.step[keep], batch.value[keep], wall[keep])


def write_batch(writer: RunWriter, batch: Mapped) -> None:
    if not len(batch):
        return
    keys = pa.DictionaryArray.from_arrays(pa.array(batch.code), pa.array(batch.keys, pa.string()))
    wall = np.where(np.isnan(batch.wall_time), time.time(), batch.wall_time)
    writer.log_rows(batch.step, keys.cast(pa.string()), batch.value, wall)


@dataclass
class ImportedRun:
    """One source's run in the store, and what the import did to it."""

    source: Source
    run_id: str
    mapper: KeyMapper
    rows_read: int = 0
    rows_written: int = 0
    last_step: int = -(1 << 62)
    trainer: str | None = None
    decided: bool = False  # the trainer (so the name table) is fixed once the source's first keys are seen
    mapped: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def meta(self) -> dict[str, Any]:
        """run.json fields of an imported run: where it came from and which names were mapped."""
        where = "uri" if self.source.kind == "mlflow" else "path"
        source = {
            "kind": self.source.kind,
            where: self.source.location,
            "trainer": self.trainer,
            **self.info.get("source", {}),
        }
        return {"source": source, "mapped_keys": dict(sorted(self.mapped.items()))}

    def line(self) -> str:
        """What the import did, in one line."""
        source = self.meta()["source"]
        trainer = f" ({source['trainer']})" if source["trainer"] not in (None, self.source.kind) else ""
        return (
            f"{self.run_id}: {self.rows_read} rows read, {self.rows_written} new; {len(self.mapped)} names mapped; "
            f"from {self.source.kind}{trainer} {self.source.location}"
        )

    def take(self, rows: Rows) -> Mapped:
        """The rows under our names; the first keys decide the trainer where the format does not say it: a
        signature name of one trainer, else the family the format belongs to (HF console: transformers)."""
        if not self.decided:
            self.trainer = self.source.trainer or self.mapper.trainer(rows.keys)
            self.trainer = self.trainer or getattr(self.source, "family", None)
            self.decided = bool(rows.keys)
        self.rows_read += len(rows)
        return map_rows(rows, self.mapper.table(self.trainer), self.mapped)


def _check_target(store: Path, run_id: str, source: Source) -> dict[str, Any] | None:
    """The run's recorded source when it exists (holding this same source), None when there is no such run;
    UsageError when it holds anything else."""
    path = run_ids.run_dir(store, run_id)  # before anything is read: the id must stay in the store
    if not path.exists():
        return None
    info = read_run_json(path) or {}
    held = info.get("source") if isinstance(info.get("source"), dict) else {}
    location = held.get("uri", held.get("path"))
    if held.get("kind") != source.kind or location != source.location:
        what = f"{held.get('kind')} {location}" if held else "a run of its own"
        raise UsageError(
            f"run {run_id!r} in {store} holds {what}, not {source.kind} {source.location}; pass another --run-id"
        )
    return held


def _check_steps(run: ImportedRun, held: dict[str, Any], store: Path) -> None:
    """A console log numbered another way than the stored run was (another --step-every) would put the same
    logs at other steps beside the stored ones: refused."""
    steps = run.meta()["source"].get("steps")
    if held.get("steps") not in (None, steps):
        raise UsageError(
            f"run {run.run_id!r} in {store} was imported with {held['steps']}; this import has {steps}: "
            "pass the same --step-every, or another --run-id"
        )


def plan(
    source: str,
    *,
    store: str | Path,
    run_id: str | None = None,
    fmt: str = "auto",
    step_key: str | None = None,
    step_every: int | None = None,
    map_path: str | Path | None = None,
    final: bool = True,
) -> list[tuple[ImportedRun, Mapped, bool]]:
    """Read and map every run of SOURCE, nothing written yet: (run, rows to write, run exists already).
    final: the log is complete (a last line without its newline is read too, where it parses whole), and
    a source that yields no rows is an error (under --follow its rows may come later)."""
    if run_id is not None:
        run_ids.check_run_id(run_id)
    if step_every is not None and step_every < 1:
        raise UsageError(f"--step-every must be a whole number of at least 1, got {step_every}")
    mapper = KeyMapper(map_path)
    sources = open_sources(source, fmt, step_key, step_every)
    if run_id is not None and len(sources) > 1:
        raise UsageError(f"{source} holds {len(sources)} runs; --run-id names one (leave it out for all)")
    plans = []
    for src in sources:
        run = ImportedRun(src, run_id or default_run_id(src), mapper)
        held = _check_target(Path(store), run.run_id, src)
        exists = held is not None
        batch = run.take(src.read(final=final))
        run.info = src.info()
        if exists:
            _check_steps(run, held, Path(store))
        if final and not run.rows_read:
            if len(sources) > 1:
                continue  # one empty run of an experiment or a tree: the others are still imported
            raise UsageError(
                f"{source}: no metric rows in it, read as {src.kind} (another format? pass --format); "
                "nothing written"
            )
        if exists:
            batch = new_rows(batch, Path(store), run.run_id)
        plans.append((run, batch, exists))
    if not plans:
        raise UsageError(f"{source}: none of its {len(sources)} runs holds metric rows; nothing written")
    return plans


def _open_writer(store: str | Path, run: ImportedRun, exists: bool) -> RunWriter:
    config = run.info.get("config", {})
    return RunWriter(store, run.run_id, config, resume=exists, meta=run.meta(), flush_every_steps=1 << 62)


def import_source(source: str, *, store: str | Path, **options: Any) -> list[ImportedRun]:
    """Import every run of SOURCE into `store` once (options: run_id, fmt, step_key, map_path)."""
    from analysis.run_seal import seal_run  # DuckDB and the alert rules: imported only when writing

    plans = plan(source, store=store, **options)
    for run, batch, exists in plans:
        with _open_writer(store, run, exists) as writer:
            write_batch(writer, batch)
            run.rows_written += len(batch)
            if len(batch):
                writer.heartbeat(int(batch.step.max()))
        seal_run(writer.run_dir)  # its listing values: the first listing of the store reads no segment of it
    return [run for run, _, _ in plans]


def follow_source(
    source: str,
    *,
    store: str | Path,
    stop: threading.Event | None = None,
    interval_s: float = FOLLOW_INTERVAL_S,
    on_poll: Callable[[list[ImportedRun]], None] | None = None,
    **options: Any,
) -> list[ImportedRun]:
    """Import SOURCE, then keep importing what is appended to it every `interval_s` until `stop` is set
    (or Ctrl-C). The run is marked running meanwhile; its heartbeat moves when new rows arrive, so a log
    that stops growing looks stalled, as its trainer would. It is marked finished at the end."""
    from analysis.compact import compact_run
    from analysis.run_seal import seal_run

    stop = stop or threading.Event()
    plans = plan(source, store=store, final=False, **options)
    writers: list[RunWriter] = []
    status = "failed"
    try:
        for run, batch, exists in plans:
            writers.append(_open_writer(store, run, exists))
            _write_live(writers[-1], run, batch)
        while not stop.wait(interval_s):
            for (run, _, _), writer in zip(plans, writers, strict=True):
                _write_live(writer, run, run.take(run.source.read(final=False)))
            if on_poll is not None:
                on_poll([run for run, _, _ in plans])
        status = "finished"
    except KeyboardInterrupt:
        status = "finished"
    finally:
        for writer in writers:
            writer.close(status)
            if status == "finished":
                compact_run(writer.run_dir)  # a poll's rows per segment: merge them as the trainer does
            seal_run(writer.run_dir)
    return [run for run, _, _ in plans]


def _write_live(writer: RunWriter, run: ImportedRun, batch: Mapped) -> None:
    if not len(batch):
        return
    write_batch(writer, batch)
    writer.flush()
    run.rows_written += len(batch)
    run.last_step = max(run.last_step, int(batch.step.max()))
    run.info = run.source.info()  # a console log's step interval is known once its first dict is read
    writer.set_meta(run.meta())  # new keys may have brought new mapped names
    writer.heartbeat(run.last_step, force=True)
