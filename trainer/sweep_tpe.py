"""`method: tpe`: configurations suggested one at a time by Optuna's TPE sampler (Bergstra et al. 2011).

Whenever a slot is free the search asks Optuna for a configuration and queues its runs (one per seed); once
every seed of a configuration has ended it tells Optuna the objective: the mean over its finished seeds of the
spec's metric's final value (mean of the last 10% of steps), or a failed trial when none finished. The store
is the memory: run again, the configurations already there (run.json's `sweep` field) are replayed into a
fresh study first, so finished runs are not repeated and interrupted ones are resumed. Optuna is an optional
extra, imported only here.
"""

import dataclasses
from collections import deque
from pathlib import Path
from typing import Any

from analysis.errors import UsageError
from analysis.metrics import final_window
from analysis.store_reader import StoreReader
from analysis.store_writer import read_run_json
from trainer.sweep_spec import Range, Sweep, Trial, digest, trials_for

MAX_REPEATS = 20
"""Suggestions in a row that repeat configurations already run, after which the search ends early: a small
list-only space is exhausted, or TPE keeps returning to the same best configurations."""


def import_optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise UsageError("method: tpe needs Optuna; pip install 'entropyscope[optuna]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # its per-trial lines would tear the progress bar
    return optuna


def with_stored_trials(sweep: Sweep, store: Path) -> Sweep:
    """The sweep with the runs of every configuration it already has in the store, oldest first."""
    found: dict[str, tuple[float, dict[str, Any]]] = {}
    for run_dir in store.iterdir() if store.is_dir() else []:
        info = read_run_json(run_dir) if (run_dir / "run.json").is_file() else None
        field = (info or {}).get("sweep") or {}
        if field.get("id") == sweep.id and isinstance(field.get("params"), dict):
            key = digest(field["params"])
            found.setdefault(key, (info.get("created", 0.0), field["params"]))
            found[key] = min(found[key], (info.get("created", 0.0), field["params"]), key=lambda x: x[0])
    configs = [params for _, params in sorted(found.values(), key=lambda x: x[0])]
    trials = [t for params in configs for t in trials_for(sweep.id, sweep.base, params, sweep.seeds)]
    return dataclasses.replace(sweep, trials=trials)


def distributions(optuna: Any, parameters: dict[str, list[Any] | Range]) -> dict[str, Any]:
    d = optuna.distributions
    out = {}
    for key, choice in parameters.items():
        if not isinstance(choice, Range):
            out[key] = d.CategoricalDistribution(choice)
        elif isinstance(choice.min, int) and isinstance(choice.max, int) and not choice.log:
            out[key] = d.IntDistribution(choice.min, choice.max)
        else:
            out[key] = d.FloatDistribution(float(choice.min), float(choice.max), log=choice.log)
    return out


def final_value(reader: StoreReader, run_id: str, key: str) -> float | None:
    """Mean of the last 10% of a run's steps of `key`; None when it logged none."""
    values = reader.scalars([run_id], [key]).sort_values("step")["value"]
    return float(values.iloc[-final_window(len(values)) :].mean()) if len(values) else None


class TpeSearch:
    """The runner's plan for `method: tpe` (trainer/sweep.py's Queue is the one for grid and random)."""

    def __init__(self, sweep: Sweep, store: Path, states: list[tuple[Trial, str]]) -> None:
        optuna = import_optuna()
        self.sweep, self.store = sweep, store
        configs = {digest(t.params) for t, _ in states}
        # seeded by what is there already: a rerun's random start-up draws are new ones, not the first run's
        seed = int(digest([sweep.id, str(sweep.spec.parameters), sorted(configs)]), 16)
        sampler = optuna.samplers.TPESampler(seed=seed)
        self.study = optuna.create_study(direction=sweep.spec.metric.goal, sampler=sampler)
        self.dists = distributions(optuna, sweep.spec.parameters)
        self.fail = optuna.trial.TrialState.FAIL
        self.told: dict[str, float | None] = {}  # config digest -> objective told (None: failed)
        self.queue: deque[tuple[Trial, bool]] = deque()
        self.open: dict[
            str, tuple[Any, set[str], list[Trial]]
        ] = {}  # config digest -> (trial, waiting, runs)
        by_config: dict[str, list[tuple[Trial, str]]] = {}
        for trial, state in states:
            by_config.setdefault(digest(trial.params), []).append((trial, state))
        for runs in by_config.values():  # replay: same params, outcomes as far as they are known
            self.study.enqueue_trial(runs[0][0].params)
            todo = [(t, st == "resume") for t, st in runs if st in ("new", "resume")]
            self.track(self.study.ask(self.dists), [t for t, _ in runs], {t.run_id for t, _ in todo})
            self.queue.extend(todo)
        self.left = max(0, (sweep.spec.count or 0) - len(by_config))
        self.repeats = 0

    def track(self, asked: Any, runs: list[Trial], waiting: set[str]) -> None:
        self.open[digest(runs[0].params)] = (asked, waiting, runs)
        if not waiting:
            self.tell(digest(runs[0].params))

    def tell(self, key: str) -> None:
        asked, _, runs = self.open.pop(key)
        reader = StoreReader(self.store)
        values = [
            final_value(reader, t.run_id, self.sweep.spec.metric.name) for t in runs if self.finished(t)
        ]
        values = [v for v in values if v is not None]
        self.told[key] = sum(values) / len(values) if values else None
        self.tell_value(asked, self.told[key])

    def tell_value(self, asked: Any, value: float | None) -> None:
        if value is None:
            self.study.tell(asked, state=self.fail)
        else:
            self.study.tell(asked, value)

    def finished(self, trial: Trial) -> bool:
        return (read_run_json(self.store / trial.run_id) or {}).get("status") == "finished"

    def pending(self) -> bool:
        return bool(self.queue) or self.left > 0

    def next(self) -> tuple[Trial, bool] | None:
        """The next run to start; None while the next suggestion repeats a configuration (told again, not run)."""
        if not self.queue and self.left > 0:
            asked = self.study.ask(self.dists)
            params = {k: round_value(v) for k, v in sorted(asked.params.items())}
            key = digest(params)
            if key in self.told or key in self.open:  # TPE may suggest a configuration again: run it once
                self.tell_value(asked, self.told.get(key))
                self.repeats += 1
                if self.repeats >= MAX_REPEATS:
                    self.left = 0
                return None
            self.left, self.repeats = self.left - 1, 0
            runs = trials_for(self.sweep.id, self.sweep.base, params, self.sweep.seeds)
            self.track(asked, runs, {t.run_id for t in runs})
            self.queue.extend((t, False) for t in runs)
        return self.queue.popleft() if self.queue else None

    def ended(self, trial: Trial, rc: int) -> None:
        key = digest(trial.params)
        if key in self.open:
            self.open[key][1].discard(trial.run_id)
            if not self.open[key][1]:
                self.tell(key)


def round_value(value: Any) -> Any:
    """Floats to 6 significant digits: readable in run ids' params, as random draws are."""
    return float(f"{value:.6g}") if isinstance(value, float) else value
