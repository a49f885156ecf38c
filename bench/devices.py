"""The demo run on CPU and on CUDA in each precision mode, side by side: speed, collapse and drift.

    .venv/bin/python bench/devices.py [--steps N] [--devices cpu cuda] [--precisions fp32 bf16 bf16_fixed]

Every row trains GRPO on the demo config (trainer.sample_runs.COMMON, the controllers bench's too) with the
same seed, so the rows differ only in device and precision. The CPU rows run in parallel, one spawned
process each on one torch thread (give the machine a core per row); the CUDA rows run one after another in
one process beside them, so no two runs share the GPU. Default devices: cpu, plus cuda when one is visible.

Columns: wall s (the whole run, warm-up cache load included); s/step (median of time/step); speed-up (the
same precision's CPU s/step over this row's); H0; final entropy = mean of the last 10% of steps; change vs
H0; reward and pass@k = means of the last 10%; onpolicy max = the largest ratio/onpolicy_dev of any step
(fp32's bar is 1e-6); logp diff = mean precision/logp_diff_mean (rollout vs training log-probs); logp>0 =
mean precision/logp_pos_frac.
"""

import argparse
import math
import multiprocessing
import statistics
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from controllers import read_series, train_run  # noqa: E402  (bench/controllers.py, beside this file)

from analysis import schema  # noqa: E402

PRECISIONS = ["fp32", "bf16", "bf16_fixed"]
KEYS = [
    schema.ENTROPY_MEAN,
    schema.REWARD_MEAN,
    schema.PASS_AT_K,
    schema.TIME_STEP,
    schema.RATIO_ONPOLICY_DEV,
    schema.PRECISION_LOGP_DIFF_MEAN,
    schema.PRECISION_LOGP_POS_FRAC,
]
Job = tuple[str, str]  # (device, precision)


def run_jobs(store: Path, jobs: list[Job], extra: list[str]) -> list[tuple[Job, float]]:
    """Train each (device, precision) in turn; their wall times."""
    return [
        (job, train_run(store, f"{job[0]}-{job[1]}", [f"device={job[0]}", f"precision={job[1]}", *extra]))
        for job in jobs
    ]


def row(store: Path, job: Job, wall: float) -> dict[str, float]:
    s = read_series(store, f"{job[0]}-{job[1]}", KEYS)
    tail = max(1, len(s[schema.ENTROPY_MEAN]) // 10)

    def last(key: str) -> float:
        return statistics.fmean(s[key][-tail:])

    h0, final = s[schema.ENTROPY_MEAN][0], last(schema.ENTROPY_MEAN)
    return {
        "wall": wall,
        "step_s": statistics.median(s[schema.TIME_STEP]),
        "h0": h0,
        "final": final,
        "change": final / h0 - 1,
        "reward": last(schema.REWARD_MEAN),
        "passk": last(schema.PASS_AT_K),
        "onpolicy": max(s[schema.RATIO_ONPOLICY_DEV]),
        "logp_diff": statistics.fmean(s[schema.PRECISION_LOGP_DIFF_MEAN]),
        "logp_pos": statistics.fmean(s[schema.PRECISION_LOGP_POS_FRAC]),
    }


def table(rows: dict[Job, dict[str, float]]) -> str:
    head = (
        f"{'device':<6} {'precision':<10} {'wall s':>7} {'s/step':>7} {'speed-up':>8} {'H0':>6} {'final':>6}"
        f" {'change':>7} {'reward':>6} {'pass@k':>6} {'onpolicy max':>12} {'logp diff':>9} {'logp>0':>6}"
    )
    lines = [head]
    for (device, precision), r in rows.items():
        cpu = rows.get(("cpu", precision))
        speedup = cpu["step_s"] / r["step_s"] if cpu else math.nan
        lines.append(
            f"{device:<6} {precision:<10} {r['wall']:>7.1f} {r['step_s']:>7.3f} {speedup:>7.2f}x {r['h0']:>6.3f}"
            f" {r['final']:>6.3f} {r['change']:>+7.0%} {r['reward']:>6.3f} {r['passk']:>6.3f}"
            f" {r['onpolicy']:>12.2e} {r['logp_diff']:>9.2e} {r['logp_pos']:>6.3f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="override the demo config's steps")
    parser.add_argument("--devices", nargs="+", choices=["cpu", "cuda"], default=None)
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=PRECISIONS)
    parser.add_argument("--store", default=None, help="run store (default: a temporary directory)")
    args = parser.parse_args(argv)
    devices = args.devices or ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
    if "cuda" in devices and not torch.cuda.is_available():
        parser.error("--devices cuda: no CUDA GPU is visible")
    extra = [f"steps={args.steps}"] if args.steps else []
    tmp = None if args.store else tempfile.TemporaryDirectory(prefix="devices-bench-")
    store = Path(args.store or tmp.name)
    chains = [[("cpu", p)] for p in args.precisions if "cpu" in devices]
    chains += [[("cuda", p) for p in args.precisions]] if "cuda" in devices else []
    cpu_extra = ["threads=1", *extra]
    # spawn, not fork: CUDA cannot be used in a forked child, and a fork would share torch's thread pools.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=len(chains), mp_context=ctx) as pool:
        futures = [pool.submit(run_jobs, store, c, cpu_extra if c[0][0] == "cpu" else extra) for c in chains]
        walls = dict(pair for f in futures for pair in f.result())
    order = [(d, p) for d in devices for p in args.precisions]
    print(f"demo config: {' '.join(extra) or '(trainer.sample_runs.COMMON)'}, GRPO, seed 0")
    if "cuda" in devices:
        print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    print(table({job: row(store, job, walls[job]) for job in order}))
    if tmp:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
