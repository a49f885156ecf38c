"""The entropyscope side of a run driven by another trainer: config, controller, store writer, control file and
alerts, with our loop's own functions (trainer/loop.py) doing the work, so a TRL run reads, steers and alerts
exactly as one of ours.

Ranks: every rank holds the config and controller and feeds them the same all-rank metrics, so they decide
identically; only the main rank writes the store and reads control.json, and what it read is broadcast, so a
change applies on every rank at the same step.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

from analysis import schema
from analysis.control import ControlWatcher
from trainer.config import TrainConfig
from trainer.controllers import build_controller
from trainer.live_control import poll_control
from trainer.loop import build_alerts, check_alerts, compact_finished, step_target

CONTROLLERS = ("none", "repo_r", "repo_d", "adapo", "entropy_bonus")
"""Controllers that act through hooks another trainer exposes: advantages (REPO), ε_high (ADAPO) and an entropy
coefficient (bonus). Clip-Cov, KL-Cov and CE-GPPO change the objective itself and run in our loop only."""

Broadcast = Callable[[Any], Any]
"""The main rank's value on every rank; the identity on one process."""


class _NoWriter:
    """What ranks other than the main one log to."""

    def log_event(self, *args: Any, **kwargs: Any) -> None:
        pass


class _Read:
    """A watcher that returns what the main rank's watcher read."""

    def __init__(self, doc: Any) -> None:
        self.doc = doc

    def poll(self) -> Any:
        return self.doc


class Session:
    """Controller and bookkeeping state across steps; `cfg`, `controller`, `optimizer` and `overrides` are what
    trainer.live_control.apply_control expects of the run it changes."""

    def __init__(self, cfg: TrainConfig, writer: Any, run_dir: Path, optimizer: Any, broadcast: Broadcast):
        self.cfg = cfg
        self.controller = build_controller(cfg)
        self.optimizer = optimizer
        self.overrides: dict = {}
        self.writer = writer  # None on ranks other than the main one
        self.watcher = ControlWatcher(run_dir) if writer is not None else None
        self.alerts = build_alerts(cfg) if writer is not None else None
        self.broadcast = broadcast
        self.h0: float | None = None

    def target(self, step: int, measured: float) -> float:
        if self.h0 is None:
            self.h0 = measured
        return step_target(self.cfg, step, self.h0)

    def controller_metrics(self) -> dict[str, float]:
        """controller/* of the parameters in force (call before `end_step` updates them)."""
        return self.controller.metrics(self.cfg.eps_low, self.cfg.eps_high)

    def end_step(self, step: int, metrics: dict[str, float], say: Callable[[str], None]) -> bool:
        """After a step's metrics are logged: update the controller, apply control.json, judge the alerts.
        True when the alert rules stop the run. Collective."""
        self.controller.update(metrics[schema.ENTROPY_MEAN], metrics[schema.ENTROPY_TARGET], step)
        doc = self.broadcast(self.watcher.poll() if self.watcher is not None else None)
        poll_control(self.writer or _NoWriter(), self, _Read(doc), step)
        stop = self.alerts is not None and check_alerts(self.writer, self.alerts, step, metrics, say)
        return bool(self.broadcast(stop))

    def close(self, run_dir: Path) -> None:
        if self.writer is not None:
            compact_finished(run_dir)
