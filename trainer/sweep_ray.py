"""`entropyscope sweep --backend ray`: each trial a Ray task that runs the same `entropyscope train` process.

Ray only places the trainings (one CPU each, and a GPU where the run trains on CUDA); the runner in
trainer/sweep.py still decides what to run and records what ended. Every node must see the store at the same
path (a shared filesystem) and have the same code and environment (docs/sweeps.md). Ray is an optional
extra, imported only here.
"""

import signal
import subprocess
from pathlib import Path
from typing import Any

from analysis.errors import UsageError
from trainer.config import validate_config
from trainer.sweep import STOP_GRACE_S, open_train, stop_processes
from trainer.sweep_spec import Sweep, Trial


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UsageError("--backend ray needs Ray; pip install 'entropyscope[ray]'") from None
    return ray


def train_task(args: list[str], log_path: str) -> int:
    """Body of a trial's Ray task: the training as a child process of the worker, and its exit code."""
    proc = open_train(args, Path(log_path))
    try:
        while True:  # short waits: ray.cancel's KeyboardInterrupt only lands between Python bytecodes
            try:
                return proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                continue
    except KeyboardInterrupt:  # ray.cancel: the trainer marks its run failed and keeps its checkpoints
        return stop_processes([proc])[0]


class RayPool:
    """Up to `parallel` trials at once as Ray tasks (default: the cluster's CPUs)."""

    def __init__(self, parallel: int | None, address: str | None, sweep: Sweep) -> None:
        ray = import_ray()
        self.ray, self.started = ray, not ray.is_initialized()
        if self.started:
            if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
                # A background job ignores SIGINT, and the local Ray processes would inherit that: ray.cancel
                # raises KeyboardInterrupt in a task through SIGINT, so nothing could stop a task.
                signal.signal(signal.SIGINT, signal.default_int_handler)
            try:
                ray.init(address=address, log_to_driver=False, include_dashboard=False)
            except (ConnectionError, RuntimeError, ValueError) as err:
                where = address or "a local instance"
                raise UsageError(f"cannot start or reach Ray at {where}: {err}; check --address") from None
        resources = ray.cluster_resources()
        self.slots = parallel or max(1, int(resources.get("CPU", 1)))
        self.has_gpus = resources.get("GPU", 0) > 0
        self.task = ray.remote(train_task)
        self.running: dict[Any, Trial] = {}

    def free(self) -> int:
        return self.slots - len(self.running)

    def busy(self) -> int:
        return len(self.running)

    def start(self, trial: Trial, args: list[str], log_path: Path) -> None:
        device = validate_config(trial.config).device
        gpus = 1 if device == "cuda" or (device == "auto" and self.has_gpus) else 0
        ref = self.task.options(num_cpus=1, num_gpus=gpus).remote(args, str(log_path))
        self.running[ref] = trial

    def poll(self) -> list[tuple[Trial, int]]:
        if not self.running:
            return []
        ready, _ = self.ray.wait(list(self.running), num_returns=len(self.running), timeout=0)
        return [(self.running.pop(ref), self.exit_code(ref)) for ref in ready]

    def exit_code(self, ref: Any) -> int:
        try:
            return int(self.ray.get(ref))
        except self.ray.exceptions.RayError:  # the worker or its node died: the log says what it could
            return -1

    def stop(self) -> list[tuple[Trial, int]]:
        refs = list(self.running)
        for ref in refs:
            self.ray.cancel(ref)  # KeyboardInterrupt in the task, which stops its training
        self.ray.wait(refs, num_returns=len(refs), timeout=STOP_GRACE_S)
        ended = [(trial, self.exit_code(ref)) for ref, trial in self.running.items()]
        self.running.clear()
        return ended

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()
