"""W&B offline runs (`wandb/offline-run-*/run-*.wandb`) -> rows, read with the wandb package's own reader."""

from pathlib import Path

from analysis.errors import UsageError


def run_files(path: Path) -> list[Path]:
    """The `.wandb` files of the offline runs under `path` (a run folder, a `wandb/` folder, or the file)."""
    if path.is_file():
        return [path] if path.suffix == ".wandb" else []
    return sorted(path.glob("run-*.wandb")) + sorted(path.glob("*/run-*.wandb"))


def open_wandb(path: Path) -> list:
    raise UsageError("W&B offline runs are not supported yet")
