"""Kill -9 at random moments, inside a checkpoint save and inside the end-of-run compaction: after each
kill `--resume` goes on, the run reads as killed while it is down, and at the end every step is there once
through StoreReader, the plain-DuckDB views and both exports; `compact` and a resume leave nothing behind."""

import random
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from analysis.schema import ENTROPY_MEAN, TABLES
from analysis.segments import SUPERSEDED, live_segments, superseded
from analysis.store_reader import StoreReader
from analysis.store_views import connect
from trainer.cli import main

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT / "tests" / "fault_runner.py"
STEPS = 200
KILLS = 20
SETS = [f"steps={STEPS}", "prompts_per_step=4", "group_size=4", "warmup_steps=40", "checkpoint_every=2",
        "minibatches=2", "threads=1", "alerts=off"]  # fmt: skip


def start(store: Path, point: str) -> subprocess.Popen:
    resume = ["--resume"] if (store / "k" / "run.json").exists() else []
    sets = [a for s in SETS for a in ("--set", s)]
    cmd = [
        sys.executable,
        str(RUNNER),
        point,
        "train",
        "--store",
        str(store),
        "--run-id",
        "k",
        *resume,
        *sets,
    ]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def newest_checkpoint(store: Path) -> int:
    steps = [int(d.name.removeprefix("step_")) for d in (store / "k" / "checkpoints").glob("step_*")]
    return max(steps, default=0)


def kill_after_progress(proc: subprocess.Popen, store: Path, rng: random.Random) -> None:
    """Wait until the run has saved a checkpoint past the newest one (or the process ends), then kill it
    at a random moment within the next 0.3 s."""
    begin, deadline = newest_checkpoint(store), time.monotonic() + 300
    while proc.poll() is None and newest_checkpoint(store) <= begin and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(rng.uniform(0, 0.3))  # the fault's timing, not a wait for a result
    proc.kill()


@pytest.mark.slow
def test_twenty_kills_lose_and_repeat_nothing(tmp_path):
    store, rng = tmp_path / "store", random.Random(0)
    kills = 0
    for _ in range(2 * KILLS):  # stints; one that finishes before its kill lands does not count
        last = kills == KILLS - 1
        point = "compaction" if last else "checkpoint" if kills in (3, 11) else "none"
        proc = start(store, point)
        if point == "none":
            kill_after_progress(proc, store, rng)
        assert proc.wait(timeout=600) in (-9, 0), proc.stderr.read()
        if proc.returncode == 0:
            continue
        kills += 1
        status = StoreReader(store).runs().set_index("run_id").loc["k", "status"]
        assert status in ("killed", "finished"), status  # finished: killed after closing, while compacting
        if last:
            break
    assert kills == KILLS
    assert any((store / "k").rglob(".*.tmp")), "the compaction kill leaves its temp file"

    assert start(store, "none").wait(timeout=600) == 0  # the run is complete: a resume only re-checks it
    assert not [
        p for p in (store / "k").rglob("*") if ".tmp" in p.name
    ]  # killed writers' and saves' temp files
    for table in TABLES:  # every segment is live or recorded as merged, waiting out its grace period
        table_dir = store / "k" / table
        listed = {p.name for p in live_segments(table_dir)} | set(superseded(table_dir))
        assert {p.name for p in table_dir.glob("*.parquet")} == listed, table
    assert main(["compact", "k", "--grace", "0", "--store", str(store)]) == 0
    assert not [p for p in (store / "k").rglob("*") if ".tmp" in p.name or p.name == SUPERSEDED]
    for table in TABLES:
        assert sorted((store / "k" / table).glob("*.parquet")) == live_segments(store / "k" / table), table

    expected = list(range(1, STEPS + 1))
    reader = StoreReader(store)
    steps = reader.table("steps", ["k"])
    assert not steps.duplicated(["step", "key"]).any()
    assert sorted(steps.loc[steps["key"] == ENTROPY_MEAN, "step"]) == expected
    assert reader.runs().set_index("run_id").loc["k", "status"] == "finished"
    con = connect(store)
    per_step = con.execute("SELECT step, count(*) FROM steps WHERE key = ? GROUP BY step ORDER BY step",
                           [ENTROPY_MEAN]).fetchall()  # fmt: skip
    assert per_step == [(s, 1) for s in expected]
    assert main(["export", "k", "--to", str(tmp_path / "k.duckdb"), "--store", str(store)]) == 0
    exported = duckdb.connect(str(tmp_path / "k.duckdb"), read_only=True)
    assert exported.execute("SELECT count(*) - count(DISTINCT (step, key)) FROM steps").fetchone() == (0,)
    assert main(["export", "k", "--to", str(tmp_path / "k.csv"), "--store", str(store)]) == 0
    assert pd.read_csv(tmp_path / "k.csv")["step"].tolist() == expected
