"""Readers never break: plain DuckDB (the documented recipe) and StoreReader, each in its own process,
querying every 50 ms while a run trains, finishes (compaction), is resumed and compacted again."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from analysis.schema import ENTROPY_MEAN
from analysis.store_reader import StoreReader
from trainer.config import load_config
from trainer.loop import train

READER = Path(__file__).resolve().parent / "soak_reader.py"


def wait_for(condition, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.05)


@pytest.mark.slow
def test_readers_see_no_error_and_no_duplicate_through_training_resume_and_compaction(
    tmp_path, tiny_overrides
):
    store, stop = tmp_path / "store", tmp_path / "stop"
    over = [o for o in tiny_overrides if not o.startswith(("steps", "checkpoint"))] + ["checkpoint_every=4"]
    train(load_config(None, [*over, "steps=2"]), store, run_id="soak", progress=False)  # the run exists
    outs = {m: tmp_path / f"{m}.json" for m in ("duckdb", "store_reader")}
    procs = [
        subprocess.Popen([sys.executable, str(READER), m, str(store), "soak", str(stop), str(out)])
        for m, out in outs.items()
    ]
    try:
        # Both readers have read once before the writes start (their first read waits for slow imports).
        wait_for(lambda: all(Path(f"{out}.ready").exists() for out in outs.values()))
        for cfg_steps in (10, 16):  # two resumes, each ending in a compaction
            train(load_config(None, [*over, f"steps={cfg_steps}"]), store, run_id="soak", resume=True,
                  progress=False)  # fmt: skip
    finally:
        stop.touch()
        for p in procs:
            p.wait(timeout=120)
    results = {m: json.loads(out.read_text()) for m, out in outs.items()}
    print({m: {k: r[k] for k in ("reads", "max_dupes", "backwards", "last")} for m, r in results.items()})
    n_rows = len(StoreReader(store).table("steps", ["soak"]))
    for mode, r in results.items():
        assert r["errors"] == [], (mode, r["errors"][:3])
        assert r["reads"] > 0 and r["max_dupes"] == 0 and r["backwards"] == 0, (mode, r)
        assert r["last"] == n_rows, (mode, r)
    steps = StoreReader(store).scalars(["soak"], [ENTROPY_MEAN])["step"].tolist()
    assert sorted(steps) == list(range(1, 17))
