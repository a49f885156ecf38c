"""One meaning of "final" (mean of the last 10% of steps) and human units, in every runs listing."""

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from analysis.metrics import final_window
from analysis.plots import summary_rows
from analysis.runs_table import FINAL_NOTE
from analysis.schema import ENTROPY_MEAN, PASS_AT_K, REWARD_MEAN
from analysis.store_reader import StoreReader
from analysis.store_writer import RunWriter
from trainer.cli import main
from trainer.loop import summarize

ENTROPY = [2.0 - 0.05 * i for i in range(30)]  # 2.00 -> 0.55: the last value differs from the last 3's mean
REWARD = [0.01 * i for i in range(30)]


def history() -> list[dict[str, float]]:
    return [{ENTROPY_MEAN: e, REWARD_MEAN: r, PASS_AT_K: 0.5} for e, r in zip(ENTROPY, REWARD, strict=True)]


def write_run(store: Path, run_id: str, status: str, heartbeat_age_s: float) -> None:
    w = RunWriter(store, run_id, {"algo": "grpo", "controller": "none", "precision": "fp32"})
    for step, metrics in enumerate(history(), start=1):
        w.log_scalars(step, metrics)
    w.close(status) if status != "running" else w.flush()
    info = json.loads((store / run_id / "run.json").read_text())
    (store / run_id / "run.json").write_text(json.dumps(info | {"heartbeat": time.time() - heartbeat_age_s}))


def test_final_is_the_same_number_everywhere(tmp_path):
    write_run(tmp_path, "done", "finished", 0)
    n = final_window(len(ENTROPY))
    assert n == 3
    final = float(np.mean(ENTROPY[-n:]))
    row = StoreReader(tmp_path).runs().iloc[0]
    assert row["entropy"] == pytest.approx(final) and row["entropy_last"] == pytest.approx(ENTROPY[-1])
    assert row["reward"] == pytest.approx(np.mean(REWARD[-n:]))
    assert row["entropy_change"] == pytest.approx(final / ENTROPY[0] - 1)
    (readme_row,) = summary_rows(tmp_path, ["done"])  # the docs' sample-runs table
    assert readme_row["final_entropy"] == pytest.approx(final)
    summary = summarize("done", tmp_path, 30, ENTROPY[0], history())  # what the CLI prints after training
    assert summary.entropy == pytest.approx(final)


def test_runs_command_shows_ages_percentages_and_heartbeats_of_running_runs_only(tmp_path, capsys):
    write_run(tmp_path, "done", "finished", 501324.5)
    write_run(tmp_path, "live", "running", 3)
    write_run(tmp_path, "dead", "running", 501324.5)
    assert main(["runs", "--store", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line for line in lines[1:-1]}
    assert lines[-1] == FINAL_NOTE and "final H" in lines[0] and "ΔH vs H0" in lines[0]
    change = f"{np.mean(ENTROPY[-3:]) / ENTROPY[0] - 1:+.0%}"  # -68%
    assert all(change in row and "0.600" in row and "0.550" in row for row in rows.values())
    assert rows["done"].split()[1] == "finished" and rows["done"].endswith(" –")
    assert rows["live"].endswith(" 3 s")
    assert "running? (silent 5.8 d)" in rows["dead"] and rows["dead"].endswith(" 5.8 d")
    assert "501324" not in "".join(lines)


def test_a_run_whose_trainer_process_is_gone_reads_killed(tmp_path, capsys):
    """run.json still says running with a fresh heartbeat, but the process it names on this host is dead."""
    write_run(tmp_path, "gone", "running", 1)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    info = json.loads((tmp_path / "gone" / "run.json").read_text())
    (tmp_path / "gone" / "run.json").write_text(json.dumps(info | {"pid": int(dead.stdout)}))
    assert StoreReader(tmp_path).runs()["status"].tolist() == ["killed"]
    assert main(["control", "gone", "--store", str(tmp_path), "--set", "target_entropy=1"]) == 2
    assert "run 'gone' is killed" in capsys.readouterr().err
    write_run(tmp_path, "alive", "running", 1)  # this test's own process: alive
    assert StoreReader(tmp_path).runs().set_index("run_id").loc["alive", "status"] == "running"
