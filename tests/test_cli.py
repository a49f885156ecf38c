"""The console script: help on every command, one-line errors with exit code 2, a real train + runs + export."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from analysis.schema import ENTROPY_MEAN
from analysis.segments import live_segments
from analysis.store_reader import StoreReader
from analysis.store_writer import RunWriter
from app.serve import wait_ready
from trainer.cli import SAMPLE_RUNS, main

COMMANDS = ["train", "demo", "runs", "control", "watch", "dashboard", "export", "compact"]


def entropyscope(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "trainer.cli", *args], capture_output=True, text=True, cwd=cwd
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_help(command, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # a wide terminal: help still wraps under 120 characters
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "example: entropyscope" in out
    assert max(map(len, out.splitlines())) < 120


def test_top_level_help_says_whole_sentences(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    description = " ".join(out.split("\n\n")[1].split())
    assert description.startswith("`entropyscope`:") and description.endswith(".")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["train", "--set", "bogus=1"], "unknown config key 'bogus'"),
        (["train", "--set", "lr=abc"], "config key 'lr'"),
        (["train", "--set", "model=/no/such/model"], "model '/no/such/model'"),
        (["train", "--set", "task=jsonl:/no/such.jsonl"], "/no/such.jsonl"),
        (["train", "missing.yaml"], "does not exist"),
        (["train", "--resume"], "--run-id"),
        (["train", "--set", "group_size=1"], "group_size=1 with algo=grpo"),
        (["train", "--set", "group_size=1", "--set", "algo=rloo"], "leave-one-out baseline"),
        (["export", "nope", "--to", "x.duckdb"], "nope"),
        (["train", "--set", "alerts=/no/rules.yaml"], "cannot read rules file /no/rules.yaml"),
        (["watch", "--rules", "/no/rules.yaml"], "no run store"),
        (["dashboard", "--port", "0"], "no run store"),
        (["control", "nope", "--set", "lr=0.1"], "no run 'nope'"),
        (["compact", "nope"], "no run 'nope'"),
        (["compact", "--stale", "-5"], "--stale must be 0 or more"),
        (["compact", "--grace", "nan"], "--grace must be 0 or more"),
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
    assert not (tmp_path / "store").exists()  # refused before anything was written


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
def restore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


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
    with log.open("w") as out:  # Ctrl-C reaches it even when the suite runs as a background job (SIG_IGN)
        proc = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, text=True, preexec_fn=restore_sigint
        )
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
        assert f"inspect it: {sys.executable} -m trainer.cli runs --store {store}" in log.read_text()
        server = children(proc.pid)
        assert len(server) == 1
        proc.send_signal(signal.SIGTERM)  # `kill PID`: as Ctrl-C, the server goes with it
        assert proc.wait(timeout=30) == 0
        assert not pid_alive(server[0]) and port_free(port)
    finally:
        proc.kill()


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def pid_alive(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"  # a zombie holds no port


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_dashboard_stops_its_server(sig):
    """`kill PID` used to end the wrapper and leave Streamlit serving, re-parented, holding the port."""
    port = free_port()
    args = [
        sys.executable,
        "-m",
        "trainer.cli",
        "dashboard",
        "--store",
        str(SAMPLE_RUNS),
        "--port",
        str(port),
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = []
    try:
        wait_ready(f"http://127.0.0.1:{port}", timeout=120)
        server = children(proc.pid)
        assert len(server) == 1 and not port_free(port)
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == 0
        assert not pid_alive(server[0]) and port_free(port)
    finally:
        proc.kill()
        for pid in server:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


def steps_run(store: Path, run_id: str, status: str) -> RunWriter:
    """Six steps of scalars in three segments; closed with `status`, or left open (still `running`)."""
    w = RunWriter(store, run_id, {"algo": "grpo"}, flush_every_steps=2, flush_every_s=1e9)
    for step in range(1, 7):
        w.log_scalars(step, {ENTROPY_MEAN: 1.0 / step})
        w.heartbeat(step, force=True)
    if status == "running":
        w.flush()
    else:
        w.close(status)
    return w


def entropy_steps(store: Path, run_id: str) -> list[tuple[int, float]]:
    df = StoreReader(store).scalars([run_id], [ENTROPY_MEAN])
    return sorted(zip(df["step"], df["value"], strict=True))


def test_compact_merges_ended_runs_skips_live_ones_and_keeps_damaged_ones(tmp_path, capsys):
    steps_run(tmp_path, "failed", "failed")
    steps_run(tmp_path, "killed", "running")  # died without closing: run.json still says running
    meta = tmp_path / "killed" / "run.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "heartbeat": time.time() - 3600}))
    live = steps_run(tmp_path, "live", "running")
    steps_run(tmp_path, "damaged", "failed")
    damaged = sorted((tmp_path / "damaged" / "steps").glob("*.parquet"))
    damaged[1].write_bytes(damaged[1].read_bytes()[:20])  # truncated: no footer
    live_files = sorted((tmp_path / "live" / "steps").glob("*.parquet"))
    before = {r: entropy_steps(tmp_path, r) for r in ("failed", "killed")}

    assert main(["compact", "--store", str(tmp_path)]) == 1  # one run could not be compacted
    out = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines())
    for run_id in ("failed", "killed"):
        assert out[run_id].startswith("3 segments -> 1,"), out
        assert len(live_segments(tmp_path / run_id / "steps")) == 1
        assert len(list((tmp_path / run_id / "steps").glob("*.parquet"))) == 4  # parts kept for readers
        assert entropy_steps(tmp_path, run_id) == before[run_id]
    (compacted,) = live_segments(tmp_path / "failed" / "steps")
    assert compacted.name.startswith("00000000-compacted-")  # sorts before a resumed run's segments
    assert main(["compact", "failed", "--grace", "0", "--store", str(tmp_path)]) == 0
    assert "3 superseded or temp files removed" in capsys.readouterr().out
    assert [p.name for p in (tmp_path / "failed" / "steps").iterdir()] == [compacted.name]
    assert out["live"].startswith("skipped: running")
    assert sorted((tmp_path / "live" / "steps").glob("*.parquet")) == live_files
    assert out["damaged"].startswith("kept all 3 segments: one is unreadable")
    assert sorted((tmp_path / "damaged" / "steps").glob("*.parquet")) == damaged

    # Forced on a live run: the writer goes on appending after the merged segment and nothing is lost.
    assert main(["compact", "live", "--stale", "0", "--store", str(tmp_path)]) == 0
    assert len(live_segments(tmp_path / "live" / "steps")) == 1
    live.log_scalars(7, {ENTROPY_MEAN: 1.0 / 7})
    live.close()
    assert [s for s, _ in entropy_steps(tmp_path, "live")] == list(range(1, 8))
    assert main(["compact", "--store", str(tmp_path), "live"]) == 0
    assert "live: 2 segments -> 1" in capsys.readouterr().out


def test_the_printed_command_runs_as_printed(tmp_path, monkeypatch):
    """After `make demo` the script is .venv/bin/entropyscope, not on PATH: the summary names that path."""
    from trainer.cli import own_command

    script = tmp_path / ".venv" / "bin" / "entropyscope"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(script), "demo"])
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert own_command() == ".venv/bin/entropyscope"
    monkeypatch.setenv("PATH", f"{script.parent}:/usr/bin")
    assert own_command() == "entropyscope"
    monkeypatch.setattr(sys, "argv", ["/somewhere/trainer/cli.py"])
    assert own_command() == f"{sys.executable} -m trainer.cli"
