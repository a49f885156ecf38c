"""The console script: help on every command, one-line errors with exit code 2, a real train + runs + export."""

import signal
import socket
import subprocess
import sys
import time

import duckdb
import pytest

from analysis.store_reader import StoreReader
from app.serve import wait_ready
from trainer.cli import SAMPLE_RUNS, main

COMMANDS = ["train", "demo", "runs", "control", "watch", "dashboard", "export"]


def entropyscope(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "trainer.cli", *args], capture_output=True, text=True, cwd=cwd
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert "example: entropyscope" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["train", "--set", "bogus=1"], "unknown config key 'bogus'"),
        (["train", "--set", "lr=abc"], "config key 'lr'"),
        (["train", "--set", "model=/no/such/model"], "model '/no/such/model'"),
        (["train", "--set", "task=jsonl:/no/such.jsonl"], "/no/such.jsonl"),
        (["train", "missing.yaml"], "does not exist"),
        (["train", "--resume"], "--run-id"),
        (["export", "nope", "--to", "x.duckdb"], "nope"),
        (["train", "--set", "alerts=/no/rules.yaml"], "cannot read rules file /no/rules.yaml"),
        (["watch", "--rules", "/no/rules.yaml"], "no run store"),
        (["dashboard", "--port", "0"], "no run store"),
        (["control", "nope", "--set", "lr=0.1"], "no run 'nope'"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, args, fragment):
    proc = entropyscope(*args, "--store", str(tmp_path / "store"), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("entropyscope: error:") and fragment in lines[0], (
        proc.stderr
    )
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_train_runs_export_round_trip(tmp_path, tiny_overrides):
    store = str(tmp_path / "store")
    sets = [a for o in tiny_overrides for a in ("--set", o)]
    proc = entropyscope("train", *sets, "--store", store, "--run-id", "cli", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "entropy" in proc.stdout and "reward" in proc.stdout
    listing = entropyscope("runs", "--store", store)
    assert "cli" in listing.stdout and "finished" in listing.stdout
    again = entropyscope("train", *sets, "--store", store, "--run-id", "cli", cwd=tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr
    out = tmp_path / "cli.duckdb"
    assert entropyscope("export", "cli", "--to", str(out), "--store", store).returncode == 0
    con = duckdb.connect(str(out), read_only=True)
    assert con.execute("select count(distinct step) from steps").fetchone()[0] == 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_demo_serves_the_dashboard_over_sample_runs_and_the_live_run(tmp_path):
    store, port, log = tmp_path / "store", free_port(), tmp_path / "demo.out"
    args = [
        sys.executable,
        "-m",
        "trainer.cli",
        "demo",
        "--steps",
        "3",
        "--store",
        str(store),
        "--port",
        str(port),
    ]
    with log.open("w") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        while "still serving" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        assert f"http://127.0.0.1:{port}" in log.read_text()
        wait_ready(f"http://127.0.0.1:{port}", timeout=60)
        runs = StoreReader(store).runs().set_index("run_id")["status"]
        samples = {d.name for d in SAMPLE_RUNS.iterdir() if (d / "run.json").is_file()}
        assert samples < set(runs.index) and (runs == "finished").all() and len(runs) == len(samples) + 1
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        with pytest.raises(TimeoutError):
            wait_ready(f"http://127.0.0.1:{port}", timeout=1)  # the server went with it
    finally:
        proc.kill()
