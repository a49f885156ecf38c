"""Benchmark: dashboard latency in real Chromium. Targets: Runs page first paint over sample_runs/ < 2 s;
Compare of 5 runs × 20,000 steps drawn < 3 s.

Run: `.venv/bin/python bench/dashboard_bench.py [--steps 20000] [--segment-steps 100] [--repeat 5]`.

Starts `streamlit run` (app.serve) over each store and drives Debian's /usr/bin/chromium with Playwright.
A sample is the time from `page.goto` to the page's main element drawn: the runs table's canvas, or every
run's trace in the Compare chart, found by its layout.meta panel. Three figures per page: "cold", the first
visit after the server started (nothing imported or cached server-side; a new browser context, so no HTTP
cache); "new ctx", the median of `--repeat` later visits each in a new context (server caches warm, the
browser downloads and compiles Streamlit's and Plotly's JavaScript again: a first-time visitor); "cached",
the median of `--repeat` visits in one context (a returning user, whose browser keeps the JavaScript).
A reference row times a one-chart Streamlit page (no store, no widgets): the floor that Streamlit's and
Plotly's JavaScript set on this machine, which no change to the dashboard can go under.
The Compare store is synthesized with RunWriter in a temp dir: 5 runs of 4 keys, a segment every
`--segment-steps` steps (as a writer flushing that often, or compaction, leaves them). Segment count is
what the server-side cost grows with: per-file overhead in DuckDB, about 1 ms per segment per query.
"""

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from analysis.schema import CLIP_FRAC_HIGH, ENTROPY_MEAN, ENTROPY_P10, REWARD_MEAN
from analysis.store_writer import RunWriter
from app import serve

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
TIMEOUT_MS = 120_000
RUNS_READY = "() => !!document.querySelector('[data-testid=\"stDataFrame\"] canvas')"
# Every run's trace of the Compare chart has its points: `n` runs with data, not just an empty axis.
COMPARE_READY = """(n) => {
  const el = [...document.querySelectorAll('.js-plotly-plot')]
    .find(e => e.layout && e.layout.meta && e.layout.meta.panel === 'compare:entropy/mean');
  return !!el && (el._fullData || []).filter(d => d.showlegend !== false && d._length > 0).length === n;
}"""


def synthesize(store: Path, runs: int, steps: int, segment_steps: int) -> list[str]:
    """`runs` finished runs of `steps` steps: entropy decaying at different paces, three noisy keys more."""
    rng = np.random.default_rng(0)
    ids = [f"bench-{i}" for i in range(runs)]
    s = np.arange(1, steps + 1)
    for i, run_id in enumerate(ids):
        entropy = 0.2 + 0.8 * np.exp(-s * (i + 1) / steps * 3) + rng.normal(0, 0.03, steps)
        config = {"algo": "grpo", "controller": "none", "prompts_per_step": 16, "group_size": 8}
        with RunWriter(store, run_id, config, flush_every_steps=segment_steps, flush_every_s=1e9) as w:
            for step, h, noise in zip(s, entropy, rng.random((steps, 3)), strict=True):
                w.log_scalars(int(step), {ENTROPY_MEAN: h, ENTROPY_P10: h * 0.2, REWARD_MEAN: noise[0],
                                          CLIP_FRAC_HIGH: noise[1] * 0.1})  # fmt: skip
    return ids


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# The reference page: one small Plotly chart with the panel name the Compare check looks for.
FLOOR_APP = f"""
import plotly.graph_objects as go
import streamlit as st
st.title("floor")
st.plotly_chart(go.Figure(go.Scatter(y=[1, 3, 2]), layout={{"meta": {{"panel": "compare:{ENTROPY_MEAN}"}}}}))
"""


@contextmanager
def server(store: Path, script: Path | None = None) -> Iterator[str]:
    """A dashboard server over `store` (or, given `script`, a plain `streamlit run` of that script)."""
    port = free_port()
    cmd = serve.command(str(store), port=port)
    if script is not None:
        cmd[cmd.index(str(serve.MAIN))] = str(script)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        serve.wait_ready(url, timeout=120, proc=proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def visit(context: BrowserContext, url: str, ready: Callable[[Page], object]) -> float:
    """Seconds from navigation to `ready(page)` returning, in a new page of `context`."""
    page = context.new_page()
    try:
        t0 = time.perf_counter()
        page.goto(url)
        ready(page)
        return time.perf_counter() - t0
    finally:
        page.close()


@contextmanager
def new_context(browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        yield context
    finally:
        context.close()


def measure(browser: Browser, url: str, ready: Callable[[Page], object], repeat: int) -> tuple[float, ...]:
    """(cold, median in a new context each, median in one cached context) seconds."""
    with new_context(browser) as context:
        cold = visit(context, url, ready)
    fresh = []
    for _ in range(repeat):
        with new_context(browser) as context:
            fresh.append(visit(context, url, ready))
    with new_context(browser) as context:
        visit(context, url, ready)  # fills the browser cache
        cached = [visit(context, url, ready) for _ in range(repeat)]
    return cold, statistics.median(fresh), statistics.median(cached)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--segment-steps", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        sample = Path(tmp) / "sample_runs"  # a copy: the server must not touch the tracked sample runs
        shutil.copytree(ROOT / "sample_runs", sample, ignore=shutil.ignore_patterns("checkpoints"))
        with server(sample) as url:
            ready = lambda page: page.wait_for_function(RUNS_READY, timeout=TIMEOUT_MS)  # noqa: E731
            rows.append(
                ("Runs page first paint, sample_runs/", *measure(browser, url + "/", ready, args.repeat), 2.0)
            )

        floor = Path(tmp) / "floor.py"
        floor.write_text(FLOOR_APP)
        with server(sample, floor) as url:
            ready = lambda page: page.wait_for_function(COMPARE_READY, arg=1, timeout=TIMEOUT_MS)  # noqa: E731
            rows.append(
                ("(floor: one-chart Streamlit page)", *measure(browser, url + "/", ready, args.repeat), None)
            )

        t0 = time.perf_counter()
        ids = synthesize(Path(tmp) / "big", args.runs, args.steps, args.segment_steps)
        print(f"synthesized {args.runs} runs × {args.steps} steps × 4 keys in {time.perf_counter() - t0:.1f} s "
              f"({args.runs * -(-args.steps // args.segment_steps)} segments)")  # fmt: skip
        with server(Path(tmp) / "big") as url:
            # The first session's deep link gets Streamlit's spurious "page not found": open the root first.
            with new_context(browser) as context:
                visit(context, url + "/", lambda page: page.wait_for_function(RUNS_READY, timeout=TIMEOUT_MS))
            compare = url + "/compare?" + "&".join(f"runs={r}" for r in ids) + f"&metrics={ENTROPY_MEAN}"
            ready = lambda page: page.wait_for_function(COMPARE_READY, arg=len(ids), timeout=TIMEOUT_MS)  # noqa: E731
            label = f"Compare {args.runs} runs × {args.steps:,} steps drawn"
            rows.append((label, *measure(browser, compare, ready, args.repeat), 3.0))
        browser.close()

    print(f"\n{os.cpu_count()} CPUs, load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    width = max(len(r[0]) for r in rows)
    print(f"{'scenario':<{width}}  {'cold s':>7}  {'new ctx s':>9}  {'cached s':>8}  {'target s':>8}")
    for name, cold, fresh, cached, target in rows:
        print(f"{name:<{width}}  {cold:7.2f}  {fresh:9.2f}  {cached:8.2f}  {target or '':>8}")


if __name__ == "__main__":
    main()
