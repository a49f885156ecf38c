"""A reader polling the store while another process writes to it never fails and sees the run grow."""

import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from analysis.schema import ENTROPY_MEAN
from analysis.store_reader import StoreReader

ROOT = Path(__file__).resolve().parents[1]
STEPS = 200

# Paced at ~10 ms a step plus fsyncs (several seconds in all), flushing every 4 steps.
WRITER = """
import sys, time
from analysis.store_writer import RunWriter
store, steps = sys.argv[1], int(sys.argv[2])
with RunWriter(store, "live", {"algo": "grpo"}, flush_every_s=0.5, flush_every_steps=4) as w:
    for s in range(1, steps + 1):
        w.log_scalars(s, {"entropy/mean": 2.0 - s / steps, "reward/mean": s / steps})
        w.log_tokens({"step": [s] * 64, "sample_id": [s] * 64, "position": list(range(64)),
                      "token_id": [5] * 64, "logp": [-1.0] * 64, "entropy": [0.5] * 64,
                      "advantage": [1.0] * 64, "ratio": [1.0] * 64, "clip_side": [0] * 64, "quadrant": [1] * 64})
        w.log_samples([{"step": s, "sample_id": s, "group_id": 0, "prompt_token_ids": [1, 2],
                        "response_token_ids": [3], "prompt_text": "p", "response_text": "r",
                        "reward": 1.0, "correct": True}])
        w.heartbeat(s)
        time.sleep(0.01)
"""


def poll_until_exit(proc: subprocess.Popen, reader: StoreReader, run_id: str) -> tuple[list, list[int], list]:
    """Read runs, scalars, tokens and samples every 0.2 s until the writer exits; collect every failure."""
    errors: list[BaseException] = []
    seen: list[int] = []
    deadline = time.monotonic() + 120
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        while time.monotonic() < deadline:
            done = proc.poll() is not None
            try:
                reader.runs()
                steps = reader.scalars([run_id], [ENTROPY_MEAN], max_points=50)
                seen.append(int(steps["step"].max()) if len(steps) else 0)
                if seen[-1]:
                    reader.tokens(run_id, seen[-1])
                    reader.samples(run_id, seen[-1])
            except Exception as err:  # every failure is the finding
                errors.append(err)
            if done:
                break
            time.sleep(0.2)  # polling cadence, not synchronisation
    return errors, seen, [str(w.message) for w in caught]


def read_while_running(args: list[str], reader: StoreReader, env: dict | None = None):
    """Start the writer process `args`, poll the store until it exits, and check that it exited cleanly."""
    proc = subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        result = poll_until_exit(proc, reader, "live")
    finally:
        if proc.poll() is None:
            proc.kill()
        _, stderr = proc.communicate()
    assert proc.returncode == 0, stderr[-2000:]
    return result


@pytest.mark.slow
def test_reader_while_writer_runs(tmp_path):
    reader = StoreReader(tmp_path)
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    errors, seen, caught = read_while_running(
        [sys.executable, "-c", WRITER, str(tmp_path), str(STEPS)], reader, env
    )
    assert errors == []
    assert caught == []
    assert seen == sorted(seen) and len(set(seen)) >= 5, seen
    final = reader.runs().set_index("run_id").loc["live"]
    assert final["status"] == "finished" and final["n_steps"] == STEPS and final["last_step"] == STEPS
    assert len(reader.scalars(["live"], [ENTROPY_MEAN], max_points=STEPS)) == STEPS
    assert len(reader.tokens("live", STEPS)) == 64


@pytest.mark.slow
def test_reader_while_real_trainer_runs(tmp_path, tiny_overrides):
    """The same polling against `entropyscope train` itself, a real model training in another process."""
    sets = [a for o in [*tiny_overrides, "steps=40", "checkpoint_every=10"] for a in ("--set", o)]
    reader = StoreReader(tmp_path)
    args = [sys.executable, "-m", "trainer.cli", "train", *sets, "--store", str(tmp_path), "--run-id", "live"]
    errors, seen, caught = read_while_running(args, reader)
    assert errors == [] and caught == []
    assert seen == sorted(seen) and len(set(seen)) >= 3, seen
    assert reader.runs().set_index("run_id").loc["live", "last_step"] == 40
