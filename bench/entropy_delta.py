"""Entropy dynamics bench: does the predicted batch ΔH match the measured one, do its quadrant parts add up, what
does measuring it cost, and which quadrants does a controller change?

    .venv/bin/python bench/entropy_delta.py [--steps N] [--store DIR] [--reuse] [--figure PNG] [--set key=value ...]

Trains GRPO and REPO-R on the demo config (trainer.sample_runs.COMMON, the sample runs') with delta_every=1,
two runs at a time, each on one torch thread, then prints from the store's per-step scalars:

- r, slope: Pearson correlation and least-squares slope of measured (`entropy/delta_batch`) on predicted
  ΔH, for `entropy/delta_pred` (Simpson's rule along the update) and `entropy/delta_pred_first` (∇H̄ before
  the update · Δθ), over every step and over each quarter of the run;
- parts: median and 95th percentile over steps of |e1 + e2 + e3 + e4 - delta_pred| / |delta_pred|;
- cost: mean over steps of time/delta_s / (time/step_s - time/delta_s), the extra time of a measured step
  relative to the same step without the measurement, both timed inside the same step (so machine load
  changes between runs cancel);
- quadrants: mean of each part over steps (and over the second half), per run.

`--reuse` reads runs already in --store instead of training. Torch is imported only when training.
"""

import argparse
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analysis import schema  # noqa: E402
from analysis.metrics import agreement  # noqa: E402
from analysis.store_reader import StoreReader  # noqa: E402

RUNS = {"grpo": ["algo=grpo"], "repo-r": ["algo=grpo", "controller=repo_r"]}
PARTS = (
    schema.ENTROPY_DELTA_PRED_E1,
    schema.ENTROPY_DELTA_PRED_E2,
    schema.ENTROPY_DELTA_PRED_E3,
    schema.ENTROPY_DELTA_PRED_E4,
)
KEYS = (
    schema.ENTROPY_DELTA_BATCH,
    schema.ENTROPY_DELTA_PRED,
    schema.ENTROPY_DELTA_PRED_FIRST,
    schema.ENTROPY_DELTA_PRED_OTHER,
    schema.TIME_DELTA,
    schema.TIME_STEP,
    *PARTS,
)


def train_one(store: str, name: str, overrides: list[str]) -> str:
    from trainer.config import load_config
    from trainer.loop import train
    from trainer.sample_runs import COMMON

    cfg = load_config(None, [*COMMON, *RUNS[name], "delta_every=1", "threads=1", *overrides])
    shutil.rmtree(Path(store) / name, ignore_errors=True)
    print("\n".join(train(cfg, store, run_id=name, progress=False).lines()), flush=True)
    return name


def table(store: str, run: str) -> pd.DataFrame:
    """The run's per-step scalars of KEYS, one column per key."""
    reader = StoreReader(store)
    try:
        df = reader.scalars([run], list(KEYS), max_points=10**9)
    finally:
        reader.close()
    return df.pivot_table(index="step", columns="key", values="value").dropna(subset=[KEYS[0]])


def fit(df: pd.DataFrame, key: str) -> str:
    r, slope = agreement(df[key], df[schema.ENTROPY_DELTA_BATCH])
    return f"r {r:.3f} slope {slope:.2f}"


def report(store: str, run: str) -> None:
    df = table(store, run)
    pred = df[schema.ENTROPY_DELTA_PRED]
    sum_err = (df[list(PARTS)].sum(axis=1) - pred).abs() / pred.abs()
    cost = df[schema.TIME_DELTA] / (df[schema.TIME_STEP] - df[schema.TIME_DELTA])
    print(f"\n{run}: {len(df)} measured steps")
    print(
        f"  all steps   simpson {fit(df, schema.ENTROPY_DELTA_PRED)} | first-order {fit(df, schema.ENTROPY_DELTA_PRED_FIRST)}"
    )
    for part in np.array_split(df.index.to_numpy(), 4):
        q = df.loc[part]
        line = f"simpson {fit(q, schema.ENTROPY_DELTA_PRED)} | first-order {fit(q, schema.ENTROPY_DELTA_PRED_FIRST)}"
        print(f"  steps {part[0]:>3}-{part[-1]:<3} {line}")
    print(
        f"  parts: |e1+..+e4 - pred| / |pred| median {sum_err.median():.2e}, p95 {sum_err.quantile(0.95):.2e}"
    )
    print(
        f"  cost: a measured step takes {1 + cost.mean():.2f}x the step without it (mean of per-step ratios)"
    )
    half = df.loc[df.index > df.index.max() / 2]
    means = " ".join(f"{k.rsplit('_', 1)[1]} {df[k].mean():+.4f}/{half[k].mean():+.4f}" for k in PARTS)
    print(f"  mean part per step (all/second half): {means}")
    print(f"  mean measured {df[schema.ENTROPY_DELTA_BATCH].mean():+.4f}, predicted {pred.mean():+.4f}")


def figure(store: str, path: str, window: int = 10) -> None:
    """Per run, the quadrant parts stacked over steps (means over `window`-step bins) with the measured ΔH."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = ("#d62728", "#2ca02c", "#1f77b4", "#ff7f0e")
    labels = ("E1 A>0 likely", "E2 A>0 unlikely", "E3 A<0 likely", "E4 A<0 unlikely")
    fig, axes = plt.subplots(1, len(RUNS), figsize=(11, 3.8), sharey=True)
    for ax, run in zip(axes, RUNS, strict=True):
        df = table(store, run)
        binned = df.groupby((df.index - 1) // window).mean()
        x = binned.index * window + 1
        pos, neg = np.zeros(len(binned)), np.zeros(len(binned))
        for key, color, label in zip(PARTS, colors, labels, strict=True):
            v = binned[key].to_numpy()
            base = np.where(v >= 0, pos, neg)
            ax.bar(x, v, width=window * 0.9, bottom=base, color=color, label=label, align="edge")
            pos, neg = pos + np.maximum(v, 0), neg + np.minimum(v, 0)
        ax.plot(x + window / 2, binned[schema.ENTROPY_DELTA_BATCH], "k.-", lw=1, label="measured ΔH")
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_title(f"{run}: predicted ΔH by quadrant ({window}-step means)")
        ax.set_xlabel("step")
    axes[0].set_ylabel("ΔH per step (nats)")
    axes[-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="runs-entropy-delta")
    parser.add_argument("--steps", type=int, default=None, help="override COMMON's 200 steps")
    parser.add_argument("--reuse", action="store_true", help="report runs already in --store")
    parser.add_argument("--figure", default=None, help="write the quadrant parts of both runs to this PNG")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    overrides = [*args.overrides, *([f"steps={args.steps}"] if args.steps else [])]
    if not args.reuse:
        with ProcessPoolExecutor(max_workers=2) as pool:
            list(pool.map(train_one, [args.store] * len(RUNS), RUNS, [overrides] * len(RUNS)))
    for run in RUNS:
        report(args.store, run)
    if args.figure:
        figure(args.store, args.figure)


if __name__ == "__main__":
    main()
