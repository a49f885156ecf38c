"""Checkpoints in the run store: `<run>/checkpoints/step_N/` holds a Hugging Face model + tokenizer
(loadable as `model=PATH`) plus `trainer_state.pt` with optimizer, controller and step for resume.

A checkpoint is written under a temp name, its files fsynced, a `manifest.json` of their sizes written last,
and the directory renamed into place: a kill or a full disk mid-save leaves no `step_N`, and a `step_N` that
later lost or truncated a file is told apart from a complete one by its manifest.
"""

import json
import os
import re
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from analysis.atomic import fsync_dir, store_fault, write_json_atomic
from analysis.errors import UsageError

STATE_FILE = "trainer_state.pt"
MANIFEST = "manifest.json"
_STEP_DIR = re.compile(r"^step_(\d+)$")
_TEMP_DIR = re.compile(r"^\.step_\d+\.tmp-\d+$")


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    state: dict[str, Any],
    weights: dict[str, torch.Tensor] | None = None,
    extra_files: Callable[[Path], None] | None = None,
) -> Path:
    """Write step_N atomically: a crash mid-save leaves the previous checkpoints intact and no partial one.
    `weights`: the state dict to save instead of the model's own (gathered from shards, or LoRA-merged);
    `extra_files(dir)` writes more files (a LoRA adapter's folder) before the checkpoint is sealed.
    A full or read-only disk raises OSError (ENOSPC, EROFS) whatever library was writing."""
    root = run_dir / "checkpoints"
    final = root / f"step_{step}"
    tmp = root / f".step_{step}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        model.save_pretrained(tmp, state_dict=weights)
        tokenizer.save_pretrained(tmp)
        torch.save({**state, "step": step}, tmp / STATE_FILE)
        if extra_files is not None:
            extra_files(tmp)
        sizes = {}
        for f in sorted(f for f in tmp.rglob("*") if f.is_file()):
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
            sizes[f.relative_to(tmp).as_posix()] = f.stat().st_size
        write_json_atomic(tmp / MANIFEST, {"step": step, "files": sizes})
        if final.exists():  # a damaged step_N that a resume skipped is being written again
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException as err:
        # Asked before the partial files are removed: they hold the space that ran out.
        fault = store_fault(err, root) if isinstance(err, Exception) else None
        shutil.rmtree(tmp, ignore_errors=True)
        if fault is not None and fault is not err:
            raise OSError(fault.errno, fault.strerror, str(final)) from err
        raise
    fsync_dir(root)
    return final


def checkpoint_problem(ckpt: Path) -> str | None:
    """What keeps `ckpt` from being resumed ('lacks model.safetensors'), or None when it is complete."""
    try:
        listed = json.loads((ckpt / MANIFEST).read_text())["files"]
        sizes = {str(name): int(size) for name, size in listed.items()}
    except FileNotFoundError:  # saved before manifests: the state file was written last
        sizes = {STATE_FILE: -1, "config.json": -1}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        return f"has an unreadable {MANIFEST} ({type(err).__name__})"
    missing = [name for name in sizes if not (ckpt / name).is_file()]
    if missing:
        return f"lacks {', '.join(missing)}"
    cut = [
        f"{name} has {(ckpt / name).stat().st_size} bytes of {size}"
        for name, size in sizes.items()
        if size >= 0 and (ckpt / name).stat().st_size != size
    ]
    return "is damaged: " + ", ".join(cut) if cut else None


def checkpoints(run_dir: Path) -> list[Path]:
    """The run's step_N directories, newest first; a link (the trainer never makes one) could lead out of the
    store, so it is not a checkpoint."""
    root = run_dir / "checkpoints"
    found = [
        (int(m.group(1)), p)
        for p in (root.iterdir() if root.is_dir() and not root.is_symlink() else [])
        if (m := _STEP_DIR.match(p.name)) and not p.is_symlink()
    ]
    return [p for _, p in sorted(found, reverse=True)]


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The complete step_N directory with the highest N, or None."""
    return next((p for p in checkpoints(run_dir) if checkpoint_problem(p) is None), None)


def load_trainer_state(ckpt: Path) -> dict[str, Any]:
    """The optimizer/controller/step state saved beside the model weights."""
    try:
        return torch.load(ckpt / STATE_FILE, map_location="cpu", weights_only=False)
    except Exception as e:  # a damaged file should say which checkpoint to remove, not dump a traceback
        raise UsageError(
            f"checkpoint {ckpt} is unreadable ({type(e).__name__}); delete it to resume from an earlier one"
        ) from None


def remove_partial_checkpoints(run_dir: Path) -> int:
    """Delete temp directories of saves that never finished (a killed or failed writer); call only while no
    other process writes this run. Returns how many."""
    root = run_dir / "checkpoints"
    partial = [p for p in (root.iterdir() if root.is_dir() else []) if _TEMP_DIR.match(p.name)]
    for p in partial:
        shutil.rmtree(p, ignore_errors=True)
    return len(partial)


def resume_point(run_dir: Path) -> tuple[Path | None, dict[str, Any]]:
    """The newest checkpoint that is complete and whose trainer state loads, with that state; each newer one
    skipped is named in a warning with what is wrong with it. (None, {}) when the run has no checkpoint;
    UsageError when it has some and none can be resumed."""
    remove_partial_checkpoints(run_dir)
    skipped: list[str] = []
    for ckpt in checkpoints(run_dir):
        problem = checkpoint_problem(ckpt)
        if problem is None:
            try:
                state = load_trainer_state(ckpt)
            except UsageError:
                problem = f"has an unreadable {STATE_FILE}"
        if problem is not None:
            skipped.append(f"{ckpt.name} {problem}")
            continue
        if skipped:
            warnings.warn(
                f"resuming {run_dir.name} from {ckpt.name}: skipped damaged {'; '.join(skipped)}",
                RuntimeWarning,
                stacklevel=2,
            )
        return ckpt, state
    if skipped:
        raise UsageError(
            f"cannot resume {run_dir.name}: no usable checkpoint in {run_dir / 'checkpoints'} "
            f"({'; '.join(skipped)}); restore the missing files or start a new run"
        )
    return None, {}
