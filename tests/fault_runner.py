"""`entropyscope train` in a process that kills itself (SIGKILL) at a chosen moment, for the kill -9 test.

    python tests/fault_runner.py none|checkpoint|compaction ARGS...

checkpoint: inside the second checkpoint save, after the weights are written and before the trainer state;
compaction: while the run's end-of-run compaction writes its merged segment (part of it on disk).
"""

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def kill_in_checkpoint() -> None:
    import torch

    calls = 0
    save = torch.save

    def save_then_die(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == 2:
            die()
        return save(*args, **kwargs)

    torch.save = save_then_die


def kill_in_compaction() -> None:
    from analysis import compact

    def write_half_then_die(path, schema, parts):
        path = Path(path)
        tmp = path.with_name(f".{path.name}.deadbeef.tmp")  # the name analysis.atomic gives a temp file
        tmp.write_bytes(b"PAR1" + b"\0" * 1000)
        die()

    compact.write_parquet_parts_atomic = write_half_then_die


if __name__ == "__main__":
    point, args = sys.argv[1], sys.argv[2:]
    {"none": lambda: None, "checkpoint": kill_in_checkpoint, "compaction": kill_in_compaction}[point]()
    from trainer.cli import main

    sys.exit(main(args))
