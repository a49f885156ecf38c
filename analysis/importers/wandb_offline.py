"""W&B offline runs (`wandb/offline-run-*/run-*.wandb`) -> rows, params and tags.

A `.wandb` file is wandb's LevelDB-style record log: a 7-byte header (`:W&B`, magic 0xBEE1, version 0), then
32 KiB blocks of chunks, each with a CRC-32 (of its type byte and data), a length and a type (full, or the
first, middle or last part of a record that spans blocks); each record is a protobuf `Record` of the wandb
package (wandb.proto.wandb_internal_pb2), which this module uses to decode them. History records become rows;
the config record becomes the run's config. The step is the logger's own step metric when the row has one
(`train/global_step`, as HF's and OpenRLHF's W&B loggers log it, or `global_step`), else W&B's `_step`.
Reading stops at a chunk that is incomplete or fails its CRC (a run still being written) and resumes there.
"""

import json
import struct
import zlib
from pathlib import Path
from typing import Any

from analysis.errors import UsageError
from analysis.importers.rows import RowBuffer, Rows

HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
BLOCK = 32 * 1024
CHUNK_HEADER = 7  # crc32 (4), length (2), type (1)
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4
STEP_KEYS = ("train/global_step", "global_step", "eval/global_step")


def _records_pb2() -> Any:
    try:
        from wandb.proto import wandb_internal_pb2
    except ImportError:
        raise UsageError(
            "reading W&B offline runs needs the wandb package: pip install 'entropyscope[wandb]'"
        ) from None
    return wandb_internal_pb2


def run_files(path: Path) -> list[Path]:
    """The `.wandb` files of the offline runs under `path` (a run folder, a `wandb/` folder, or the file)."""
    if path.is_file():
        return [path] if path.suffix == ".wandb" else []
    return sorted(path.glob("run-*.wandb")) + sorted(path.glob("*offline-run-*/run-*.wandb"))


def read_records(data: bytes, start: int) -> tuple[list[bytes], int]:
    """Whole records in `data` from offset `start` (past the header), and the offset after the last one."""
    records, pos, done, parts = [], start, start, []
    while True:
        room = BLOCK - pos % BLOCK
        if room < CHUNK_HEADER:  # a block's tail too short for a header is padding
            pos += room
            continue
        if pos + CHUNK_HEADER > len(data):
            break
        crc, length, kind = struct.unpack_from("<IHB", data, pos)
        end = pos + CHUNK_HEADER + length
        if end > len(data) or kind not in (FULL, FIRST, MIDDLE, LAST):
            break
        chunk = data[pos + CHUNK_HEADER : end]
        if zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != crc:
            break
        pos = end
        if kind in (FULL, FIRST):
            parts = [chunk]
        else:
            parts.append(chunk)
        if kind in (FULL, LAST):
            records.append(b"".join(parts))
            parts, done = [], pos
    return records, done


def _number(text: str) -> float | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


class WandbSource:
    """One offline run's `.wandb` file, read incrementally."""

    kind = "wandb"
    trainer = None

    def __init__(self, file: Path) -> None:
        self.pb2 = _records_pb2()
        self.file = file
        self.location = str(file.resolve())
        self.name = file.stem.removeprefix("run-")
        self._offset = len(HEADER)
        self._config: dict[str, Any] = {}
        self._source: dict[str, Any] = {}
        self._buffer = RowBuffer()
        self._read_file()  # the run record names the run before its id is derived

    def info(self) -> dict:
        return {"config": self._config, "source": self._source}

    def read(self, final: bool = True) -> Rows:
        self._read_file()
        return self._buffer.take()

    def _read_file(self) -> None:
        try:
            data = self.file.read_bytes()
        except OSError as err:
            raise UsageError(f"cannot read {self.file}: {err.strerror or err}") from None
        if not data.startswith(HEADER):
            raise UsageError(f"{self.file} is not a W&B run file (no :W&B header)")
        records, self._offset = read_records(data, self._offset)
        for raw in records:
            try:
                record = self.pb2.Record.FromString(raw)
            except Exception as err:  # protobuf's DecodeError
                raise UsageError(f"{self.file}: undecodable record ({err})") from None
            kind = record.WhichOneof("record_type")
            if kind == "history":
                self._history(record.history)
            elif kind == "config":
                self._update_config(record.config.update)
            elif kind == "run":
                run = record.run
                self.name = run.display_name or run.run_id or self.name
                self._source = {"project": run.project, "wandb_run_id": run.run_id, "tags": list(run.tags)}
                self._update_config(run.config.update)

    def _update_config(self, items: Any) -> None:
        for item in items:
            key = item.key or "/".join(item.nested_key)
            if not key.startswith("_"):
                try:
                    self._config[key] = json.loads(item.value_json)
                except ValueError:
                    self._config[key] = item.value_json

    def _history(self, history: Any) -> None:
        values: dict[str, float] = {}
        for item in history.item:
            key = item.key or "/".join(item.nested_key)
            value = _number(item.value_json)
            if value is not None:
                values[key] = value
        step_key = next((k for k in STEP_KEYS if k in values), None)
        step = int(values[step_key]) if step_key else int(values.get("_step", history.step.num))
        wall_time = values.get("_timestamp", float("nan"))
        add = self._buffer.add
        for key, value in values.items():
            if not key.startswith("_") and key not in STEP_KEYS:
                add(step, key, value, wall_time)


def open_wandb(path: Path) -> list[WandbSource]:
    files = run_files(path)
    if not files:
        raise UsageError(f"no W&B offline run (run-*.wandb) in {path}")
    return [WandbSource(f) for f in files]
