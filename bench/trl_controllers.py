"""Entropy controllers inside TRL's GRPOTrainer: plain GRPO vs REPO-R vs the auto-tuned entropy bonus over seeds,
and a live target_entropy change sent to a running TRL run through control.json (docs/trl.md, "Controllers").

    python bench/trl_controllers.py [--store DIR] [--steps 800] [--seeds 0 1 2] [--lr 5e-4] [--prompts 8]
                                    [--trl num_iterations=2 --trl steps_per_generation=2] [--live-step 200]
                                    [--controllers repo_r entropy_bonus trl_adaptive] [--no-grpo]
                                    [--set zeta_max=3 ...] [--no-live] [--jobs 2]

Each run is examples/trl_grpo.py in its own process (one CPU thread), --jobs at a time. Final = mean over the
last 10% of steps. `trl_adaptive` is TRL's own controller (`use_adaptive_entropy`, its default gains) with
`entropy_target` set to the seed's H0, read from the seed's other runs (the first step's entropy, the same for
every controller at a seed), so every controller aims at H0. Per controller over the seeds: the mean absolute
deviation of the entropy from H0 over all steps (relative to H0) and the final reward, as IQM with 95% CI,
and each pair's P(A > B) with CI and the verdict of `entropyscope compare` (analysis.stats).
The default setup is our sample-runs configuration in TRL's terms: 16 prompts x 8 completions per rollout, trained
on as 2 minibatches (`steps_per_generation=2`) for 2 passes (`num_iterations=2`), lr 5e-4, 200 rollouts.
The live run: `--live-controller` (the bonus) started with target 0.5 x H0 (so it lets entropy fall as GRPO
does); at step `--live-step` this script writes control.json with target_entropy = H0, as the dashboard's
Control page would, and reports the entropy before and 30 steps after the change.
"""

import argparse
import itertools
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from analysis import stats
from analysis.control import write_control
from analysis.metrics import final_window
from analysis.store_reader import StoreReader
from analysis.store_writer import read_run_json

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "trl_grpo.py"
SETUP = ["num_iterations=2", "steps_per_generation=2"]  # GRPOConfig fields of the default setup
CONTROLLERS = ("none", "repo_r", "entropy_bonus", "trl_adaptive")
OURS = ("none", "repo_r", "entropy_bonus")  # trained through the integration's controllers


def run(
    store: Path, run_id: str, steps: int, seed: int, lr: float, prompts: int, trl: list[str], controller: str,
    target: float | None = None, knobs: tuple[str, ...] = (),
) -> None:  # fmt: skip
    cmd = [sys.executable, str(EXAMPLE), "--store", str(store), "--steps", str(steps), "--seed", str(seed),
           "--lr", str(lr), "--prompts", str(prompts), "--controller", controller, "--run-id", run_id,
           *(f"--set={k}" for k in knobs), *(f"--trl={f}" for f in trl)]  # fmt: skip
    if controller == "trl_adaptive":  # TRL's own controller; ours stays off
        cmd[cmd.index("--controller") + 1] = "none"
        cmd += ["--trl=use_adaptive_entropy=true", f"--trl=entropy_target={target}"]
    elif target is not None:
        cmd += ["--target-entropy", str(target)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def series(store: Path, run_id: str, key: str) -> np.ndarray:
    reader = StoreReader(store)
    try:
        df = reader.query(
            "SELECT step, value FROM steps WHERE key = ? ORDER BY step", [key], ["steps"], [run_id]
        )
    finally:
        reader.close()
    return df["value"].to_numpy()


def final(values: np.ndarray) -> float:
    return float(np.nanmean(values[-final_window(len(values)) :]))


def change_target_at(store: Path, run_id: str, step: int, target: float, sent: dict) -> None:
    """Wait until the run has logged `step`, then write control.json (the dashboard's way)."""
    while True:
        info = read_run_json(store / run_id) or {}
        if (info.get("last_step") or 0) >= step:
            sent["step"] = info["last_step"]
            write_control(store / run_id, {"target_entropy": target})
            return
        if info.get("status") in ("finished", "failed"):
            return
        time.sleep(0.2)


def over_seeds(rows: list[tuple], chosen: list[str]) -> str:
    """Per controller: MAD from H0 and final reward as IQM [95% CI]; per pair, P(A > B) [CI] and the verdict."""
    metrics = {"MAD from H0": 5, "final reward": 4}
    out = ["\nover seeds (IQM [95% bootstrap CI]):"]
    vals = {(c, m): np.array([r[i] for r in rows if r[1] == c]) for c in chosen for m, i in metrics.items()}
    for c in chosen:
        parts = []
        for m in metrics:
            g = stats.group_stats(vals[(c, m)])
            parts.append(f"{m} {g.iqm:.3f} [{g.iqm_ci[0]:.3f}, {g.iqm_ci[1]:.3f}]")
        out.append(f"  {c:<14} n {len(vals[(c, 'final reward')])}: " + "; ".join(parts))
    for a, b in itertools.combinations(chosen, 2):
        for m in metrics:
            pair = stats.pair_stats(vals[(a, m)], vals[(b, m)])
            higher = "ends further from H0" if m.startswith("MAD") else "ends with higher reward"
            out.append(f"  {m}: {stats.verdict(a, b, pair, higher)}")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--store", type=Path, default=Path("runs-trl-controllers"))
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--prompts", type=int, default=8, help="prompts per optimizer step, 8 completions each")
    p.add_argument("--trl", action="append", metavar="KEY=VALUE",
                   help=f"a GRPOConfig field for every run, repeatable (default: {' '.join(SETUP)})")  # fmt: skip
    p.add_argument("--live-step", type=int, default=200)
    p.add_argument("--live-controller", default="entropy_bonus", choices=OURS[1:])
    p.add_argument("--controllers", nargs="+", default=list(OURS[1:]), choices=CONTROLLERS[1:],
                   help="beside plain GRPO (default: repo_r entropy_bonus)")  # fmt: skip
    p.add_argument("--no-live", action="store_true", help="skip the live target change")
    p.add_argument("--no-grpo", action="store_true", help="skip plain GRPO (the ratios' baseline)")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time, one CPU thread each (default: 1)")
    p.add_argument(
        "--set", dest="knobs", action="append", default=[], metavar="KEY=VALUE",
        help="a controller knob for the REPO-R and bonus runs, e.g. zeta_max=3 (repeatable)",
    )  # fmt: skip
    args = p.parse_args()
    args.trl = SETUP if args.trl is None else args.trl
    chosen = [*(() if args.no_grpo else ("none",)), *args.controllers]

    def train(controller: str, seed: int, target: float | None = None) -> None:
        run_id = f"{controller}-s{seed}"
        if (args.store / run_id / "run.json").exists():
            return
        t0 = time.perf_counter()
        knobs = tuple(args.knobs) if controller in ("repo_r", "entropy_bonus") else ()
        run(args.store, run_id, args.steps, seed, args.lr, args.prompts, args.trl, controller, target, knobs)
        print(f"{run_id}: {time.perf_counter() - t0:.0f} s", flush=True)

    with ThreadPoolExecutor(args.jobs) as pool:  # each run is its own process: threads only wait on them
        list(pool.map(lambda job: train(*job), [(c, s) for s in args.seeds for c in chosen if c in OURS]))
        if "trl_adaptive" in chosen:
            if not any(c in OURS for c in chosen):
                p.error(
                    "trl_adaptive reads each seed's H0 from another controller's run: add one to --controllers"
                )
            h0 = {s: series(args.store, f"{next(c for c in chosen if c in OURS)}-s{s}", "entropy/mean")[0]
                  for s in args.seeds}  # fmt: skip
            list(pool.map(lambda s: train("trl_adaptive", s, float(h0[s])), args.seeds))
    rows = []
    for seed in args.seeds:
        for controller in chosen:
            run_id = f"{controller}-s{seed}"
            h, r = series(args.store, run_id, "entropy/mean"), series(args.store, run_id, "reward/mean")
            rows.append((seed, controller, h[0], final(h), final(r), float(np.mean(np.abs(h / h[0] - 1)))))
    print(
        "\nseed controller       H0     final H  vs H0   vs GRPO H  final reward  vs GRPO reward  MAD from H0"
    )
    for seed, controller, h0, h, r, mad in rows:
        base = next((x for x in rows if x[0] == seed and x[1] == "none"), None)
        vs_h, vs_r = (f"{h / base[3]:8.2f}x", f"{r / base[4]:12.2f}x") if base else ("-", "-")
        print(f"{seed:>4} {controller:<14} {h0:.3f}  {h:.3f}  {h / h0 - 1:+6.0%}  {vs_h:>9}  "
              f"{r:11.3f}  {vs_r:>13}  {mad:10.1%}")  # fmt: skip
    print(over_seeds(rows, chosen))

    if args.no_live:
        return
    # The live change: the controller told at step live_step to hold H0 instead of 0.5 x H0.
    run_id = f"{args.live_controller}-live"
    h0 = rows[0][2]
    sent: dict = {}
    if not (args.store / run_id / "run.json").exists():
        watcher = threading.Thread(
            target=change_target_at, args=(args.store, run_id, args.live_step, h0, sent)
        )
        watcher.start()
        run(
            args.store,
            run_id,
            args.live_step + 60,
            args.seeds[0],
            args.lr,
            args.prompts,
            args.trl,
            args.live_controller,
            target=0.5 * h0,
        )
        watcher.join()
    h = series(args.store, run_id, "entropy/mean")
    at = sent.get("step", args.live_step)
    before, after = h[at - 10 : at].mean(), h[at + 20 : at + 30].mean()
    print(f"\nlive: {args.live_controller} target {0.5 * h0:.3f} -> {h0:.3f} written after step {at}: mean entropy steps "
          f"{at - 9}-{at} {before:.3f}, steps {at + 21}-{at + 30} {after:.3f} "
          f"(gap to the new target {h0 - before:.3f} -> {h0 - after:.3f})")  # fmt: skip


if __name__ == "__main__":
    main()
