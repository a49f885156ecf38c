"""Regenerate sample_runs/: short real runs so the dashboard has content on first open.

The set reproduces the controllers story on one task and seed: GRPO (fp32), DAPO, REPO-R, ADAPO, GRPO in
naive bf16, and REPO-R following the oscillatory-decay (`od`) setpoint schedule.

Run: `make sample-runs` (or `python -m trainer.sample_runs [--only NAME ...]`). Each run is trained from
scratch with the same seed, then compacted to one segment per table; checkpoints are dropped.
"""

import argparse
import shutil
from pathlib import Path

from analysis.compact import compact_run
from trainer.config import load_config
from trainer.loop import train

COMMON = ["task=digit_sum", "steps=200", "seed=0", "checkpoint_every=0"]
SAMPLE_RUNS: dict[str, list[str]] = {
    "grpo-fp32": [*COMMON, "algo=grpo"],
    "dapo-fp32": [*COMMON, "algo=dapo"],
    "grpo-bf16": [*COMMON, "algo=grpo", "precision=bf16"],
    "repo-r": [*COMMON, "algo=grpo", "controller=repo_r"],
    "adapo": [*COMMON, "algo=grpo", "controller=adapo"],
    "repo-r-od": [*COMMON, "algo=grpo", "controller=repo_r", "schedule=od"],
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="sample_runs")
    parser.add_argument("--only", nargs="*", choices=sorted(SAMPLE_RUNS), help="regenerate just these runs")
    args = parser.parse_args(argv)
    for name in args.only or SAMPLE_RUNS:
        run_dir = Path(args.store) / name
        shutil.rmtree(run_dir, ignore_errors=True)
        summary = train(load_config(None, SAMPLE_RUNS[name]), Path(args.store), run_id=name)
        # The dashboard needs the tables, not the weights: keep the folder small enough to commit.
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
        compact_run(run_dir)
        print("\n".join(summary.lines()))


if __name__ == "__main__":
    main()
