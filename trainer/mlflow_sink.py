"""MLflow sink: the config as params and every step's metrics, logged from a background thread so a slow or
dead tracking server never stalls training.

A failed call is retried with backoff (RETRY_FIRST_S doubling to RETRY_MAX_S); steps logged meanwhile wait in
a buffer of the newest MAX_PENDING_STEPS. The first failure of an outage is reported in one warning line. At
close the sink sends what is left for at most `timeout` seconds, giving up at the first failed try (a dead
server costs the run's end one request), ends the MLflow run, and reports in one line what MLflow never got
(the run store has every step).
"""

import os
import threading
import time
import warnings
from collections import deque
from typing import Any

RETRY_FIRST_S = 1.0
RETRY_MAX_S = 60.0
MAX_PENDING_STEPS = 10_000
CLOSE_TIMEOUT_S = 10.0
JOIN_GRACE_S = 30.0  # past close's timeout, for a request in flight (one try gives up after 30 s, see below)
BATCH_STEPS = 10  # steps per log_batch call: MLflow takes at most 1,000 metrics per call
# MLflow's client retries a failed request 7 times over minutes and waits 120 s for an answer. The sink does
# its own retrying, so unless the user set these, one request is one try and gives up after 30 s.
_MLFLOW_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


def mlflow_metric_name(key: str) -> str:
    """Store key -> MLflow name; MLflow forbids '@', so `pass@k` is logged as `pass_at_k`."""
    return key.replace("@", "_at_")


def _short(err: Exception) -> str:
    """One line of at most ~200 characters; MLflow's messages end with the cause (Connection refused)."""
    text = f"{type(err).__name__}: {' '.join(str(err).split())}"
    return text if len(text) <= 200 else f"{text[:80]} ... {text[-110:]}"


def _warn(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=2)


class MlflowSink:
    """Logs to `tracking_uri` under experiment 'entropyscope', one MLflow run per entropyscope run."""

    def __init__(self, tracking_uri: str, run_id: str, config: dict[str, Any]):
        for name, value in _MLFLOW_ENV.items():
            os.environ.setdefault(name, value)
        self.uri = tracking_uri
        self._cond = threading.Condition()
        self._pending: deque[tuple[int, dict[str, float]]] = deque()
        self._in_flight: list[int] = []  # steps of the batch being sent
        self._closing: str | None = None
        self._deadline = float("inf")
        self.logged = self.sent = self.dropped = self.failures = 0
        self.dropped_steps: tuple[int, int] | None = None  # (first, last) step MLflow never got
        self._error: Exception | None = None
        self._thread = threading.Thread(target=self._work, args=(run_id, config), daemon=True)
        self._thread.start()

    def log(self, step: int, metrics: dict[str, float]) -> None:
        with self._cond:
            self.logged += 1
            self._pending.append((step, metrics))
            self._trim()
            self._cond.notify()

    def flush(self, timeout: float) -> bool:
        """Wait until every logged step was sent, for at most `timeout` seconds; True when all were."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._in_flight, timeout)

    def close(self, status: str = "finished", timeout: float = CLOSE_TIMEOUT_S) -> str | None:
        """Send what is left for at most `timeout` seconds and end the MLflow run; returns (and warns) the one
        line saying what MLflow never got, None when it got everything."""
        with self._cond:
            self._closing = status
            self._deadline = time.monotonic() + timeout
            self._cond.notify()
        self._thread.join(timeout + JOIN_GRACE_S)
        with self._cond:
            for step in [*self._in_flight, *(s for s, _ in self._pending)]:  # in flight: the worker hangs
                self._drop(step)
            self._pending.clear()
            if not self.dropped:
                return None
            lo, hi = self.dropped_steps or (0, 0)
            tries = f"{self.failures} failed {'try' if self.failures == 1 else 'tries'}"
            last = f", the last: {_short(self._error)}" if self._error else ""
            line = (
                f"mlflow: {self.uri} did not get {self.dropped} of {self.logged} steps (steps {lo}-{hi}) "
                f"after {tries}{last}; the run store has them all"
            )
        _warn(line)
        return line

    # ---- worker ----------------------------------------------------------------------------------------------

    def _trim(self) -> None:
        while len(self._pending) + len(self._in_flight) > MAX_PENDING_STEPS and self._pending:
            self._drop(self._pending.popleft()[0])

    def _drop(self, step: int) -> None:
        self.dropped += 1
        lo, hi = self.dropped_steps or (step, step)
        self.dropped_steps = (min(lo, step), max(hi, step))

    def _next_batch(self, started: bool, retry_at: float) -> list[tuple[int, dict[str, float]]] | None:
        """Wait for work that is due; the batch to send ([] = only start the run), or None to stop."""
        with self._cond:
            while True:
                now = time.monotonic()
                closing = self._closing is not None
                if closing and (now >= self._deadline or (started and not self._pending)):
                    return None
                due = now >= retry_at or closing  # closing: no more waiting on the backoff
                if due and (self._pending or not started):
                    n = min(BATCH_STEPS, len(self._pending))
                    batch = [self._pending.popleft() for _ in range(n)]
                    self._in_flight = [step for step, _ in batch]
                    return batch
                wake = self._deadline if closing else retry_at
                self._cond.wait(None if wake == float("inf") or now >= wake else wake - now)

    def _work(self, run_id: str, config: dict[str, Any]) -> None:
        import mlflow  # slow import (seconds): only runs that ask for MLflow pay for it

        client = mlflow.MlflowClient(self.uri)
        mlflow_run: str | None = None
        params = [mlflow.entities.Param(k, str(v)) for k, v in config.items()]
        backoff, retry_at, down = 0.0, 0.0, False
        while (batch := self._next_batch(mlflow_run is not None and not params, retry_at)) is not None:
            try:
                if mlflow_run is None:
                    exp = client.get_experiment_by_name("entropyscope")
                    exp_id = exp.experiment_id if exp else client.create_experiment("entropyscope")
                    tags = {"entropyscope.run_id": run_id}
                    mlflow_run = client.create_run(exp_id, run_name=run_id, tags=tags).info.run_id
                if params:  # after the run exists: a retry must not create a second one
                    client.log_batch(mlflow_run, params=params)
                    params = []
                if batch:
                    metrics = [
                        mlflow.entities.Metric(mlflow_metric_name(k), float(v), int(1000 * time.time()), step)
                        for step, values in batch
                        for k, v in values.items()
                    ]
                    client.log_batch(mlflow_run, metrics=metrics)
            except Exception as err:  # keep training; retry later, report once
                with self._cond:
                    self._pending.extendleft(reversed(batch))
                    self._in_flight = []
                    self._trim()
                    self.failures += 1
                    self._error = err
                    self._cond.notify_all()
                if self._closing is not None:
                    down = True
                    break
                backoff = min(max(2 * backoff, RETRY_FIRST_S), RETRY_MAX_S)
                retry_at = time.monotonic() + backoff
                if not down:
                    down = True
                    _warn(
                        f"mlflow: {self.uri} failed ({_short(err)}); training goes on, retrying with backoff "
                        f"up to {RETRY_MAX_S:g} s, keeping up to {MAX_PENDING_STEPS} steps meanwhile"
                    )
                continue
            with self._cond:
                self.sent += len(batch)
                self._in_flight = []
                self._cond.notify_all()
            backoff, retry_at, down = 0.0, 0.0, False
        if mlflow_run is not None and not down:
            ended = "FINISHED" if self._closing == "finished" else "FAILED"
            try:
                client.set_terminated(mlflow_run, ended)
            except Exception as err:  # the run stays RUNNING in MLflow; the metrics are there
                self._error = err
