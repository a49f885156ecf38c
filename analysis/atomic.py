"""Crash-safe file writes: a reader sees the old file or the whole new one, never a partial one.

Each write goes to a temp name in the same directory (so the rename stays on one filesystem), is fsynced,
renamed over the target with os.replace, and the directory is fsynced so the rename itself survives a
power cut. Temp names start with '.' and end in '.tmp', so globs for '*.parquet' or '*.json' never see them.
"""

import errno
import json
import os
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from analysis.errors import STORE_FAULTS


def store_fault(err: BaseException, path: str | Path) -> OSError | None:
    """The disk-full or read-only error behind `err`, raised while writing under `path`, else None.

    torch.save (RuntimeError) and safetensors (SafetensorError) hide errno, so for those the filesystem
    itself is asked; call this before removing the partial file, or the space it held looks free."""
    if isinstance(err, OSError):
        return err if err.errno in STORE_FAULTS else None
    try:
        st = os.statvfs(path)
    except (OSError, AttributeError):  # AttributeError: no statvfs (Windows)
        return None
    for code, hit in ((errno.EROFS, st.f_flag & os.ST_RDONLY), (errno.ENOSPC, st.f_bavail == 0)):
        if hit:
            return OSError(code, os.strerror(code), str(path))
    return None


def fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable."""
    # Not every platform can open a directory (Windows); there the rename is as durable as it gets.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno in STORE_FAULTS and not err.filename:
            raise OSError(err.errno, os.strerror(err.errno), str(path)) from err  # pyarrow's names no file
        raise
    fsync_dir(path.parent)
    return path


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically and durably."""
    return _write_atomic(path, lambda f: f.write(data))


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Write `obj` as indented JSON; values JSON cannot encode (paths, numpy scalars) become strings."""
    text = json.dumps(obj, indent=2, default=str) + "\n"
    return write_bytes_atomic(path, text.encode())


def write_parquet_atomic(path: str | Path, table: pa.Table) -> Path:
    """Write `table` as one Parquet file (zstd) atomically and durably."""
    return _write_atomic(path, lambda f: pq.write_table(table, f, compression="zstd"))


def write_parquet_parts_atomic(path: str | Path, schema: pa.Schema, parts: Iterable[pa.Table]) -> Path:
    """Write `parts` one after another as one Parquet file (zstd), atomically and durably; memory holds
    one part at a time, so a long run's segments can be merged whatever their total size."""

    def write(f: IO[bytes]) -> None:
        with pq.ParquetWriter(f, schema, compression="zstd") as writer:
            for part in parts:
                writer.write_table(part)

    return _write_atomic(path, write)
