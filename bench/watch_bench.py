"""Benchmark: one `watch(..., once=True)` cycle over a store of 50 runs × 20,000 steps (target: under 1 s).

Run: `.venv/bin/python bench/watch_bench.py [--runs 50] [--steps 20000] [--segment-steps 1000] [--repeat 5]`.

Builds the store in a temp dir with direct Parquet writes in the `steps` schema (the RunWriter would take
minutes for 14 M rows): the keys the default rules read plus a few more, entropy decaying at a different pace
per run (so some runs collapse, some decline fast, one has NaNs), every `--segment-steps` steps one segment, as
a writer flushing that often or a compacted run leaves them. Then it times whole `watch` calls, each with a
fresh reader as in cron: the first records the transitions it finds, the later ones find none to add.
Simplifies: no tokens/samples/hists tables (watch never reads them), one writer per run, no resumed runs.
`--unjudged` writes the ended runs as imported ones (no trainer judged their alerts live): the first call then
reads each of them over every step, once.
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from analysis.alerts import load_rules
from analysis.atomic import write_parquet_atomic
from analysis.schema import ENTROPY_MEAN, KL_APPROX, RESPONSE_LEN_MEAN, REWARD_MEAN, TABLES, TIME_STEP
from analysis.watch import watch

EXTRA_KEYS = [REWARD_MEAN, KL_APPROX, RESPONSE_LEN_MEAN, TIME_STEP]


def synthetic_run(
    rng: np.random.Generator, steps: int, pace: float, keys: list[str]
) -> dict[str, np.ndarray]:
    """Plausible GRPO traces: entropy decaying from ~1 nat at `pace`, the rest noise around typical values."""
    s = np.arange(1, steps + 1, dtype=np.float64)
    entropy = 0.2 + 0.8 * np.exp(-pace * s) + rng.normal(0, 0.03, steps)
    out = {k: np.abs(rng.normal(0.02, 0.01, steps)) for k in keys}
    out[ENTROPY_MEAN] = entropy
    out["pass@1"] = np.clip(rng.normal(0.5, 0.05, steps), 0, 1)
    out["pass@k"] = np.clip(out["pass@1"] + 0.3, 0, 1)
    out["diversity/distinct_frac"] = np.clip(0.1 + entropy * 0.4, 0, 1)
    out["controller/at_bound"] = np.zeros(steps)
    return out


def write_run(
    store: Path,
    run_id: str,
    traces: dict[str, np.ndarray],
    segment_steps: int,
    running: bool,
    judged: bool = True,
) -> None:
    steps = len(next(iter(traces.values())))
    keys = sorted(traces)
    t0 = time.time() - steps
    for seq, a in enumerate(range(0, steps, segment_steps), start=1):
        b = min(a + segment_steps, steps)
        n = (b - a) * len(keys)
        step = np.repeat(np.arange(a + 1, b + 1, dtype=np.int64), len(keys))
        table = pa.table(
            {
                "run_id": pa.array([run_id] * n),
                "step": step,
                "key": pa.array(keys * (b - a)),
                "value": np.stack([traces[k][a:b] for k in keys], axis=1).ravel(),
                "wall_time": t0 + step.astype(np.float64),
            },
            schema=TABLES["steps"],
        )
        write_parquet_atomic(store / run_id / "steps" / f"{seq:08d}-1-{seq:08x}.parquet", table)
    # A trainer's run.json names the alert rules it judged live (`alerts`); an imported run's names none.
    config = {"algo": "grpo", "controller": "none", "alerts": "default" if judged else "off"}
    meta = {"run_id": run_id, "status": "running" if running else "finished", "heartbeat": time.time(),
            "last_step": steps, "config": config}  # fmt: skip
    (store / run_id / "run.json").write_text(json.dumps(meta))


def build_store(store: Path, runs: int, steps: int, segment_steps: int, judged: bool = True) -> list[str]:
    keys = sorted(set(load_rules().keys()) | set(EXTRA_KEYS))
    rng = np.random.default_rng(0)
    for i in range(runs):
        traces = synthetic_run(rng, steps, pace=10 ** rng.uniform(-5, -2), keys=keys)
        if i == 0:
            traces["grad/norm"][-3:] = np.nan  # one broken run: a critical alert at the end
        write_run(store, f"run{i:03d}", traces, segment_steps, running=i % 5 == 0, judged=judged)
    return keys


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--steps", type=int, default=20_000)
    ap.add_argument("--segment-steps", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument(
        "--unjudged",
        action="store_true",
        help="ended runs as no trainer judged them live (imported, alerts off): the first call reads them whole",
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="watch_bench_") as tmp:
        store = Path(tmp)
        t = time.perf_counter()
        keys = build_store(store, args.runs, args.steps, args.segment_steps, judged=not args.unjudged)
        print(
            f"built {args.runs} runs x {args.steps} steps x {len(keys)} keys in {time.perf_counter() - t:.1f} s"
        )
        lines: list[str] = []
        times = []
        for _ in range(args.repeat + 1):
            t = time.perf_counter()
            code = watch(store, once=True, out=lines.append)
            times.append(time.perf_counter() - t)
        recorded = len(lines) - (args.repeat + 1)  # minus one summary line per call
        print(f"first call recorded {recorded} transitions; exit code {code}")
        later = times[1:]
        header = f"{'runs':>5} {'steps':>7} {'keys':>5} {'segs/run':>8} {'first s':>8} {'min s':>7} {'median s':>9} target"
        print(header)
        print(
            f"{args.runs:>5} {args.steps:>7} {len(keys):>5} {-(-args.steps // args.segment_steps):>8} "
            f"{times[0]:>8.3f} {min(later):>7.3f} {statistics.median(later):>9.3f} 1 s"
        )


if __name__ == "__main__":
    main()
