"""A run with mlflow=sqlite:///... reads back through MLflow's own client under the store's metric names; a
tracking server that is down from the start or dies mid-run costs training nothing and is reported once."""

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator

import mlflow
import pytest

from analysis import schema
from analysis.store_reader import StoreReader
from trainer.config import load_config
from trainer.loop import train
from trainer.mlflow_sink import MlflowSink, mlflow_metric_name


@pytest.mark.slow
def test_mlflow_gets_the_same_metrics_and_params(tmp_path, tiny_overrides):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config(None, [*tiny_overrides, f"mlflow={uri}"])
    train(cfg, tmp_path / "store", run_id="ml", progress=False)

    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("entropyscope")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["algo"] == "grpo" and run.data.params["steps"] == "3"
    stored_keys = StoreReader(tmp_path / "store").keys(["ml"])
    assert set(run.data.metrics) == {mlflow_metric_name(k) for k in stored_keys}
    history = client.get_metric_history(run.info.run_id, schema.ENTROPY_MEAN)
    stored = StoreReader(tmp_path / "store").scalars(["ml"], [schema.ENTROPY_MEAN]).sort_values("step")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == stored["step"].tolist()
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(stored["value"].tolist())


def test_only_the_at_sign_is_renamed():
    assert mlflow_metric_name("pass@k") == "pass_at_k"
    assert mlflow_metric_name(schema.ENTROPY_MEAN) == schema.ENTROPY_MEAN


# ---- the tracking server down -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def sink_warnings(record) -> list[str]:
    return [str(w.message) for w in record if str(w.message).startswith("mlflow:")]


def test_a_server_down_from_the_start_costs_one_line_when_it_fails_and_one_at_close(monkeypatch, recwarn):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    uri = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    sink = MlflowSink(uri, "r", {"algo": "grpo"})
    sink.log(1, {schema.ENTROPY_MEAN: 1.0})
    wait_until(lambda: sink.failures >= 1, 60, "the first failed try")
    for step in range(2, 21):  # while it is down: queued, no warning per step
        sink.log(step, {schema.ENTROPY_MEAN: 1.0})
    assert sink.close() == (line := sink_warnings(recwarn)[-1])
    first, last = sink_warnings(recwarn)
    assert first.startswith(f"mlflow: {uri} failed (MlflowException: ") and "retrying with backoff" in first
    assert line.startswith(f"mlflow: {uri} did not get 20 of 20 steps (steps 1-20) after ")
    assert "Connection refused" in line and line.endswith("the run store has them all")


MLFLOW_SERVER = """
from werkzeug.serving import make_server
from mlflow.server import app
server = make_server("127.0.0.1", 0, app, threaded=True)
print(server.server_port, flush=True)
server.serve_forever()
"""


@pytest.fixture
def tracking_server(tmp_path, monkeypatch) -> Iterator[tuple[str, str, subprocess.Popen]]:
    """MLflow's tracking server (its Flask app under werkzeug: `mlflow server` takes minutes to start on a
    busy CI machine) over a SQLite file; yields (http URI, SQLite URI to read what it stored, process)."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    db = f"sqlite:///{tmp_path / 'server.db'}"
    env = {
        **os.environ,
        "_MLFLOW_SERVER_FILE_STORE": db,
        "_MLFLOW_SERVER_ARTIFACT_ROOT": str(tmp_path / "art"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", MLFLOW_SERVER],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    port: list[str] = []
    reader = threading.Thread(target=lambda: port.append(proc.stdout.readline().strip()), daemon=True)
    reader.start()
    try:
        reader.join(180)
        assert port and port[0], "the MLflow server did not start"
        uri = f"http://127.0.0.1:{port[0]}"

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=5) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_until(healthy, 120, "the MLflow server's /health")
        mlflow.MlflowClient(uri).search_experiments()  # its first store query creates the tables: slow
        yield uri, db, proc
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


@pytest.mark.slow
def test_training_goes_on_when_the_tracking_server_dies(tmp_path, tiny_overrides, tracking_server, recwarn,
                                                        monkeypatch):  # fmt: skip
    """The server is killed once steps 1-2 reached it: steps 3-6 train and are stored, MLflow has 1-2, and the
    loss is reported in one line at the end (plus one when the outage starts)."""
    uri, db, server = tracking_server
    log = MlflowSink.log

    def log_then_kill(sink: MlflowSink, step: int, metrics: dict) -> None:
        if step == 3:
            assert sink.flush(60)  # steps 1-2 are in MLflow
            server.kill()
            server.wait()
        log(sink, step, metrics)

    monkeypatch.setattr(MlflowSink, "log", log_then_kill)
    cfg = load_config(None, [*tiny_overrides, "steps=6", "checkpoint_every=0", f"mlflow={uri}"])
    summary = train(cfg, tmp_path / "store", run_id="ml", progress=False)

    assert summary.steps == 6
    stored = StoreReader(tmp_path / "store").scalars(["ml"], [schema.ENTROPY_MEAN])
    assert sorted(stored["step"]) == [1, 2, 3, 4, 5, 6]
    client = mlflow.MlflowClient(db)
    (run,) = client.search_runs([client.get_experiment_by_name("entropyscope").experiment_id])
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, schema.ENTROPY_MEAN)) == [1, 2]
    lines = sink_warnings(recwarn)
    assert len(lines) <= 2 and sum("did not get" in line for line in lines) == 1, lines
    assert lines[-1].startswith(f"mlflow: {uri} did not get 4 of 6 steps (steps 3-6) after ")
