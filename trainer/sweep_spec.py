"""Sweep specs (`entropyscope sweep SPEC.yaml`): parse, validate up front, expand into trials (torch-free).

A spec in the spirit of W&B Sweeps:

    name: setpoints                  # optional: the sweep id (default: derived from base + method + parameters)
    base: {task: digit_sum, steps: 200}   # config keys, or the path of a config YAML (relative to the spec)
    method: grid                     # grid: every combination; random: `count` draws; tpe: `count` from Optuna
    parameters: {controller: [repo_r, entropy_bonus], target_entropy: [0.2, 0.4]}
    seeds: 4                         # a count (0..n-1) or a list
    metric: {name: reward/mean, goal: maximize}

Each combination x seed is one trial: an ordinary run whose id is derived from the sweep id, the swept values
and the seed, so running the spec again finds the runs it made. `count` and `seeds` are left out of the derived
sweep id and random draws come one after another from a stream fixed by the spec's content, so raising either
later adds runs to the same sweep instead of starting a new one.
"""

import hashlib
import itertools
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from analysis import run_ids, schema
from analysis.errors import UsageError
from trainer.config import TrainConfig, read_config_file, validate_config


class Range(BaseModel):
    """A range for `method: random` or `tpe`: uniform in [min, max] (integers when both bounds are), or log-uniform."""

    model_config = ConfigDict(extra="forbid")

    min: float | int
    """Lower bound."""
    max: float | int
    """Upper bound."""
    log: bool = False
    """Draw log-uniformly (both bounds > 0), as for learning rates."""

    @model_validator(mode="after")
    def _ordered(self) -> "Range":
        if self.min > self.max:
            raise ValueError(f"range min {self.min} exceeds max {self.max}")
        if self.log and self.min <= 0:
            raise ValueError(f"a log range needs min > 0, got {self.min}")
        return self

    def draw(self, rng: random.Random) -> float | int:
        if self.log:
            return float(f"{math.exp(rng.uniform(math.log(self.min), math.log(self.max))):.6g}")
        if isinstance(self.min, int) and isinstance(self.max, int):
            return rng.randint(self.min, self.max)
        return float(f"{rng.uniform(self.min, self.max):.6g}")  # 6 digits: readable, still distinct


class Metric(BaseModel):
    """What "best" means for this sweep (the Sweeps page ranks settings by it)."""

    model_config = ConfigDict(extra="forbid")

    name: str = schema.REWARD_MEAN
    """A step metric key (DESIGN.md), judged on its final value (mean of the last 10% of steps)."""
    goal: Literal["maximize", "minimize"] = "maximize"
    """Whether higher or lower is better."""


class SweepSpec(BaseModel):
    """The YAML spec, as written (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    """Sweep id; default: `sweep-` and a hash of base, method and parameters."""
    base: str | dict[str, Any] = Field(default_factory=dict)
    """Config keys every trial shares, or the path of a config YAML (relative to the spec file)."""
    method: Literal["grid", "random", "tpe"] = "grid"
    """grid: every combination of the listed values; random: `count` draws from lists and ranges; tpe: `count`
    configurations suggested one by one by Optuna's TPE sampler from the objective of those already run."""
    parameters: dict[str, list[Any] | Range] = Field(default_factory=dict)
    """Swept config keys: a list of values (every method) or a {min, max, log} range (random and tpe)."""
    count: int | None = Field(default=None, ge=1)
    """random, tpe: how many configurations to run (a combination drawn twice is one run)."""
    seeds: int | list[int] = Field(default=1)
    """Seeds per configuration: a count n (seeds 0..n-1) or a list of seeds."""
    metric: Metric = Field(default_factory=Metric)
    """The objective: a step metric and whether to maximize or minimize it."""

    @model_validator(mode="after")
    def _consistent(self) -> "SweepSpec":
        if self.method == "grid":
            ranges = [k for k, v in self.parameters.items() if isinstance(v, Range)]
            if ranges:
                raise ValueError(
                    f"parameter {ranges[0]!r} is a range; grid needs a list (or use method: random)"
                )
            if self.count is not None:
                raise ValueError("count is for method: random; a grid runs every combination")
        elif self.count is None:
            raise ValueError(f"method: {self.method} needs count: N, the number of configurations to run")
        empty = [k for k, v in self.parameters.items() if isinstance(v, list) and not v]
        if empty:
            raise ValueError(f"parameter {empty[0]!r} lists no values")
        if isinstance(self.seeds, int) and self.seeds < 1:
            raise ValueError(f"seeds: {self.seeds}; give a count of 1 or more, or a list")
        if isinstance(self.seeds, list) and (not self.seeds or len(set(self.seeds)) < len(self.seeds)):
            raise ValueError("seeds: give a non-empty list of distinct seeds")
        return self


@dataclass(frozen=True)
class Trial:
    """One run of a sweep: the swept values at one seed."""

    run_id: str
    params: dict[str, Any]
    seed: int
    config: dict[str, Any]
    """Every config key the spec sets for this run: base, swept values and seed."""

    def sweep_field(self, sweep_id: str) -> dict[str, Any]:
        """run.json's `sweep` field (DESIGN.md contract)."""
        return {"id": sweep_id, "params": self.params, "seed": self.seed}


@dataclass(frozen=True)
class Sweep:
    id: str
    spec: SweepSpec
    base: dict[str, Any]
    seeds: list[int]
    trials: list[Trial]
    """Every run (grid, random); for tpe none: its configurations are suggested while it runs."""


def digest(value: Any, n: int = 8) -> str:
    """A short stable hash of a JSON-able value (key order ignored)."""
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:n]


def _spec_error(where: str, err: ValidationError) -> UsageError:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"] if not str(p).startswith(("list[", "Range", "int", "float")))
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = f"unknown key; valid keys: {', '.join(SweepSpec.model_fields)}"
    return UsageError(f"{where}: {f'{key}: ' if key else ''}{msg}")


def check_keys(where: str, keys: list[str], what: str) -> None:
    """UsageError unless every key is a trainer config key other than `seed` (the spec's `seeds` sets it)."""
    for key in keys:
        if key == "seed":
            raise UsageError(f"{where}: {what} sets seed; list the seeds in the spec's `seeds` instead")
        if key not in TrainConfig.model_fields:
            raise UsageError(
                f"{where}: {what} key {key!r} is not a config key; valid keys: {', '.join(TrainConfig.model_fields)}"
            )


def bounds(choice: list[Any] | Range) -> list[Any]:
    """A list's values, or a range's two ends."""
    return [choice.min, choice.max] if isinstance(choice, Range) else choice


def combinations(spec: SweepSpec, basis: str) -> list[dict[str, Any]]:
    """The swept configurations, in a fixed order: the grid's product, or `count` random draws."""
    keys = sorted(spec.parameters)
    if spec.method == "tpe":  # suggested while the sweep runs; here only each list value and range bound,
        return [  # so a bad one fails up front
            {j: bounds(spec.parameters[j])[i if j == k else 0] for j in keys}
            for k in keys
            for i in range(len(bounds(spec.parameters[k])))
        ]
    if spec.method == "grid":
        return [
            dict(zip(keys, values, strict=True))
            for values in itertools.product(*(spec.parameters[k] for k in keys))
        ]
    rng = random.Random(basis)  # a string seed: the same draws on every machine and Python run
    draws = []
    for _ in range(spec.count or 0):
        draw = {}
        for k in keys:
            choice = spec.parameters[k]
            draw[k] = choice.draw(rng) if isinstance(choice, Range) else rng.choice(choice)
        draws.append(draw)
    return draws


def load_sweep(path: str | Path) -> Sweep:
    """Parse, validate and expand a spec file; UsageError (one line) on anything wrong with it."""
    where = f"sweep spec {str(path)!r}"
    raw = read_config_file(path, what="sweep spec")
    try:
        spec = SweepSpec(**raw)
    except ValidationError as err:
        raise _spec_error(where, err) from None
    base = spec.base
    if isinstance(base, str):
        base = read_config_file(Path(path).parent / base, what="sweep base config")
    check_keys(where, list(base), "base")
    check_keys(where, list(spec.parameters), "parameters")
    if spec.metric.name not in schema.METRIC_KEYS:
        raise UsageError(
            f"{where}: metric {spec.metric.name!r} is not a step metric key (DESIGN.md lists them)"
        )
    content = {"base": base, "method": spec.method, "parameters": spec.model_dump()["parameters"]}
    sweep_id = spec.name or f"sweep-{digest(content)}"
    if run_ids.run_id_problem(sweep_id):
        raise UsageError(
            f"{where}: name {sweep_id!r} cannot be part of a run id: {run_ids.run_id_problem(sweep_id)}"
        )
    seeds = list(range(spec.seeds)) if isinstance(spec.seeds, int) else spec.seeds
    trials: dict[str, Trial] = {}
    for params in combinations(spec, digest(content, 40)):
        try:
            batch = trials_for(sweep_id, base, params, seeds)
        except UsageError as err:
            raise UsageError(f"{where}: {err}") from None
        if batch[0].run_id in trials and spec.method == "grid":
            raise UsageError(f"{where}: {json.dumps(params)} comes twice; list each value once")
        trials.update((t.run_id, t) for t in batch if t.run_id not in trials)
    sweep = Sweep(sweep_id, spec, base, seeds, [] if spec.method == "tpe" else list(trials.values()))
    return sweep


def trials_for(sweep_id: str, base: dict[str, Any], params: dict[str, Any], seeds: list[int]) -> list[Trial]:
    """The runs of one configuration, one per seed; UsageError when its config is invalid."""
    out = []
    for seed in seeds:
        config = {**base, **params, "seed": seed}
        try:
            validate_config(config)
        except UsageError as err:
            raise UsageError(f"{json.dumps(params)} at seed {seed}: {err}") from None
        out.append(Trial(run_ids.check_run_id(f"{sweep_id}-{digest(params)}-s{seed}"), params, seed, config))
    return out


def parse_sweep_field(text: str) -> dict[str, Any]:
    """`train --sweep JSON` (set by the sweep runner): run.json's `sweep` field; UsageError when malformed."""
    try:
        field = json.loads(text)
    except ValueError:
        field = None
    if not isinstance(field, dict) or set(field) != {"id", "params", "seed"}:
        raise UsageError(f"--sweep {text!r}: expected a JSON object with id, params and seed")
    return field
