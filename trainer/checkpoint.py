"""Checkpoints in the run store: `<run>/checkpoints/step_N/` holds a Hugging Face model + tokenizer
(loadable as `model=PATH`) plus `trainer_state.pt` with optimizer, controller and step for resume."""

import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from analysis.errors import UsageError

STATE_FILE = "trainer_state.pt"
_STEP_DIR = re.compile(r"^step_(\d+)$")


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    state: dict[str, Any],
) -> Path:
    """Write step_N atomically: a crash mid-save leaves the previous checkpoints intact and no partial one."""
    root = run_dir / "checkpoints"
    final = root / f"step_{step}"
    tmp = root / f".step_{step}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    torch.save({**state, "step": step}, tmp / STATE_FILE)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The complete step_N directory with the highest N, or None."""
    root = run_dir / "checkpoints"
    found = [
        (int(m.group(1)), p)
        for p in (root.iterdir() if root.is_dir() else [])
        if (m := _STEP_DIR.match(p.name)) and (p / STATE_FILE).is_file()
    ]
    return max(found)[1] if found else None


def load_trainer_state(ckpt: Path) -> dict[str, Any]:
    """The optimizer/controller/step state saved beside the model weights."""
    try:
        return torch.load(ckpt / STATE_FILE, map_location="cpu", weights_only=False)
    except Exception as e:  # a damaged file should say which checkpoint to remove, not dump a traceback
        raise UsageError(
            f"checkpoint {ckpt} is unreadable ({type(e).__name__}); delete it to resume from an earlier one"
        ) from None
