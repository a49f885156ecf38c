"""Export one run as a single file to share: a DuckDB database or a wide CSV of its step metrics."""

import json
import os
import uuid
from pathlib import Path

import duckdb

from analysis import run_ids
from analysis.atomic import write_bytes_atomic
from analysis.errors import UsageError
from analysis.schema import TABLES
from analysis.store_reader import StoreReader, register_views

EXPORT_SUFFIXES = (".duckdb", ".csv")
_RUN_COLUMNS = (
    ("run_id", "VARCHAR"), ("status", "VARCHAR"), ("created", "DOUBLE"), ("heartbeat", "DOUBLE"),
    ("last_step", "BIGINT"), ("config", "VARCHAR"), ("versions", "VARCHAR"), ("host", "VARCHAR"), ("pid", "BIGINT"),
)  # fmt: skip


def export_run(store: str | Path, run_id: str, to: str | Path) -> Path:
    """Write run `run_id` of `store` to `to` (.duckdb: every table plus `run`; .csv: one row per step)."""
    run_ids.run_dir(store, run_id)  # a bad id or a run linked out of the store: refused before any read
    to = Path(to)
    suffix = to.suffix.lower()
    if suffix not in EXPORT_SUFFIXES:
        raise UsageError(f"cannot export to {to}: the file name must end in {' or '.join(EXPORT_SUFFIXES)}")
    if to.exists():
        raise UsageError(f"{to} already exists; remove it or choose another --to file")
    reader = StoreReader(store)
    try:
        info = reader.run_info(run_id)
        if suffix == ".csv":
            _export_csv(reader, run_id, to)
        else:
            _export_duckdb(reader, run_id, info, to)
    finally:
        reader.close()
    return to


def _export_csv(reader: StoreReader, run_id: str, to: Path) -> None:
    steps = reader.table("steps", [run_id])
    wide = steps.pivot(index="step", columns="key", values="value")
    wide.columns.name = None
    wide.insert(0, "wall_time", steps.groupby("step")["wall_time"].max())
    write_bytes_atomic(to, wide.reset_index().to_csv(index=False).encode())


def _export_duckdb(reader: StoreReader, run_id: str, info: dict, to: Path) -> None:
    # Built under a temp name and renamed, so an interrupted export leaves no half-filled database.
    # The views live in an in-memory connection; only the tables go into the attached file.
    to.parent.mkdir(parents=True, exist_ok=True)
    tmp = to.with_name(f".{to.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with duckdb.connect() as con:
            register_views(con, {t: reader.segment_files(t, [run_id]) for t in TABLES})
            con.execute("ATTACH ? AS out", [str(tmp)])
            for table in TABLES:
                con.execute(f"CREATE TABLE out.{table} AS SELECT * FROM {table} ORDER BY step")
            con.execute(f"CREATE TABLE out.run ({', '.join(f'{c} {t}' for c, t in _RUN_COLUMNS)})")
            row = {c: info.get(c) for c, _ in _RUN_COLUMNS} | {"run_id": run_id}
            for col in ("config", "versions"):
                row[col] = json.dumps(info.get(col), default=str)
            con.execute(
                f"INSERT INTO out.run VALUES ({', '.join('?' for _ in _RUN_COLUMNS)})", list(row.values())
            )
            con.execute("DETACH out")
        if to.exists():
            raise UsageError(f"{to} appeared while exporting; remove it or choose another --to file")
        os.replace(tmp, to)
    finally:
        tmp.unlink(missing_ok=True)
        Path(f"{tmp}.wal").unlink(missing_ok=True)
