"""TensorBoard event files (`events.out.tfevents.*`, as torch.utils.tensorboard writes them) -> rows.

Read with the tensorboard package's own record loader (no TensorFlow): it keeps its offset in each file, so
every `read()` returns only events written since the last one, and it stops at a half-written last record
and resumes there once the writer has finished it. Several files in one directory (a restarted run) are read
in name order, which is creation order, so a repeated step takes the later file's value. Only scalars are
kept: `simple_value` summaries (SummaryWriter.add_scalar) and scalar-plugin tensors (new_style=True).
"""

import struct
from pathlib import Path

from analysis.errors import UsageError
from analysis.importers.rows import RowBuffer, Rows

EVENT_GLOB = "events.out.tfevents.*"
_FLOAT_DTYPES = {1: ("float_val", "<f"), 2: ("double_val", "<d")}  # DT_FLOAT, DT_DOUBLE


def _tensorboard():
    try:
        from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
        from tensorboard.compat.proto import event_pb2
    except ImportError:
        raise UsageError(
            "reading TensorBoard logs needs the tensorboard package: pip install 'entropyscope[tensorboard]'"
        ) from None
    return RawEventFileLoader, event_pb2


def event_files(path: Path) -> list[Path]:
    """The event files of one TensorBoard run: `path` itself, or those directly inside it."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.glob(EVENT_GLOB) if p.is_file())


def run_dirs(root: Path) -> list[Path]:
    """Directories under `root` (itself included) that hold event files: TensorBoard's runs."""
    return sorted({p.parent for p in root.rglob(EVENT_GLOB) if p.is_file()})


def _scalar(tensor) -> float | None:
    """A one-element float tensor's value (in its repeated field or packed bytes); None for anything else."""
    field, fmt = _FLOAT_DTYPES.get(tensor.dtype, (None, None))
    if field is None:
        return None
    values = getattr(tensor, field)
    if len(values) == 1:
        return float(values[0])
    if len(tensor.tensor_content) == struct.calcsize(fmt):
        return struct.unpack(fmt, tensor.tensor_content)[0]
    return None


class TensorBoardSource:
    """One TensorBoard run directory (or a single event file), read incrementally."""

    kind = "tensorboard"
    trainer = None

    def __init__(self, path: Path, name: str) -> None:
        self.loader_cls, self.event_pb2 = _tensorboard()
        self.path = path
        self.name = name
        self.location = str(path.resolve())
        self._loaders: dict[Path, object] = {}
        self._buffer = RowBuffer()

    def info(self) -> dict:
        return {}

    def read(self, final: bool = True) -> Rows:
        """Scalars written since the last call, file by file in name order."""
        for file in event_files(self.path):
            if file not in self._loaders:
                try:
                    self._loaders[file] = self.loader_cls(str(file))
                except OSError as err:
                    raise UsageError(f"cannot read TensorBoard event file {file}: {err}") from None
            self._read_file(self._loaders[file], file)
        return self._buffer.take()

    def _read_file(self, loader: object, file: Path) -> None:
        parse = self.event_pb2.Event.FromString
        steps, tags, values, times = [], [], [], []  # plain lists: the loop runs once per scalar
        try:
            for record in loader.Load():
                event = parse(record)
                for v in event.summary.value:
                    if v.HasField("simple_value"):
                        value = v.simple_value
                    elif v.HasField("tensor") and v.metadata.plugin_data.plugin_name == "scalars":
                        value = _scalar(v.tensor)
                        if value is None:
                            continue
                    else:
                        continue
                    steps.append(event.step)
                    tags.append(v.tag)
                    values.append(value)
                    times.append(event.wall_time)
        except Exception as err:  # a damaged file: protobuf's DecodeError and the loader's own errors
            raise UsageError(f"cannot read TensorBoard event file {file}: {err}") from None
        self._buffer.extend(steps, tags, values, times)
