"""Benchmark: a store of a thousand runs, today's code against a baseline commit, side by side.

    PYTHONPATH=$PWD .venv/bin/python bench/thousand_runs.py [--runs 1000] [--base 8824d6d] [--repeat 3]
                                                            [--store DIR] [--no-browser]

Builds (once; kept in `--store`, default a folder in the temp dir, reused while its size matches) `--runs`
runs of 200–2,000 steps each logging every key of analysis.schema.METRIC_KEYS, one Parquet segment per run
written directly (as a compacted run leaves it; bench/watch_bench.write_run), 4 of them running with a
fresh heartbeat; each ended run with the alert events a trainer judging the default rules records, and
sealed as the trainer seals it at the end (analysis.run_seal). Each side (the baseline: a `git worktree`
of `--base` in the temp dir; now: this tree) gets its own copy of that store, since `watch` records alert
events into it, and is measured in a child process whose PYTHONPATH and working directory are that tree,
while a writer appends a one-step segment to each live run every second and renews its heartbeat.
Figures, medians of `--repeat` after a first call:
- `entropyscope runs` and `entropyscope watch --once`: wall time of the CLI as a user runs it (a new process
  each; "first" is the first call on the fresh copy: no cache of any kind, the runs' seals as our tools
  leave them; "unsealed" the first call once the seals and caches are removed, as on a store that older
  versions or another trainer wrote);
- Runs page first paint and Compare with 50 runs (deep link /compare?runs=...): Chromium, from navigation to
  the table's canvas / all 50 traces drawn (bench/dashboard_bench), "cold" right after the server started,
  "new ctx" the median over new browser contexts; timed before the unsealed CLI calls remove the seals.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

if TYPE_CHECKING:
    from analysis.alerts import AlertEngine

ROOT = Path(__file__).resolve().parents[1]
ENTROPYSCOPE = [str(Path(sys.executable).parent / "entropyscope")]  # the console script, as a user runs it
LIVE = 4
COMPARED = 50
GOALS = {"runs": 1.0, "watch": 2.0, "runs_page": 2.0, "compare": 3.0}


def build(store: Path, runs: int) -> list[str]:
    """`runs` runs of 200–2,000 steps, one steps segment each; the first LIVE of them running. Each ended
    run is left as the trainer leaves it: its alert transitions recorded (the trainer's engine, default
    rules), compacted (one segment per table) and sealed (analysis.run_seal, the function the trainer calls)."""
    from analysis.alerts import AlertEngine, load_rules
    from analysis.run_seal import seal_run
    from analysis.schema import METRIC_KEYS
    from bench.watch_bench import synthetic_run, write_run

    rng = np.random.default_rng(0)
    rules = load_rules()
    ids = [f"run{i:04d}" for i in range(runs)]
    for i, run_id in enumerate(ids):
        steps = int(rng.integers(200, 2001))
        traces = synthetic_run(rng, steps, pace=10 ** rng.uniform(-4, -2), keys=list(METRIC_KEYS))
        write_run(store, run_id, traces, segment_steps=steps, running=i < LIVE)
        if i >= LIVE:
            record_alerts(store / run_id, traces, AlertEngine(rules))
            seal_run(store / run_id)
    (store / ".bench.json").write_text(json.dumps({"runs": runs, "sealed": True}))
    return ids


def record_alerts(run_dir: Path, traces: dict[str, np.ndarray], engine: "AlertEngine") -> None:
    """What a trainer judging `alerts: default` live records: every transition, in one events segment (as
    compaction leaves it)."""
    from analysis.watch import record_events

    keys = list(traces)
    columns = np.stack([traces[k] for k in keys], axis=1).tolist()
    transitions = [
        t for i, row in enumerate(columns) for t in engine.observe(i + 1, dict(zip(keys, row, strict=True)))
    ]
    if transitions:
        record_events(run_dir, transitions)


def live_writer(store: Path, stop: threading.Event) -> None:
    """Every second, one more step for each live run (a new segment) and a fresh heartbeat."""
    from analysis.atomic import write_json_atomic, write_parquet_atomic
    from analysis.schema import ENTROPY_MEAN, REWARD_MEAN, TABLES

    seq = 1
    while not stop.wait(1.0):
        seq += 1
        for i in range(LIVE):
            run_dir = store / f"run{i:04d}"
            info = json.loads((run_dir / "run.json").read_text())
            step = int(info["last_step"]) + 1
            table = pa.table(
                {"run_id": [run_dir.name] * 2, "step": [step] * 2, "key": [ENTROPY_MEAN, REWARD_MEAN],
                 "value": [0.5, 0.1], "wall_time": [time.time()] * 2},
                schema=TABLES["steps"],
            )  # fmt: skip
            write_parquet_atomic(run_dir / "steps" / f"{seq:08d}-1-{seq:08x}.parquet", table)
            write_json_atomic(run_dir / "run.json", info | {"last_step": step, "heartbeat": time.time()})


def timed_cli(args: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([*ENTROPYSCOPE, *args], capture_output=True, text=True)
    took = time.perf_counter() - t0
    if proc.returncode not in (0, 1):  # watch exits 1 while a critical alert fires
        raise SystemExit(f"{args[0]} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return took


def cli_calls(store: Path) -> dict[str, list[str]]:
    return {"runs": ["runs", "--store", str(store)], "watch": ["watch", "--store", str(store), "--once"]}


def cli_figures(store: Path, repeat: int) -> dict[str, float]:
    """The first call on the store as written, then the median of `repeat` later calls."""
    out = {}
    for name, args in cli_calls(store).items():
        out[f"{name} first"] = timed_cli(args)
        out[name] = statistics.median(timed_cli(args) for _ in range(repeat))
    return out


def unsealed_figures(store: Path) -> dict[str, float]:
    """One first call each once every seal and cache is gone: a store older tools or another trainer wrote."""
    forget(store, seals=True)
    return {f"{name} unsealed": timed_cli(args) for name, args in cli_calls(store).items()}


def forget(store: Path, seals: bool) -> None:
    """Remove the store's caches and, with `seals`, every run's sealed values (analysis.run_seal)."""
    # Spelled out, not imported: a side measures a baseline tree, which may not have these names.
    shutil.rmtree(store / ".cache", ignore_errors=True)  # analysis.run_cache.CACHE_DIR
    for path in (*store.glob(".watch_*"), *(store.glob("*/.summary.json") if seals else ())):  # RUN_FILE
        path.unlink()


def browser_figures(store: Path, ids: list[str], repeat: int, floor: bool) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    from analysis.schema import ENTROPY_MEAN
    from bench.dashboard_bench import (
        CHROMIUM,
        CHROMIUM_ARGS,
        COMPARE_READY,
        FLOOR_APP,
        RUNS_READY,
        TIMEOUT_MS,
        measure,
        server,
    )  # fmt: skip

    def ready(script: str, arg: object = None):  # noqa: ANN202
        return lambda page: page.wait_for_function(script, arg=arg, timeout=TIMEOUT_MS)

    out = {}
    chosen = ids[:: max(1, len(ids) // COMPARED)][:COMPARED]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        with server(store) as url:
            out["runs_page first"], out["runs_page"], _ = measure(
                browser, url + "/", ready(RUNS_READY), repeat
            )
        with server(store) as url:
            link = url + "/compare?" + "&".join(f"runs={r}" for r in chosen) + f"&metrics={ENTROPY_MEAN}"
            cold, fresh, _ = measure(browser, link, ready(COMPARE_READY, len(chosen)), repeat)
            out["compare first"], out["compare"] = cold, fresh
        if floor:  # what Streamlit and Plotly alone cost now, whatever the code: no store read, one chart
            script = store.parent / "floor.py"
            script.write_text(FLOOR_APP)
            with server(store, script) as url:
                out["floor first"], out["floor"], _ = measure(
                    browser, url + "/", ready(COMPARE_READY, 1), repeat
                )
        browser.close()
    return out


def side(store: Path, repeat: int, browser: bool, floor: bool) -> None:
    """Child process: measure the code on PYTHONPATH over `store`; print the figures as JSON."""
    ids = sorted(d.name for d in store.iterdir() if d.is_dir() and not d.name.startswith("."))
    figures = cli_figures(store, repeat)
    if browser:  # before unsealed_figures: the pages are timed on the store as entropyscope writes it
        figures |= browser_figures(store, ids, repeat, floor)
    print(json.dumps(figures | unsealed_figures(store)))


def baseline_tree(rev: str, tmp: Path) -> Path:
    tree = tmp / f"entropyscope-base-{rev}"
    if not tree.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rev], check=True)
    return tree


def measure_side(
    tree: Path, master: Path, work: Path, repeat: int, browser: bool, floor: bool = False
) -> dict[str, float]:
    copy = work / tree.name
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(
        master, copy, ignore=shutil.ignore_patterns(".cache", ".watch_*")
    )  # no cache left by hand
    stop = threading.Event()
    writer = threading.Thread(target=live_writer, args=(copy, stop), daemon=True)
    writer.start()
    try:
        env = os.environ | {"PYTHONPATH": str(tree)}
        cmd = [sys.executable, str(Path(__file__).resolve()), "--side", str(copy), "--repeat", str(repeat)]
        proc = subprocess.run(
            [*cmd, *([] if browser else ["--no-browser"]), *(["--floor"] if floor else [])],
            env=env,
            # The tree as working directory too: `python -m` (how the dashboard server starts) puts the working
            # directory ahead of PYTHONPATH, so from any other folder a baseline server ran that folder's code.
            cwd=tree,
            capture_output=True,
            text=True,
        )
    finally:
        stop.set()
        writer.join()
        shutil.rmtree(copy, ignore_errors=True)
    if proc.returncode != 0:
        raise SystemExit(f"measuring {tree} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(base: dict[str, float], now: dict[str, float], runs: int) -> str:
    labels = {
        "runs": "`entropyscope runs`", "watch": "`watch --once`", "runs_page": "Runs page first paint",
        "compare": f"Compare, {COMPARED} runs drawn",
    }  # fmt: skip
    notes = {
        "runs": {" first": ", first call (no cache; store written by entropyscope)",
                 " unsealed": ", first call, store without seals (older or foreign)",
                 "": ", median of later calls"},
        "page": {" first": ", first visit after server start", "": ", median, new browser context"},
    }  # fmt: skip
    lines = [
        f"| {runs:,} runs | baseline s | now s | ratio | goal s | |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for key, label in labels.items():
        for variant, note in notes["runs" if key in ("runs", "watch") else "page"].items():
            name = key + variant
            if name not in now:
                continue
            b, n = base[name], now[name]
            verdict = "pass" if n < GOALS[key] else "miss"
            lines.append(f"| {label}{note} | {b:.2f} | {n:.2f} | {b / n:.1f}× | {GOALS[key]:g} | {verdict} |")
    if "floor" in now:
        lines.append(
            f"| (floor: a one-chart Streamlit page, no store; new context) | | {now['floor']:.2f} | | | |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--base", default="8824d6d", help="git revision of the baseline")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--store", type=Path, help="where to build (and keep) the bench store")
    ap.add_argument("--no-browser", action="store_true", help="CLI figures only")
    ap.add_argument("--side", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--floor", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        return side(args.side, args.repeat, not args.no_browser, args.floor)
    tmp = Path(tempfile.gettempdir())
    master = args.store or tmp / f"thousand_runs_{args.runs}"
    marker = master / ".bench.json"
    if not (marker.exists() and json.loads(marker.read_text()) == {"runs": args.runs, "sealed": True}):
        shutil.rmtree(master, ignore_errors=True)
        t0 = time.perf_counter()
        build(master, args.runs)
        print(f"built {args.runs} runs in {time.perf_counter() - t0:.0f} s at {master}")
    work = Path(tempfile.mkdtemp(prefix="thousand_runs_"))
    try:
        base = measure_side(baseline_tree(args.base, tmp), master, work, args.repeat, not args.no_browser)
        now = measure_side(ROOT, master, work, args.repeat, not args.no_browser, floor=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{os.cpu_count()} CPUs, load average {load}; base {args.base}, repeat {args.repeat}")
    print(table(base, now, args.runs))


if __name__ == "__main__":
    main()
