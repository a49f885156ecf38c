"""Sweep bench: 8 sample-runs-config runs through `entropyscope sweep --parallel 2` vs one after another.

    .venv/bin/python bench/sweep_bench.py [--runs 8] [--steps 200] [--parallel 2] [--store DIR]

The runs: GRPO on the sample-runs config (trainer.sample_runs.COMMON) at seeds 0..runs-1. "One after another"
runs `entropyscope train` once per seed, each with the trainer's default threads (torch's: one per core), as
a user without sweeps would; "sweep" runs the same runs as one spec with `--parallel N` (each child on one
thread, the runner's default). Both start a fresh process per run, so both pay the same start-up (torch
import, model build, warm-up cache load; an untimed first run fills that cache). Wall time is measured around
each whole command. The goal on a
2-core machine is a ratio >= 1.8x. Prints a markdown table; `--steps` shortens every run for a quick check.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from trainer.config import parse_overrides  # noqa: E402
from trainer.sample_runs import COMMON  # noqa: E402


def base_config(steps: int) -> dict:
    base = parse_overrides(COMMON)
    del base["seed"]  # the spec's seeds set it
    return {**base, "algo": "grpo", "steps": steps}


def entropyscope(*args: str) -> float:
    """Run one command to the end; its wall time in seconds."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "trainer.cli", *args], cwd=ROOT, capture_output=True, text=True
    )
    if done.returncode != 0:
        sys.exit(f"entropyscope {args[0]} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return time.perf_counter() - start


def sets(config: dict) -> list[str]:
    return [f"--set={k}={json.dumps(v)}" for k, v in config.items()]


def one_after_another(store: Path, base: dict, runs: int) -> float:
    return sum(
        entropyscope("train", *sets(base), f"--set=seed={s}", "--store", str(store)) for s in range(runs)
    )


def as_sweep(store: Path, base: dict, runs: int, parallel: int) -> float:
    spec = store / "spec.yaml"
    store.mkdir(parents=True)
    spec.write_text(yaml.safe_dump({"name": "bench", "base": base, "seeds": runs}))
    return entropyscope("sweep", str(spec), "--store", str(store / "runs"), "--parallel", str(parallel))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--steps", type=int, default=200, help="steps per run (the sample runs': 200)")
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--store", help="keep the runs here (default: a temporary directory)")
    args = ap.parse_args(argv)
    base = base_config(args.steps)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.store or tmp)
        # untimed: fills the warm-up cache, which the first timed run would otherwise pay for alone
        entropyscope("train", *sets(base), "--set", "steps=1", "--store", str(root / "prime"))
        serial = one_after_another(root / "serial", base, args.runs)
        parallel = as_sweep(root / "sweep", base, args.runs, args.parallel)
    print(f"{args.runs} GRPO runs on the sample-runs config, {args.steps} steps each\n")
    print("| how | wall s | s per run | speed-up |")
    print("|---|---:|---:|---:|")
    print(
        f"| one after another (`train`, default threads) | {serial:.1f} | {serial / args.runs:.1f} | 1.00x |"
    )
    print(
        f"| `sweep --parallel {args.parallel}` (1 thread each) | {parallel:.1f} | {parallel / args.runs:.1f} "
        f"| {serial / parallel:.2f}x |"
    )


if __name__ == "__main__":
    main()
