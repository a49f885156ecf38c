"""Controllers bench: GRPO and every entropy controller on one demo config and seed, with pass/fail marks.

    .venv/bin/python bench/controllers.py [--jobs N] [--seeds S ...] [--steps N] [--only NAME ...] [--store DIR]
                                          [--set key=value ...]

Runs: `grpo` (no controller, the collapse baseline), one run per controller with the default target (H0, the
first step's entropy), and tracking runs with target_entropy = H0/2: REPO-R and the bonus on the demo config
(`track-repo_r`, `track-bonus`, reported, not judged), and on the tracking setup where both can track
(`track-bonus-onpolicy`, `track-repo_r-onpolicy`: responses capped at the task's answer length, a warm-up
that teaches stopping after a slip, 48 prompts per step, one update per rollout; each controller with its
tracking gains); see TRACK_SETUPS; and, not in the default set, `sched-id`, `sched-did`, `sched-od`: REPO-R
with its tracking gains following each setpoint schedule (analysis/schedules.py, base H0/2, amplitude 0.5) on
the tracking setup with 96 prompts per step. H0 comes from a one-step probe run with lr 0 per setup (every run of a
setup shares the seed and the warm-started model, so the first rollout is the same), or from `--target`. The
demo config is trainer.sample_runs.COMMON, the one the sample runs use; `--set` overrides it and the
tracking setups. `--jobs 2` (the default) trains two runs at a time, each in its own process on one torch
thread (the trainer's `threads=1`): two default-threaded trainings on 2 cores took 3.8x as long as two
single-threaded ones. `--seeds 0 1 2` repeats the whole set per seed (each seed in its own sub-store),
judges each seed apart and ends with how many seeds passed each mark.

Columns (over the store's per-step scalars): wall s; H0; final entropy = mean of the last 10% of steps;
change vs H0; ratio to GRPO's final entropy; reward, pass@1, pass@k = means of the last 10%; adv/zero_frac,
clip/frac_high, controller/at_bound = means over the run; track = max |smoothed entropy - target| / target
over the second half (smoothed: centred 11-step moving mean, which removes per-step sampling noise but no
controller oscillation slower than ~10 steps; only full windows, so the last 5 steps count through the
windows that end on them, not through a 6-step mean); bias = mean (entropy - target) / target over the second
half; floor = the same max deviation for the run's final policy frozen (lr 0, 100 steps, same batch shape) around
its own mean: what the entropy estimate's sampling noise alone gives, the best any controller can score.
Scheduled runs: MAD = mean |entropy - target| / target over steps 20+ (per step, unsmoothed); lag = the
shift in steps (0-30) that best aligns the entropy with its schedule, @lag = the MAD at that shift.

Acceptance marks: GRPO entropy falls >= 40%; every controller ends >= 2x GRPO's final entropy;
REPO-R and ADAPO keep reward >= 0.9x and pass@k >= GRPO's, REPO-R reward >= GRPO's; the entropy bonus ends
within [0.6, 1.3]x its target with reward >= 0.9x GRPO's (docs/controller_defaults.md); tracking runs on the
tracking setups within 15% (scheduled runs: MAD within 15%); each run <= 180 s.
Torch is imported only when a run starts.
"""

import argparse
import json
import math
import multiprocessing
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analysis import schema  # noqa: E402

CONTROLLER_RUNS = ["repo_r", "repo_d", "adapo", "entropy_bonus", "clip_cov", "kl_cov", "ce_gppo"]
# On the demo config the mean entropy is dominated by derailed responses: after a rare sampled token the toy
# model emits near-uniform tokens (ln 89 = 4.5 nats each) up to max_new_tokens, so 4% of the tokens carry
# half the entropy and the estimate is heavy-tailed. The tracking setup caps responses at the longest answer
# + EOS (3 tokens), warms the model up on demonstrations that also show stopping after a slip (P(eos) after
# a random token 0.57 -> 0.98), averages over 48 prompts per step and updates once per rollout (on-policy,
# lr 1e-3): with 2 epochs x 2 minibatches the policy's entropy moved ~20% from one step to the next.
TRACK_SETUPS = {
    "demo": [],
    "onpolicy": [
        "max_new_tokens=3",
        "warmup_derail_frac=0.1",
        "prompts_per_step=48",
        "epochs_per_step=1",
        "minibatches=1",
        "lr=1e-3",
    ],
}
# Schedules are judged per step, unsmoothed, so the entropy estimate's sampling noise counts in full: twice the
# prompts lowered the mean did / od MADs from 16.9% / 16.9% (48 prompts, seeds 0-2) to 15.1% / 15.8% (seeds
# 0-5; docs/controllers.md#schedules).
TRACK_SETUPS["schedule"] = [*TRACK_SETUPS["onpolicy"], "prompts_per_step=96"]
# The bonus as tuned for tracking: paid only below 1 nat per token (uncapped, it pushed contexts that the
# reward does not constrain to near-uniform, and the frozen final policy's entropy varied 28% between
# 11-step windows; capped, 3%), a small penalty allowed above the target.
BONUS_TRACK = [
    "bonus_token_cap=1.0",
    "bonus_coef_max=0.5",
    "bonus_coef_min=-0.05",
    "bonus_kp=1.5",
    "bonus_gain=0.2",
]
# REPO-R as tuned for tracking: a shorter ladder (ζ_min 0.05: 4.3 rungs to ζ_max instead of 6.6, so
# crossing zero takes less time), a slower integral (the defaults oscillated slowly, period ~60 steps,
# ±20-30%) and a strong proportional term: a moving target asks for a rate the slow integral cannot give
# (KP 14 instead of 6 cut the did / od MADs at seeds 1, 3, 4 from 16.7% / 17.6% to 11.7% / 14.5%), and with
# the held integral KP 6 no longer held the constant target (docs/controllers.md#schedules). ζ_max 1, not the
# default 1.25 (chosen later, for holding H0 on the sample-runs config): every tracking figure was measured at 1.
REPO_TRACK = ["zeta_min=0.05", "zeta_max=1", "zeta_ki=1", "zeta_kp=14"]


SCHEDULES = ["id", "did", "od"]  # each followed by REPO-R (tracking gains) in a `sched-` run


class TrackRun(NamedTuple):
    controller: str
    setup: str  # a TRACK_SETUPS key
    knobs: list[str]  # the controller's tracking overrides
    judged: bool  # marked against TRACK_TOL, else shown as INFO
    schedule: str = "constant"  # an analysis.schedules name; a scheduled run is judged by its MAD


TRACK_RUNS = {
    "track-repo_r": TrackRun("repo_r", "demo", [], False),
    "track-bonus": TrackRun("entropy_bonus", "demo", [], False),
    "track-bonus-onpolicy": TrackRun("entropy_bonus", "onpolicy", BONUS_TRACK, True),
    "track-repo_r-onpolicy": TrackRun("repo_r", "onpolicy", REPO_TRACK, True),
    "track-adapo": TrackRun("adapo", "demo", [], False),
    **{
        f"sched-{s}": TrackRun("repo_r", "schedule", [*REPO_TRACK, f"schedule={s}"], True, s)
        for s in SCHEDULES
    },
}
DEFAULT_RUNS = [
    "grpo",
    *CONTROLLER_RUNS,
    *[n for n in TRACK_RUNS if n != "track-adapo" and not n.startswith("sched-")],
]
ALL_RUNS = ["grpo", *CONTROLLER_RUNS, *TRACK_RUNS]

GRPO_DROP = 0.40  # GRPO entropy must fall by at least this fraction of H0
ENTROPY_RATIO = 2.0  # controllers end with >= this x GRPO's final entropy
REWARD_RATIO = 0.9  # REPO-R and ADAPO keep reward >= this x GRPO's
HOLD_BAND = (0.6, 1.3)  # the bonus ends within this x its target (both means over the last 10% of steps)
TRACK_TOL = 0.15  # tracking runs within this relative band over the second half
SCHED_FROM = 20  # scheduled runs: MAD from this step on
MAX_LAG = 30  # steps searched for the lag that best aligns the entropy with its schedule
WALL_LIMIT = 180.0  # seconds per run
SMOOTH = 11  # centred moving-mean window for the tracking deviation
FLOOR_STEPS = 100  # steps of the frozen-policy run that measures the noise floor
KEYS = [
    schema.ENTROPY_MEAN,
    schema.ENTROPY_TARGET,
    schema.REWARD_MEAN,
    schema.PASS_AT_1,
    schema.PASS_AT_K,
    schema.ADV_ZERO_FRAC,
    schema.CLIP_FRAC_HIGH,
    schema.CLIP_FRAC_LOW,
    schema.CONTROLLER_AT_BOUND,
]


@dataclass
class Row:
    run: str
    seed: int
    wall_s: float
    h0: float
    final: float
    change: float
    reward: float
    pass1: float
    passk: float
    zero_frac: float
    clip_high: float
    clip_low: float
    at_bound: float
    target: float = math.nan  # entropy/target: its mean over the last 10% of steps
    track: float = math.nan
    bias: float = math.nan
    floor: float = math.nan
    mad: float = math.nan
    lag: int = 0
    lag_mad: float = math.nan
    ratio: float = math.nan
    marks: list[str] = field(default_factory=list)


def run_overrides(name: str, targets: dict[str, float]) -> list[str]:
    """The `--set` overrides of a bench run, on top of the demo config."""
    if name == "grpo":
        return ["controller=none"]
    if name in TRACK_RUNS:
        run = TRACK_RUNS[name]
        return [
            f"controller={run.controller}",
            *TRACK_SETUPS[run.setup],
            *run.knobs,
            f"target_entropy={targets[run.setup]:.6f}",
        ]
    return [f"controller={name}"]


def train_run(store: Path, name: str, overrides: list[str]) -> float:
    """Train one run in-process; its wall time in seconds."""
    from trainer.config import load_config
    from trainer.loop import train
    from trainer.sample_runs import COMMON

    cfg = load_config(None, [*COMMON, "alerts=off", *overrides])  # alert lines would flood the output
    t0 = time.perf_counter()
    train(cfg, store, run_id=name, progress=False)
    return time.perf_counter() - t0


def moving_mean(xs: list[float], k: int) -> list[float | None]:
    """Centred k-step moving mean; None where the window does not fit (the first and last k // 2 steps)."""
    h = k // 2
    return [sum(xs[i - h : i + h + 1]) / k if h <= i < len(xs) - h else None for i in range(len(xs))]


def read_series(store: Path, name: str, keys: list[str]) -> dict[str, list[float]]:
    from analysis.store_reader import StoreReader

    df = StoreReader(store).scalars([name], keys, max_points=100_000)
    return {k: g.sort_values("step")["value"].astype(float).tolist() for k, g in df.groupby("key")}


def probe_h0(store: Path, setup: str, extra: list[str]) -> float:
    """H0 of a tracking setup: the first step's entropy, from a one-step run with lr 0."""
    name = f"h0-probe-{setup}"
    train_run(store, name, [*TRACK_SETUPS[setup], *extra, "steps=1", "lr=0", "controller=none"])
    return read_series(store, name, [schema.ENTROPY_MEAN])[schema.ENTROPY_MEAN][0]


def noise_floor(store: Path, name: str, overrides: list[str]) -> float:
    """Max deviation of the smoothed entropy from its mean for run `name`'s final policy, frozen."""
    from trainer.checkpoint import latest_checkpoint

    ckpt = latest_checkpoint(store / name)
    frozen = f"{name}-frozen"
    train_run(store, frozen, [*overrides, f"model={ckpt}", "lr=0", f"steps={FLOOR_STEPS}", "controller=none"])
    ent = read_series(store, frozen, [schema.ENTROPY_MEAN])[schema.ENTROPY_MEAN]
    mean = sum(ent) / len(ent)
    return max(abs(x - mean) / mean for x in moving_mean(ent, SMOOTH) if x is not None)


def bench_run(store: Path, name: str, overrides: list[str], extra: list[str], seed: int) -> Row:
    """Train, measure and (for a tracking run) measure the noise floor of one bench run."""
    extra = [*extra, f"seed={seed}"]
    wall = train_run(store, name, [*overrides, *extra])  # --set last: it overrides the setups too
    tracking = name in TRACK_RUNS
    row = measure(store, name, seed, wall, tracking)
    if tracking and TRACK_RUNS[name].schedule == "constant":
        row.floor = noise_floor(store, name, [*TRACK_SETUPS[TRACK_RUNS[name].setup], *extra])
    print(
        f"[{name} seed {seed}] {wall:.0f} s  H0 {row.h0:.3f} -> {row.final:.3f}  reward {row.reward:.3f}",
        flush=True,
    )
    return row


def measure(store: Path, name: str, seed: int, wall: float, tracking: bool) -> Row:
    series = read_series(store, name, KEYS)
    ent = series[schema.ENTROPY_MEAN]
    n = len(ent)
    tail = max(1, n // 10)

    def last(key: str) -> float:
        xs = series.get(key, [])
        return sum(xs[-tail:]) / len(xs[-tail:]) if xs else math.nan

    def mean(key: str) -> float:
        xs = series.get(key, [])
        return sum(xs) / len(xs) if xs else math.nan

    h0 = ent[0]
    final = last(schema.ENTROPY_MEAN)
    row = Row(
        run=name,
        seed=seed,
        wall_s=wall,
        h0=h0,
        final=final,
        change=final / h0 - 1,
        reward=last(schema.REWARD_MEAN),
        pass1=last(schema.PASS_AT_1),
        passk=last(schema.PASS_AT_K),
        zero_frac=mean(schema.ADV_ZERO_FRAC),
        clip_high=mean(schema.CLIP_FRAC_HIGH),
        clip_low=mean(schema.CLIP_FRAC_LOW),
        at_bound=mean(schema.CONTROLLER_AT_BOUND),
        target=last(schema.ENTROPY_TARGET),
    )
    if tracking:
        target = series[schema.ENTROPY_TARGET]
        smooth = moving_mean(ent, SMOOTH)
        half = range(n // 2, n)
        row.track = max(abs(smooth[i] - target[i]) / target[i] for i in half if smooth[i] is not None)
        row.bias = sum((ent[i] - target[i]) / target[i] for i in half) / len(half)
        row.mad = lagged_mad(ent, target, 0)
        # at least half of the judged steps stay in at every lag tried
        lags = range(max(0, min(MAX_LAG, (n - SCHED_FROM) // 2)) + 1)
        row.lag = min(lags, key=lambda k: lagged_mad(ent, target, k))
        row.lag_mad = lagged_mad(ent, target, row.lag)
    return row


def lagged_mad(ent: list[float], target: list[float], lag: int) -> float:
    """Mean |H(t) - target(t - lag)| / target(t - lag) over t >= SCHED_FROM + lag: the schedule MAD at lag 0."""
    idx = range(SCHED_FROM + lag, len(ent))
    return sum(abs(ent[i] - target[i - lag]) / target[i - lag] for i in idx) / max(len(idx), 1)


def judge(rows: dict[str, Row]) -> bool:
    """Set each row's marks; True when every checked point holds."""
    ok = True

    def mark(row: Row, cond: bool, what: str) -> None:
        nonlocal ok
        ok &= cond
        row.marks.append(("PASS " if cond else "FAIL ") + what)

    grpo = rows.get("grpo")
    for row in rows.values():
        mark(row, row.wall_s <= WALL_LIMIT, f"wall<={WALL_LIMIT:.0f}s")
        if grpo:
            row.ratio = row.final / grpo.final
    if grpo:
        mark(grpo, -grpo.change >= GRPO_DROP, f"drop>={GRPO_DROP:.0%}")
    for name, row in rows.items():
        if name in CONTROLLER_RUNS and grpo:
            mark(row, row.ratio >= ENTROPY_RATIO, f"H>={ENTROPY_RATIO:g}xGRPO")
        if name in ("repo_r", "adapo") and grpo:
            mark(row, row.reward >= REWARD_RATIO * grpo.reward, f"reward>={REWARD_RATIO:g}xGRPO")
            mark(row, row.passk >= grpo.passk, "pass@k>=GRPO")
        if name == "repo_r" and grpo:
            mark(row, row.reward >= grpo.reward, "reward>=GRPO")
        if name == "entropy_bonus":
            lo, hi = HOLD_BAND
            mark(row, lo <= row.final / row.target <= hi, f"H in [{lo:g},{hi:g}]xtarget")  # NaN: fails
            if grpo:
                mark(row, row.reward >= REWARD_RATIO * grpo.reward, f"reward>={REWARD_RATIO:g}xGRPO")
        if name in TRACK_RUNS and TRACK_RUNS[name].schedule != "constant":
            mark(row, row.mad <= TRACK_TOL, f"MAD<={TRACK_TOL:.0%}")
        elif name in TRACK_RUNS and TRACK_RUNS[name].judged:
            mark(row, row.track <= TRACK_TOL, f"track<={TRACK_TOL:.0%}")
        elif name in TRACK_RUNS:
            row.marks.append(f"INFO track {row.track:.0%} on the {TRACK_RUNS[name].setup} setup, not judged")
    return ok


def shown_marks(marks: list[str]) -> str:
    """The table's marks column: the failures, else the notes, else ok."""
    fails = [m for m in marks if m.startswith("FAIL")]
    return "; ".join(fails or [m for m in marks if m.startswith("INFO")]) or "ok"


def table(rows: dict[str, Row]) -> str:
    head = (
        f"{'run':<22}{'wall s':>7}{'H0':>7}{'final H':>8}{'vs H0':>7}{'xGRPO':>6}{'reward':>7}{'pass@1':>7}"
        f"{'pass@k':>7}{'zero':>6}{'clipHi':>7}{'clipLo':>7}{'bound':>6}{'track':>7}{'bias':>6}{'floor':>7}"
        f"{'MAD':>6}{'lag':>4}{'@lag':>6}  marks"
    )
    lines = [head, "-" * len(head)]

    def f(x: float, spec: str) -> str:
        return "-" if math.isnan(x) else format(x, spec)

    for r in rows.values():
        lines.append(
            f"{r.run:<22}{r.wall_s:>7.0f}{r.h0:>7.3f}{r.final:>8.3f}{f(r.change, '+.0%'):>7}"
            f"{f(r.ratio, '.2f'):>6}{r.reward:>7.3f}{r.pass1:>7.3f}{r.passk:>7.3f}{r.zero_frac:>6.2f}"
            f"{r.clip_high:>7.3f}{r.clip_low:>7.3f}{r.at_bound:>6.2f}{f(r.track, '.0%'):>7}"
            f"{f(r.bias, '+.0%'):>6}{f(r.floor, '.0%'):>7}{f(r.mad, '.0%'):>6}"
            f"{r.lag if not math.isnan(r.mad) else '-':>4}{f(r.lag_mad, '.0%'):>6}  {shown_marks(r.marks)}"
        )
    return "\n".join(lines)


def seed_counts(by_seed: dict[int, dict[str, Row]]) -> list[str]:
    """Per run and mark: on how many seeds it passed."""
    counts: dict[tuple[str, str], list[bool]] = {}
    for rows in by_seed.values():
        for r in rows.values():
            for m in r.marks:
                verdict, _, what = m.partition(" ")
                if verdict in ("PASS", "FAIL"):
                    counts.setdefault((r.run, what), []).append(verdict == "PASS")
    return [f"  {run:<22} {what:<20} {sum(v)}/{len(v)} seeds" for (run, what), v in counts.items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="override the demo config's steps")
    parser.add_argument(
        "--only", nargs="*", choices=ALL_RUNS, help=f"runs to do (default: {' '.join(DEFAULT_RUNS)})"
    )
    parser.add_argument("--store", default=None, help="run store (default: a temporary directory)")
    parser.add_argument("--target", type=float, default=None, help="absolute tracking target (default: H0/2)")
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        help="key=value for every run (over the setups too)",
    )
    parser.add_argument("--json", default=None, help="also write the rows as JSON to this file")
    parser.add_argument("--jobs", type=int, default=2, help="runs trained at a time, one torch thread each")
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0], help="seeds; each repeats the set (default 0)"
    )
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    if any(x.partition("=")[0].strip() == "seed" for x in args.sets):
        parser.error("pass seeds with --seeds, not --set seed=...")
    names = sorted(args.only or DEFAULT_RUNS, key=ALL_RUNS.index)
    seeds = list(dict.fromkeys(args.seeds))
    extra = [*args.sets, *([f"steps={args.steps}"] if args.steps else [])]
    tmp = None if args.store else tempfile.TemporaryDirectory(prefix="ctl-bench-")
    root = Path(args.store or tmp.name)
    stores = {sd: root if len(seeds) == 1 else root / f"seed{sd}" for sd in seeds}
    taken = [str(stores[sd] / n) for sd in seeds for n in names if (stores[sd] / n).exists()]
    if taken:
        parser.error(f"the store already holds {', '.join(taken)}; pass an empty or new --store")
    setups = sorted({TRACK_RUNS[n].setup for n in names if n in TRACK_RUNS})
    targets = {
        sd: {
            s: args.target if args.target is not None else probe_h0(stores[sd], s, [*extra, f"seed={sd}"]) / 2
            for s in setups
        }
        for sd in seeds
    }
    per_job = ["threads=1", *extra] if args.jobs > 1 else extra  # the trainer's key; --set threads=N wins
    jobs = [(stores[sd], n, run_overrides(n, targets[sd]), per_job, sd) for sd in seeds for n in names]
    if args.jobs == 1:
        done = [bench_run(*job) for job in jobs]
    else:
        # spawn, not fork: a forked child would inherit this process's torch thread pool state.
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx) as pool:
            done = list(pool.map(bench_run, *zip(*jobs, strict=True)))
    by_seed = {sd: {r.run: r for r in done if r.seed == sd} for sd in seeds}
    verdicts = [judge(rows) for rows in by_seed.values()]  # every seed is judged (all() would stop early)
    ok = all(verdicts)
    print(f"demo config: {' '.join(extra) or '(trainer.sample_runs.COMMON)'}")
    for sd, rows in by_seed.items():
        print(f"\nseed {sd}")
        for setup in setups:
            where = " ".join(TRACK_SETUPS[setup]) or "the demo config"
            print(f"tracking setup {setup} ({where}): target {targets[sd][setup]:.4f}")
        print(table(rows))
    print()
    if len(seeds) == 1:
        for r in done:
            for m in r.marks:
                print(f"  {r.run:<22} {m}")
    else:
        print("\n".join(seed_counts(by_seed)))
    print("ALL PASS" if ok else "SOME FAIL")
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in done], indent=1))
    if tmp:
        tmp.cleanup()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
