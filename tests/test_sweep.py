"""Sweeps with real short trainings: parallel processes, SIGTERM then resume, a failing trial, Ray."""

import json
import signal
import subprocess
import sys
import time

import pytest
import yaml

from analysis.schema import ENTROPY_MEAN
from analysis.store_reader import StoreReader
from trainer.cli import main
from trainer.sweep import INTERRUPTED, sweep_dir
from trainer.sweep_spec import load_sweep

pytestmark = pytest.mark.slow
BASE = {"prompts_per_step": 4, "group_size": 4, "warmup_steps": 40, "checkpoint_every": 0, "steps": 1}


def write_spec(tmp_path, **spec):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def sweep_cmd(spec, store, *flags):
    return [sys.executable, "-m", "trainer.cli", "sweep", str(spec), "--store", str(store), *flags]


def run_jsons(store):
    return {p.parent.name: json.loads(p.read_text()) for p in store.glob("*/run.json")}


def history(store, sweep):
    lines = (sweep_dir(store, sweep.id) / "history.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def max_running(events):
    """The most trainings running at once, from the runner's start and end records."""
    alive = most = 0
    for e in events:
        alive += {"start": 1, "end": -1}[e["event"]]
        most = max(most, alive)
    return most


def assert_sweep_fields(store, sweep):
    runs = run_jsons(store)
    assert set(runs) == {t.run_id for t in sweep.trials}
    for t in sweep.trials:
        assert runs[t.run_id]["sweep"] == {"id": sweep.id, "params": t.params, "seed": t.seed}
        assert runs[t.run_id]["config"]["seed"] == t.seed
        assert all(runs[t.run_id]["config"][k] == v for k, v in t.params.items())
    return runs


def test_grid_2x2_at_2_seeds_runs_8_runs_in_parallel_processes(tmp_path):
    spec = write_spec(tmp_path, base=BASE, parameters={"lr": [1e-3, 5e-4], "algo": ["grpo", "dapo"]}, seeds=2)
    done = subprocess.run(
        sweep_cmd(spec, tmp_path / "runs", "--parallel", "2"), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    sweep = load_sweep(spec)
    runs = assert_sweep_fields(tmp_path / "runs", sweep)
    assert all(r["status"] == "finished" and r["config"]["threads"] == 1 for r in runs.values())
    assert len({r["pid"] for r in runs.values()}) == 8  # one process per run
    events = history(tmp_path / "runs", sweep)
    assert sorted(e["run_id"] for e in events if e["event"] == "start") == sorted(runs)
    assert max_running(events) == 2  # two at a time, never more
    assert "8/8 runs ended, 0 failed" in done.stdout
    manifest = json.loads((sweep_dir(tmp_path / "runs", sweep.id) / "sweep.json").read_text())
    assert (
        manifest["runs"] == [t.run_id for t in sweep.trials] and manifest["metric"]["name"] == "reward/mean"
    )
    again = subprocess.run(sweep_cmd(spec, tmp_path / "runs", "--dry-run"), capture_output=True, text=True)
    assert "8 finished, 0 to resume, 0 running elsewhere, 0 new" in again.stdout


def wait_for(condition, timeout_s=240.0):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting on the store"
        time.sleep(0.2)


def test_sweep_stopped_by_sigterm_then_rerun_finishes_each_run_exactly_once(tmp_path):
    # The two short runs start first; the long ones are stopped mid-way, after a checkpoint.
    base = {**BASE, "checkpoint_every": 2}
    spec = write_spec(tmp_path, name="kill", base=base, parameters={"steps": [2, 12]}, seeds=[0, 1])
    store = tmp_path / "runs"
    sweep = load_sweep(spec)
    long = [t.run_id for t in sweep.trials if t.params["steps"] == 12]
    # Started as a shell starts a background job (SIGINT ignored), which its children would inherit.
    ignore_sigint = lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)  # noqa: E731
    cmd = sweep_cmd(spec, store, "--parallel", "2")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, preexec_fn=ignore_sigint)
    try:
        wait_for(lambda: any((store / r / "checkpoints" / "step_2").is_dir() for r in long))
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130
    first = run_jsons(store)
    finished = {r for r, info in first.items() if info["status"] == "finished"}
    stopped = set(long) - finished
    assert stopped and all(first[r]["status"] == "failed" for r in stopped)
    for r in stopped:
        assert INTERRUPTED in StoreReader(store).events(r)["message"].tolist()
    # each training stopped on its SIGINT (KeyboardInterrupt: exit code 130, or -2 before the CLI was up),
    # none had to be killed
    ends = {e["run_id"]: e["rc"] for e in history(store, sweep) if e["event"] == "end"}
    assert all(ends[r] in (130, -signal.SIGINT) for r in stopped)

    rerun = subprocess.run(sweep_cmd(spec, store, "--parallel", "2"), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    runs = assert_sweep_fields(store, sweep)
    assert all(info["status"] == "finished" for info in runs.values())
    for r in finished:  # not run again
        assert runs[r]["pid"] == first[r]["pid"] and runs[r]["heartbeat"] == first[r]["heartbeat"]
    reader = StoreReader(store)
    resumed_from = [m for r in stopped for m in reader.events(r)["message"] if m.startswith("resumed from")]
    assert any("step_" in m for m in resumed_from)  # continued from a checkpoint, not from scratch
    for t in sweep.trials:  # every step once, none lost
        steps = reader.scalars([t.run_id], [ENTROPY_MEAN])["step"].tolist()
        assert sorted(steps) == list(range(1, t.params["steps"] + 1))
        log = (sweep_dir(store, sweep.id) / "logs" / f"{t.run_id}.log").read_text()
        assert log.count(f"run {t.run_id}: {t.params['steps']} steps") == 1  # trained to the end once
    ends = [e["run_id"] for e in history(store, sweep) if e["event"] == "end" and e.get("rc") == 0]
    assert sorted(ends) == sorted(t.run_id for t in sweep.trials)


def test_a_failing_trial_is_recorded_with_its_reason_and_the_others_finish(tmp_path):
    spec = write_spec(
        tmp_path, name="fails", base=BASE, parameters={"task": ["digit_sum", "jsonl:/nonexistent/x.jsonl"]}
    )
    done = subprocess.run(
        sweep_cmd(spec, tmp_path / "runs", "--parallel", "2"), capture_output=True, text=True
    )
    assert done.returncode == 1
    assert "1 failed" in done.stdout
    sweep = load_sweep(spec)
    runs = assert_sweep_fields(tmp_path / "runs", sweep)
    good, bad = sorted(sweep.trials, key=lambda t: t.params["task"] != "digit_sum")
    assert runs[good.run_id]["status"] == "finished" and runs[bad.run_id]["status"] == "failed"
    (reason,) = StoreReader(tmp_path / "runs").events(bad.run_id).query("kind == 'error'")["message"]
    assert "/nonexistent/x.jsonl" in reason and "\n" not in reason
    assert f"failed {bad.run_id}: {reason}" in done.stdout


def test_ray_backend_on_a_local_instance_gives_the_same_runs(tmp_path, capsys):
    ray = pytest.importorskip("ray")
    spec = write_spec(tmp_path, name="ray", base=BASE, parameters={"lr": [1e-3, 5e-4]}, seeds=2)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert main(["sweep", str(spec), "--store", str(tmp_path / "runs"), "--backend", "ray"]) == 0
    finally:
        ray.shutdown()
    runs = assert_sweep_fields(tmp_path / "runs", load_sweep(spec))
    assert all(r["status"] == "finished" for r in runs.values())
    assert "4/4 runs ended, 0 failed" in capsys.readouterr().out
