"""TRL (Hugging Face Trainer) `trainer_state.json` -> rows.

The Trainer keeps every `log()` call in `log_history` (a list of dicts, each with its `step`) and writes the
file into each `checkpoint-N/` folder as it saves, and into `output_dir` at the end. Given a folder, the
newest state is read: the most recently written of output_dir's own and the checkpoints'. Evaluation
entries name their metrics `eval_*`; they go to the `eval/` namespace. The file is rewritten whole, so
`read()` re-reads it when it changed and hands over only the entries past those already read.
"""

import json
import re
from pathlib import Path

from analysis.errors import UsageError
from analysis.importers.rows import RowBuffer, Rows
from analysis.importers.tabular import as_step

STATE_FILE = "trainer_state.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_SKIP = {"step", "epoch"}  # the step is the row's step; epoch is a fraction of the data, not a metric


def state_files(path: Path) -> list[Path]:
    """trainer_state.json candidates of a Trainer output folder (or the file itself), newest last."""
    if path.is_file():
        return [path]
    checkpoints = sorted(
        (int(m.group(1)), d / STATE_FILE)
        for d in path.iterdir()
        if (m := _CHECKPOINT.match(d.name)) and (d / STATE_FILE).is_file()
    )
    files = [f for _, f in checkpoints]
    if (path / STATE_FILE).is_file():
        files.append(path / STATE_FILE)
    return files


def run_root(path: Path) -> Path:
    """The run a state belongs to: a Trainer output folder for its trainer_state.json or checkpoint-N/
    (so the folder, a checkpoint and the file inside are one run), else the file itself."""
    path = path.resolve()
    if path.is_file() and path.name == STATE_FILE:
        path = path.parent
    if path.is_dir() and _CHECKPOINT.match(path.name):
        path = path.parent
    return path


def _history(file: Path) -> list[dict]:
    try:
        text = file.read_text()
        state = json.loads(text)
    except OSError as err:
        raise UsageError(f"cannot read TRL state {file}: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{file}: not a TRL state (not UTF-8 text)") from None
    except json.JSONDecodeError as err:
        if err.pos >= len(text.rstrip()):
            raise UsageError(
                f"{file}: the JSON ends early, at byte {len(text.encode())} (copied while the trainer was writing "
                "it?); copy it again after the next save, or import a checkpoint-N/ folder's trainer_state.json"
            ) from None
        raise UsageError(
            f"{file}: not valid JSON at line {err.lineno} column {err.colno}: {err.msg}"
        ) from None
    history = state.get("log_history") if isinstance(state, dict) else None
    if not isinstance(history, list):
        raise UsageError(f"{file}: no log_history list (is it a Trainer's trainer_state.json?)")
    return [e for e in history if isinstance(e, dict)]


class TrlStateSource:
    """A TRL/Trainer output folder, a checkpoint folder or a trainer_state.json."""

    kind = "trl"
    trainer = "trl"

    def __init__(self, path: Path, name: str) -> None:
        self.path, self.name = path, name
        self.location = str(run_root(path))
        self._seen = 0
        self._stamp: tuple | None = None
        self._buffer = RowBuffer()

    def info(self) -> dict:
        return {}

    def read(self, final: bool = True) -> Rows:
        files = state_files(self.path)
        if not files:
            raise UsageError(f"no {STATE_FILE} in {self.path} or its checkpoint-N folders")
        file = max(reversed(files), key=lambda f: f.stat().st_mtime_ns)  # a tie: output_dir's own
        st = file.stat()
        stamp = (str(file), st.st_size, st.st_mtime_ns)
        if stamp == self._stamp:
            return self._buffer.take()
        history = _history(file)
        self._stamp = stamp
        if len(history) < self._seen:  # another lineage (a fresh run in the same folder): read it all
            self._seen = 0
        for entry in history[self._seen :]:
            if "step" in entry:
                metrics = {eval_name(k): v for k, v in entry.items() if k not in _SKIP}
                self._buffer.add_dict(as_step(entry["step"], str(file)), metrics)
        self._seen = len(history)
        return self._buffer.take()


def eval_name(key: str) -> str:
    """The HF Trainer's `eval_*` names in our `eval/` namespace."""
    return "eval/" + key.removeprefix("eval_") if key.startswith("eval_") else key
