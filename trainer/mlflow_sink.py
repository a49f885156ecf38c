"""MLflow sink: the config as params and every step's metrics, logged from a background thread so a slow
tracking server never stalls training."""

import queue
import threading
import time
from typing import Any


def mlflow_metric_name(key: str) -> str:
    """Store key -> MLflow name; MLflow forbids '@', so `pass@k` is logged as `pass_at_k`."""
    return key.replace("@", "_at_")


class MlflowSink:
    """Logs to `tracking_uri` under experiment 'entropyscope', one MLflow run per entropyscope run."""

    def __init__(self, tracking_uri: str, run_id: str, config: dict[str, Any]):
        self._queue: queue.Queue = queue.Queue()
        self._error: Exception | None = None
        self._thread = threading.Thread(target=self._work, args=(tracking_uri, run_id, config), daemon=True)
        self._thread.start()

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self._queue.put((step, metrics))

    def close(self, status: str = "finished") -> None:
        """Drain the queue and end the MLflow run; re-raises an error the worker hit."""
        self._queue.put(("close", status))
        self._thread.join()
        if self._error is not None:
            raise self._error

    def _work(self, tracking_uri: str, run_id: str, config: dict[str, Any]) -> None:
        import mlflow  # slow import (seconds): only runs that ask for MLflow pay for it

        client = mlflow.MlflowClient(tracking_uri)
        try:
            exp = client.get_experiment_by_name("entropyscope")
            exp_id = exp.experiment_id if exp else client.create_experiment("entropyscope")
            run = client.create_run(exp_id, run_name=run_id, tags={"entropyscope.run_id": run_id})
            params = [mlflow.entities.Param(k, str(v)) for k, v in config.items()]
            client.log_batch(run.info.run_id, params=params)
        except Exception as e:
            self._error = e
            run = None
        while True:
            step, payload = self._queue.get()
            if step == "close":
                if run is not None:
                    client.set_terminated(run.info.run_id, "FINISHED" if payload == "finished" else "FAILED")
                return
            if run is None:
                continue
            try:
                metrics = [
                    mlflow.entities.Metric(mlflow_metric_name(k), float(v), int(1000 * time.time()), step)
                    for k, v in payload.items()
                ]
                client.log_batch(run.info.run_id, metrics=metrics)
            except Exception as e:  # keep training; report at close
                self._error = e
