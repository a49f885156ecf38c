"""Which format a source is: by its layout and name where they say (a folder of event files, a `.wandb`
file, a database), else by its content: the first lines of a file, wherever it came from and whatever
its name."""

import json
import re
from pathlib import Path

from analysis.errors import UsageError
from analysis.importers.console import OPENRLHF_STEP
from analysis.importers.tabular import STEP_KEYS, VERL_CONSOLE
from analysis.importers.trl_state import STATE_FILE

FORMATS = ("auto", "tensorboard", "mlflow", "verl", "trl", "hf-console", "openrlhf", "ms-swift", "jsonl", "csv",
           "wandb")  # fmt: skip
SNIFF_BYTES = 4 << 20  # enough for a long preamble (model loading, warnings) before the first metrics line
# a key every HF Trainer log carries one of (it adds epoch to each), quoted as in a dict repr
HF_KEY = re.compile(r"'(epoch|loss|learning_rate|grad_norm|train_runtime|eval_loss)':")
TRIED = (
    "a TRL/HF trainer state (a log_history list), HF Trainer console dicts ({'loss': ...}), verl console lines "
    "(step:N - key:value), OpenRLHF console lines (Global step N: {...}), JSON lines (verl's file logger, "
    "ms-swift's logging.jsonl, any with a step field), CSV with a step column"
)


def _head(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            return f.read(SNIFF_BYTES)
    except OSError as err:
        raise UsageError(f"cannot read {path}: {err.strerror or err}") from None


def json_lines(path: Path) -> bool:
    """Whether the first non-blank line is a JSON object (verl's file logger, not its console)."""
    first = next((line.strip() for line in _head(path).splitlines() if line.strip()), b"")
    return first.startswith(b'{"') or _first_object(first) is not None


def _first_object(line: bytes) -> dict | None:
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def detect_directory(path: Path) -> str:
    from analysis.importers import mlflow_runs, tb_events, trl_state, wandb_offline

    if mlflow_runs.is_file_store(path):
        return "mlflow"
    if tb_events.run_dirs(path):
        return "tensorboard"
    if trl_state.state_files(path):
        return "trl"
    if wandb_offline.run_files(path):
        return "wandb"
    raise UsageError(
        f"cannot tell the format of {path} (no TensorBoard event files, trainer_state.json or W&B "
        "offline run in it); pass --format"
    )


def detect_file(path: Path) -> str:
    """The format of a log file, from its name where that is certain, else from its first lines."""
    name = path.name
    if name == STATE_FILE:
        return "trl"
    if name.startswith("events.out.tfevents."):
        return "tensorboard"
    if path.suffix == ".wandb":
        return "wandb"
    if path.suffix in (".db", ".sqlite"):
        return "mlflow"
    head = _head(path)
    lines = [line.strip() for line in head.splitlines() if line.strip()]
    first = lines[0] if lines else b""
    if first.startswith(b"{"):
        obj = _first_object(first)
        if obj is None and b'"log_history"' in head:
            return "trl"  # an indented JSON document (or one cut short: the reader says so)
        if obj is not None:
            if "log_history" in obj:
                return "trl"
            if "step" in obj and isinstance(obj.get("data"), dict):
                return "verl"
            return "ms-swift" if "global_step/max_steps" in obj else "jsonl"
    header = {cell.strip() for cell in first.decode("utf-8", errors="replace").split(",")}
    if path.suffix == ".csv" or (b"," in first and header & set(STEP_KEYS)):
        return "csv"
    return _console_format(path, lines)


def _console_format(path: Path, lines: list[bytes]) -> str:
    """The most specific console layout any sniffed line has (verl prints its config as a dict first)."""
    text = [raw.decode("utf-8", errors="replace") for raw in lines]
    if any(OPENRLHF_STEP.search(t) for t in text):
        return "openrlhf"
    if any(VERL_CONSOLE.search(t) for t in text):
        return "verl"
    if any("{'" in t and HF_KEY.search(t) for t in text):
        return "hf-console"
    raise UsageError(
        f"cannot tell the format of {path}: tried {TRIED}; pass --format (one of {', '.join(FORMATS[1:])})"
    )


def detect_format(source: str) -> str:
    """The format of SOURCE from its name, layout or first lines."""
    if "://" in source or source.startswith(("sqlite:", "file:")):
        return "mlflow"
    path = Path(source.partition("#")[0])
    if not path.exists():
        raise UsageError(f"no such file or directory: {path}")
    return detect_directory(path) if path.is_dir() else detect_file(path)
