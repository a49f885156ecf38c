"""Retained trainability (the REPO paper's sequential-learning claim): does a policy trained with a collapsing
objective still learn a new task, compared with one whose entropy a controller kept?

    .venv/bin/python bench/retained_trainability.py [--seeds 0 1 2] [--steps-a N] [--steps-b N] [--threshold R]
                                                    [--store DIR] [--jobs N] [--figure PNG] [--a-sweep STORE:ID]

Task A is the demo config (trainer.sample_runs.COMMON: digit_sum, 200 steps) trained with GRPO, REPO-R and
the entropy bonus; `base` is the warm-started policy itself (a one-step run at lr 0 saves it). Each final
checkpoint then continues with plain GRPO on task B, the same budget of optimizer settings, for --steps-b
steps: `sum_plus_one`, the digit_sum prompts with the answer shifted by one (the sum + 1), written to a
JSONL task file in the store. Same inputs, a new mapping: a policy that still samples around its answer can
find the new one; a collapsed one keeps emitting the old sum, every completion of a group scores 0, and
GRPO gets no signal.

Columns per method (mean and std over seeds, and per seed): entropy at the end of A (last 10% of steps) and at
the start of B (its first step); B's reward over its first 5 steps; the step at which B's reward, smoothed
over 5 steps, first reaches --threshold (--steps-b + 1 when it never does; `reached` says whether it did);
B's final reward and pass@1 (last 10% of its steps).
Then, per method against GRPO over the seeds: the IQM of B's final reward with its 95% CI, the IQM ratio and
P(method > GRPO) with CIs, and the verdict of `entropyscope compare` (analysis.stats).
Runs that finished are kept in --store and skipped on a rerun. Torch is imported only in the workers.
`--a-sweep STORE:ID` takes the task-A runs of GRPO, REPO-R and the bonus from a finished sweep of the same
config with `controller` swept (none, repo_r, entropy_bonus) instead of training them again.
"""

import argparse
import json
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analysis import schema, stats  # noqa: E402
from analysis.compare import run_infos  # noqa: E402
from analysis.metrics import final_window  # noqa: E402
from analysis.store_reader import StoreReader  # noqa: E402
from analysis.sweeps import sweep_runs  # noqa: E402

METHODS = {
    "base": ["lr=0", "steps=1"],
    "grpo": [],
    "repo_r": ["controller=repo_r"],
    "entropy_bonus": ["controller=entropy_bonus"],
}
SWEPT_CONTROLLER = {"grpo": "none", "repo_r": "repo_r", "entropy_bonus": "entropy_bonus"}
SMOOTH = 5


def sum_plus_one(path: Path) -> Path:
    """Task B as a JSONL file: every 2- and 3-digit digit_sum prompt, answer = the sum + 1."""
    lines = []
    for n in (2, 3):
        for digits in np.ndindex(*(10,) * n):
            prompt = "+".join(str(d) for d in digits) + "="
            lines.append(json.dumps({"prompt": prompt, "answer": str(sum(digits) + 1)}))
    path.write_text("\n".join(lines) + "\n")
    return path


def final_checkpoint(run_dir: Path) -> Path | None:
    ckpts = sorted((run_dir / "checkpoints").glob("step_*"), key=lambda d: int(d.name.removeprefix("step_")))
    return ckpts[-1] if ckpts and (run_dir / "run.json").is_file() else None


def train_run(store: str, run_id: str, overrides: list[str]) -> str:
    """One training run from scratch (its folder replaced), on one torch thread; returns run_id."""
    from trainer.config import load_config
    from trainer.loop import train

    shutil.rmtree(Path(store) / run_id, ignore_errors=True)
    cfg = load_config(None, [*overrides, "threads=1", "alerts=off"])
    train(cfg, store, run_id=run_id, progress=False)
    return run_id


def finished(store: Path, run_id: str) -> bool:
    info = store / run_id / "run.json"
    return info.is_file() and json.loads(info.read_text()).get("status") == "finished"


def run_all(store: Path, jobs: list[tuple[str, list[str]]], workers: int) -> None:
    todo = [(r, o) for r, o in jobs if not finished(store, r)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for run_id in pool.map(train_run, [str(store)] * len(todo), *zip(*todo, strict=True)) if todo else []:
            print(f"trained {run_id}", flush=True)


def b_metrics(reader: StoreReader, run: str, threshold: float, steps_b: int) -> dict[str, float]:
    df = reader.scalars([run], [schema.REWARD_MEAN, schema.PASS_AT_1, schema.ENTROPY_MEAN], max_points=10**9)
    w = df.pivot_table(index="step", columns="key", values="value").sort_index()
    n = final_window(len(w))
    smooth = w[schema.REWARD_MEAN].rolling(SMOOTH, min_periods=SMOOTH).mean()
    hit = smooth[smooth >= threshold]
    return {
        "H_start_B": float(w[schema.ENTROPY_MEAN].iloc[0]),
        "reward_start_B": float(w[schema.REWARD_MEAN].iloc[:SMOOTH].mean()),
        "steps_to_threshold": float(hit.index[0]) if len(hit) else float(steps_b + 1),
        "reached": float(len(hit) > 0),
        "final_reward_B": float(w[schema.REWARD_MEAN].iloc[-n:].mean()),
        "final_pass@1_B": float(w[schema.PASS_AT_1].iloc[-n:].mean()),
    }


def sweep_a_runs(spec: str, seeds: list[int], common: list[str]) -> dict[tuple[str, int], Path]:
    """{(method, seed): run folder} of a sweep's finished task-A runs; SystemExit naming what is missing or
    was trained on another config."""
    from trainer.config import load_config  # pydantic only, no torch

    store, _, sweep_id = spec.rpartition(":")
    wanted = load_config(None, common).model_dump()
    keys = [c.split("=", 1)[0] for c in common if not c.startswith(("seed=", "checkpoint_every="))]
    by_controller = {c: m for m, c in SWEPT_CONTROLLER.items()}
    infos = run_infos(StoreReader(store))
    found = {}
    for run_id in sweep_runs(infos, sweep_id):
        info, sw = infos[run_id], infos[run_id]["sweep"]
        method = by_controller.get(sw["params"].get("controller"))
        if method is None or sw.get("seed") not in seeds:
            continue
        if any(info.get("config", {}).get(k) != wanted[k] for k in keys):
            raise SystemExit(f"--a-sweep: run {run_id} was not trained on {' '.join(keys)} of {common}")
        if info.get("status") == "finished":
            found[(method, sw["seed"])] = Path(store) / run_id
    missing = [f"{m} seed {s}" for s in seeds for m in SWEPT_CONTROLLER if (m, s) not in found]
    if missing:
        raise SystemExit(f"--a-sweep {spec}: no finished run for {', '.join(missing)}")
    return found


def a_entropy(run_dir: Path) -> float:
    reader = StoreReader(run_dir.parent)
    s = reader.scalars([run_dir.name], [schema.ENTROPY_MEAN], max_points=10**9).sort_values("step")["value"]
    return float(s.iloc[-final_window(len(s)) :].mean())


def versus_grpo(df: pd.DataFrame, metric: str = "final_reward_B") -> str:
    """Each method's `metric` over seeds against GRPO's: IQM [95% CI], IQM ratio [CI], P(method > GRPO) [CI]
    and the verdict of `entropyscope compare`."""
    grpo = df.loc[df["method"] == "grpo", metric].to_numpy()
    lines = [f"\n{metric} over seeds, against GRPO (IQM with 95% bootstrap CI; P = P(method > GRPO)):"]
    for m in METHODS:
        x = df.loc[df["method"] == m, metric].to_numpy()
        g = stats.group_stats(x)
        line = f"{m:>14}: IQM {g.iqm:.3f} [{g.iqm_ci[0]:.3f}, {g.iqm_ci[1]:.3f}], n {g.n}"
        if m != "grpo":
            pair = stats.pair_stats(x, grpo)
            line += (f"; ratio {pair.ratio:.2f}x [{pair.ratio_ci[0]:.2f}, {pair.ratio_ci[1]:.2f}]"
                     f"; P {pair.p:.2f} [{pair.p_ci[0]:.2f}, {pair.p_ci[1]:.2f}], Mann-Whitney p {pair.p_value:.3g}"
                     f"\n{'':>16}{stats.verdict(m, 'grpo', pair, f'ends with higher {metric}')}")  # fmt: skip
        lines.append(line)
    return "\n".join(lines)


def figure(reader: StoreReader, runs: dict[str, list[str]], threshold: float, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for method, ids in runs.items():
        df = reader.scalars(ids, [schema.REWARD_MEAN], max_points=10**9)
        w = df.pivot_table(index="step", columns="run_id", values="value").sort_index()
        smooth = w.rolling(SMOOTH, min_periods=1).mean()
        line = ax.plot(smooth.index, smooth.mean(axis=1), label=f"{method} (mean of {len(ids)} seeds)")[0]
        ax.fill_between(
            smooth.index, smooth.min(axis=1), smooth.max(axis=1), alpha=0.15, color=line.get_color()
        )
    ax.axhline(threshold, color="grey", ls=":", lw=1)
    ax.set_xlabel("step on task B (plain GRPO)")
    ax.set_ylabel(f"reward ({SMOOTH}-step mean; band: seed range)")
    ax.set_title("Task B (sum + 1) after 200 steps of task A (digit_sum)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="runs-retained")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps-a", type=int, default=None, help="override COMMON's 200 steps on task A")
    parser.add_argument("--steps-b", type=int, default=100)
    parser.add_argument("--threshold", type=float, default=0.6)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--figure", default=None, help="write the task-B reward curves to this PNG")
    parser.add_argument("--a-sweep", default=None, metavar="STORE:ID", help="task-A runs from this sweep")
    args = parser.parse_args(argv)
    from trainer.sample_runs import COMMON  # no torch: the module imports it only to train

    store = Path(args.store)
    store.mkdir(parents=True, exist_ok=True)
    task_b = sum_plus_one(store / "sum_plus_one.jsonl")
    steps_a = [f"steps={args.steps_a}"] if args.steps_a else []
    a_runs = sweep_a_runs(args.a_sweep, args.seeds, [*COMMON, *steps_a]) if args.a_sweep else {}
    a_jobs = [
        (f"A-{m}-s{s}", [*COMMON, *steps_a, f"seed={s}", *o])
        for s in args.seeds for m, o in METHODS.items() if (m, s) not in a_runs
    ]  # fmt: skip
    run_all(store, a_jobs, args.jobs)
    a_runs |= {(m, s): store / f"A-{m}-s{s}" for s in args.seeds for m in METHODS if (m, s) not in a_runs}
    b_common = [c for c in COMMON if not c.startswith(("task=", "steps="))]
    b_jobs = [
        (f"B-{m}-s{s}", [*b_common, f"seed={s}", f"task=jsonl:{task_b.resolve()}", f"steps={args.steps_b}",
                         f"model={final_checkpoint(a_runs[(m, s)]).resolve()}"])
        for s in args.seeds for m in METHODS
    ]  # fmt: skip
    run_all(store, b_jobs, args.jobs)
    reader = StoreReader(store)
    rows = []
    for s in args.seeds:
        for m in METHODS:
            h_a = a_entropy(a_runs[(m, s)])
            rows.append(
                {"method": m, "seed": s, "H_end_A": h_a}
                | b_metrics(reader, f"B-{m}-s{s}", args.threshold, args.steps_b)
            )
    df = pd.DataFrame(rows)
    pd.set_option("display.width", 200)
    print(df.round(3).to_string(index=False))
    agg = df.drop(columns="seed").groupby("method", sort=False).agg(["mean", "std"]).round(3)
    print(
        f"\nmean and std over seeds {args.seeds}; threshold {args.threshold} on the {SMOOTH}-step mean reward"
    )
    print(agg.to_string())
    print(versus_grpo(df))
    if args.figure:
        figure(reader, {m: [f"B-{m}-s{s}" for s in args.seeds] for m in METHODS}, args.threshold, args.figure)


if __name__ == "__main__":
    main()
