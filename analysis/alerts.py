"""Alert rules over a run's step metrics, with Prometheus-style semantics, and the engine that runs them.

Rules are data: one pydantic model per kind (collapse, fast_decline, clip_spike, precision_drift, numerical,
diversity_loss, controller_pinned, runaway, off_target, no_signal, stalled), loaded from YAML (`load_rules`; the defaults for GRPO live in
analysis/default_alerts.yaml). Each rule reads the metrics of one step and says whether its fire condition
holds and whether its resolve condition holds; the gap between the two thresholds is the hysteresis.
`for` and `keep_firing_for` count steps (step numbers, as Prometheus counts time):
- inactive -> pending when the fire condition first holds; pending -> firing once it has held, with no step
  breaking it, for `for` steps (0: at once); a step where it does not hold returns the rule to inactive;
- firing -> inactive (resolved) once the resolve condition has held for `keep_firing_for` steps.
Steps where a rule's metrics are absent (or, except for `numerical`, not finite) leave it as it is.

`AlertEngine.observe` is fed one step at a time (the trainer); `evaluate` runs the same engine over stored
series (`watch`), so both give the same transitions on the same series.
"""

import functools
import json
import math
import operator
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, NamedTuple

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from analysis.errors import UsageError
from analysis.schema import (
    ADV_ZERO_FRAC,
    CLIP_FRAC_HIGH,
    CONTROLLER_AT_BOUND,
    CONTROLLER_BOUND_DIR,
    CONTROLLER_CLOSED_LOOP,
    DIVERSITY_DISTINCT_FRAC,
    ENTROPY_MEAN,
    ENTROPY_TARGET,
    GRAD_NORM,
    LOSS_POLICY,
    METRIC_KEYS,
    PASS_AT_1,
    PASS_AT_K,
    PRECISION_LOGP_POS_FRAC,
    RATIO_ONPOLICY_DEV,
    REWARD_MEAN,
)

FIRED, RESOLVED = "alert_fired", "alert_resolved"
DEFAULT_RULES = "default_alerts.yaml"
Severity = Literal["info", "warning", "critical"]
Metrics = Mapping[str, float]


class Reading(NamedTuple):
    """What a rule makes of one step: does its fire condition hold, does its resolve condition hold, and the
    numbers behind them (the alert event's payload; `describe` turns them into the message)."""

    fire: bool
    clear: bool
    values: dict[str, Any]


def _finite(metrics: Metrics, key: str) -> float | None:
    v = metrics.get(key)
    return v if v is not None and math.isfinite(v) else None


def _check_keys(keys: Iterable[str]) -> None:
    # A misspelt key would never fire: catch it when the file is loaded.
    for key in keys:
        if key not in METRIC_KEYS:
            raise ValueError(f"unknown metric key {key!r}; see the step metric keys in DESIGN.md")


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str = Field(min_length=1)
    """Unique within a rules file; recorded as `rule` in each alert event's payload."""
    severity: Severity = "warning"
    for_steps: int = Field(0, ge=0, alias="for")
    """Steps the fire condition must hold without a break before the alert fires (0: fires at once)."""
    keep_firing_for: int = Field(0, ge=0)
    """Steps the resolve condition must hold without a break before a firing alert resolves."""

    stateful: ClassVar[bool] = False  # reads depend on earlier steps (smoothing): never skip one

    def read_keys(self) -> tuple[str, ...]:
        """The step metric keys the rule reads."""
        return ()

    def baseline_keys(self) -> tuple[str, ...]:
        """Keys whose first finite value (H0) the rule compares against."""
        return ()

    def warmup(self) -> int:
        """Steps the rule's smoothing needs before its readings can be trusted."""
        return 0

    def lookback(self) -> int:
        """Steps of history enough to judge the rule's current state."""
        return self.warmup() + self.for_steps + self.keep_firing_for

    def read(self, step: int, metrics: Metrics, h0: Metrics, memory: dict) -> Reading | None:
        """None when the step has nothing for this rule: its state then stays as it is."""
        raise NotImplementedError

    def describe(self, values: dict[str, Any]) -> str:
        raise NotImplementedError


class CollapseRule(_Rule):
    """Entropy below a fraction of H0 (its first finite value) or below an absolute floor."""

    kind: Literal["collapse"]
    key: str = ENTROPY_MEAN
    fraction: float = Field(0.5, gt=0, lt=1)
    """Fires below fraction × H0."""
    resolve_fraction: float = Field(0.6, gt=0, lt=1)
    """Resolves at or above resolve_fraction × H0 (and the resolve floor)."""
    floor: float = Field(0.0, ge=0)
    """Fires below this many nats, whatever H0."""
    resolve_floor: float | None = Field(None, ge=0)
    """Resolves at or above this many nats; None: the floor."""

    @model_validator(mode="after")
    def _hysteresis(self) -> "CollapseRule":
        _check_keys([self.key])
        if self.resolve_fraction < self.fraction or self._resolve_floor < self.floor:
            raise ValueError("resolve_fraction/resolve_floor must not be below fraction/floor")
        return self

    @property
    def _resolve_floor(self) -> float:
        return self.floor if self.resolve_floor is None else self.resolve_floor

    def read_keys(self) -> tuple[str, ...]:
        return (self.key,)

    baseline_keys = read_keys

    def read(self, step: int, metrics: Metrics, h0: Metrics, memory: dict) -> Reading | None:
        v = _finite(metrics, self.key)
        if v is None:
            return None
        base = h0.get(self.key)
        if base is None or base <= 0:  # no usable H0: only the floors apply
            base, fire_below, resolve_at = math.nan, self.floor, self._resolve_floor
        else:
            fire_below = max(self.fraction * base, self.floor)
            resolve_at = max(self.resolve_fraction * base, self._resolve_floor)
        values = {"value": v, "h0": base, "fire_below": fire_below, "resolve_at": resolve_at}
        return Reading(v < fire_below, v >= resolve_at, values)

    def describe(self, values: dict[str, Any]) -> str:
        v, base = values["value"], values["h0"]
        return (
            f"{self.key} {v:.4g} = {v / base:.0%} of H0 {base:.4g} "
            f"(fires below {values['fire_below']:.4g}, resolves at {values['resolve_at']:.4g})"
        )


class FastDeclineRule(_Rule):
    """Smoothed entropy falling fast relative to H0 while still above the collapse level, with a forecast of
    the steps left until it gets there (below it, the warning has come true and `collapse` takes over)."""

    kind: Literal["fast_decline"]
    key: str = ENTROPY_MEAN
    alpha: float = Field(0.1, gt=0, le=1)
    """EMA weight of the newest value (about 1/alpha steps of memory)."""
    window: int = Field(20, ge=2)
    """Smoothed points the least-squares slope is fitted over."""
    rate: float = Field(0.005, gt=0)
    """Fires when the smoothed value falls faster than rate × H0 per step (0.005: H0 halves in 100 steps)."""
    resolve_rate: float = Field(0.0025, ge=0)
    """Resolves when it falls slower than resolve_rate × H0 per step, or is below the collapse level."""
    collapse_fraction: float = Field(0.5, gt=0, lt=1)
    """The collapse level as a fraction of H0 (the collapse rule's `fraction`): the forecast's target."""

    stateful: ClassVar[bool] = True

    @model_validator(mode="after")
    def _hysteresis(self) -> "FastDeclineRule":
        _check_keys([self.key])
        if self.resolve_rate > self.rate:
            raise ValueError("resolve_rate must not exceed rate")
        return self

    def read_keys(self) -> tuple[str, ...]:
        return (self.key,)

    baseline_keys = read_keys

    def warmup(self) -> int:
        # After 5/alpha steps an EMA started anywhere agrees with the full-history one to e^-5 (< 1%).
        return self.window + math.ceil(5 / self.alpha)

    def read(self, step: int, metrics: Metrics, h0: Metrics, memory: dict) -> Reading | None:
        v = _finite(metrics, self.key)
        if v is None:
            return None
        ema = memory.get("ema")
        ema = v if ema is None else self.alpha * v + (1 - self.alpha) * ema
        memory["ema"] = ema
        xs, ys = memory.setdefault("steps", []), memory.setdefault("emas", [])
        xs.append(step)
        ys.append(ema)
        if len(xs) > self.window:
            del xs[0], ys[0]
        base = h0.get(self.key)
        if len(xs) < self.window or base is None or base <= 0:
            return None
        slope = _slope(xs, ys)
        rel, level = slope / base, self.collapse_fraction * base
        values = {"step": step, "ema": ema, "h0": base, "rel_slope": rel, "collapse_level": level}
        above = ema > level
        if above and slope < 0:
            left = (ema - level) / -slope
            values |= {"steps_to_collapse": round(left, 1), "forecast_step": round(step + left)}
        return Reading(above and rel < -self.rate, not above or rel >= -self.resolve_rate, values)

    def describe(self, values: dict[str, Any]) -> str:
        # Worded as a fall (a positive rate) against both thresholds: a resolution reads as what it is, not as
        # "slope -0.91% (fires below -0.50%)", which looked as if it should still fire.
        ema, level, frac, rel = (
            values["ema"],
            values["collapse_level"],
            self.collapse_fraction,
            values["rel_slope"],
        )
        trend = f"{'falling' if rel < 0 else 'rising'} {abs(rel):.2%} of H0 per step" if rel else "flat"
        if ema <= level:
            return (
                f"smoothed {self.key} {ema:.4g} is below the collapse level {level:.4g} ({frac:g}×H0), where "
                f"`collapse` takes over; {trend}"
            )
        limits = f"fires when falling faster than {self.rate:.2%}, resolves under {self.resolve_rate:.2%}"
        forecast = ""
        if "steps_to_collapse" in values:
            forecast = (
                f"; reaches {level:.4g} ({frac:g}×H0) in ~{values['steps_to_collapse']:.0f} steps "
                f"(step ~{values['forecast_step']})"
            )
        return f"smoothed {self.key} {ema:.4g}, {trend} ({limits}){forecast}"


def _slope(xs: list[int], ys: list[float]) -> float:
    """Least-squares slope of ys over xs, in plain Python (faster than numpy for a few dozen points)."""
    n = len(xs)
    if xs[-1] - xs[0] == n - 1:  # consecutive steps, the usual case: one dot product
        return sum(map(operator.mul, _slope_weights(n), ys))
    mx, my = sum(xs) / n, sum(ys) / n
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)


@functools.cache
def _slope_weights(n: int) -> tuple[float, ...]:
    centered = [i - (n - 1) / 2 for i in range(n)]
    norm = sum(c * c for c in centered)
    return tuple(c / norm for c in centered)


class _AboveRule(_Rule):
    """Fires when any key exceeds its threshold; resolves when every key is at or below its resolve value."""

    thresholds: dict[str, float] = Field(min_length=1)
    resolve: dict[str, float] | None = None
    """Resolve value per key; a key left out (or None for all): its threshold, so no hysteresis."""

    @model_validator(mode="after")
    def _hysteresis(self) -> "_AboveRule":
        _check_keys(self.thresholds)
        resolve = self.resolve or {}
        if set(resolve) - set(self.thresholds):
            raise ValueError(f"resolve keys {sorted(set(resolve) - set(self.thresholds))} have no threshold")
        if any(resolve[k] > self.thresholds[k] for k in resolve):
            raise ValueError("a resolve value must not exceed its threshold")
        return self

    def read_keys(self) -> tuple[str, ...]:
        return tuple(self.thresholds)

    def read(self, step: int, metrics: Metrics, h0: Metrics, memory: dict) -> Reading | None:
        fire, clear, seen = False, True, {}
        resolve = self.resolve or self.thresholds
        for key, limit in self.thresholds.items():
            v = _finite(metrics, key)
            if v is not None:
                seen[key] = v
                fire = fire or v > limit
                clear = clear and v <= resolve.get(key, limit)
        return Reading(fire, clear, seen) if seen else None

    def describe(self, values: dict[str, Any]) -> str:
        over = [k for k, v in values.items() if v > self.thresholds[k]] or list(values)
        return ", ".join(
            f"{k} {values[k]:.4g} ({'>' if values[k] > self.thresholds[k] else '<='} {self.thresholds[k]:.4g})"
            for k in over
        )


class ClipSpikeRule(_AboveRule):
    """Clipping on the high side (entropy-lowering pressure) above a threshold."""

    kind: Literal["clip_spike"]
    thresholds: dict[str, float] = Field(default_factory=lambda: {CLIP_FRAC_HIGH: 0.1}, min_length=1)


class PrecisionDriftRule(_AboveRule):
    """Rollout/train log-prob mismatch: the on-policy ratio is not 1, or bf16 gives log p > 0."""

    kind: Literal["precision_drift"]
    thresholds: dict[str, float] = Field(
        default_factory=lambda: {RATIO_ONPOLICY_DEV: 1e-3, PRECISION_LOGP_POS_FRAC: 1e-3}, min_length=1
    )


class NumericalRule(_Rule):
    """NaN or inf in any of the keys."""

    kind: Literal["numerical"]
    keys: list[str] = Field(default_factory=lambda: [LOSS_POLICY, GRAD_NORM, ENTROPY_MEAN], min_length=1)

    @model_validator(mode="after")
    def _known(self) -> "NumericalRule":
        _check_keys(self.keys)
        return self

    def read_keys(self) -> tuple[str, ...]:
        return tuple(self.keys)

    def read(self, step: int, metrics: Metrics, h0: Metrics, memory: dict) -> Reading | None:
        seen = [k for k in self.keys if k in metrics]
        if not seen:
            return None
        bad = {k: str(metrics[k]) for k in seen if not math.isfinite(metrics[k])}  # str: NaN is not JSON
        return Reading(bool(bad), not bad, bad)

    def describe(self, values: dict[str, Any]) -> str:
        return "non-finite " + ", ".join(f"{k}={v}" for k, v in values.items()) if values else "all finite"


class DiversityLossRule(_Rule):
    """Few distinct completions per prompt, or pass@k closing in on pass@1: sampling explores nothing."""

    kind: Literal["diversity_loss"]
    distinct_below: float | None = Field(0.15, ge=0, le=1)
    """Fires when diversity/distinct_frac falls below this (None: not checked)."""
    distinct_resolve: float | None = Field(0.2, ge=0, le=1)
    gap_below: float | None = Field(0.05, ge=0, le=1)
    """Fires when pass@k − pass@1 falls below this, judged while 0 < pass@k < 1 (None: not checked)."""
    gap_resolve: float | None = Field(0.1, ge=0, le=1)

    @model_validator(mode="after")
    def _hysteresis(self) -> "DiversityLossRule":
        for fire, res in ((self.distinct_below, self.distinct_resolve), (self.gap_below, self.gap_resolve)):
            if fire is not None and res is not None and res < fire:
                raise ValueError("distinct_resolve/gap_resolve must not be below distinct_below/gap_below")
        return self

    def read_keys(self) -> tuple[str, ...]:
        return DIVERSITY_DISTINCT_FRAC, PASS_AT_1, PASS_AT_K

    def _checks(self) -> list[tuple[str, float, float]]:
        """(value name, fire below, resolve at) of each enabled check."""
        out = []
        for name, lo, hi in (("distinct_frac", self.distinct_below, self.distinct_resolve),
                             ("pass_gap", self.gap_below, self.gap_resolve)):  # fmt: skip
            if lo is not None:
                out.append((name, lo, lo if hi is None else hi))
        return out

    def read(self, step: int, metrics: Metrics, h0: Metrics, memory: dict) -> Reading | None:
        p1, pk = _finite(metrics, PASS_AT_1), _finite(metrics, PASS_AT_K)
        now = {"distinct_frac": _finite(metrics, DIVERSITY_DISTINCT_FRAC)}
        # The gap says nothing when no group solves the task (pass@k 0) or every group does (pass@k 1).
        judged = p1 is not None and pk is not None and 0 < pk < 1
        now["pass_gap"] = pk - p1 if judged else None
        seen = {name: (now[name], lo, hi) for name, lo, hi in self._checks() if now[name] is not None}
        if not seen:
            return None
        fire = any(v < lo for v, lo, _ in seen.values())
        clear = all(v >= hi for v, _, hi in seen.values())
        return Reading(fire, clear, {name: v for name, (v, _, _) in seen.items()})

    def describe(self, values: dict[str, Any]) -> str:
        return ", ".join(
            f"{name} {values[name]:.3g} (fires below {lo:.3g}, resolves at {hi:.3g})"
            for name, lo, hi in self._checks()
            if name in values
        )


BOUND_SIDE = {1: "that raises entropy hardest", -1: "that lowers entropy hardest"}  # controller/bound_dir


class ControllerPinnedRule(_Rule):
    """The entropy controller sits at a bound (controller/at_bound = 1): it has lost authority."""

    kind: Literal["controller_pinned"]

    def read_keys(self) -> tuple[str, ...]:
        return CONTROLLER_AT_BOUND, CONTROLLER_BOUND_DIR

    def read(self, step: int, metrics: Metrics, h0: Metrics, memory: dict) -> Reading | None:
        v = _finite(metrics, CONTROLLER_AT_BOUND)
        values = {"at_bound": v, "bound_dir": _finite(metrics, CONTROLLER_BOUND_DIR)}
        return None if v is None else Reading(v >= 0.5, v < 0.5, values)

    def describe(self, values: dict[str, Any]) -> str:
        if values["at_bound"] < 0.5:
            return "controller off its bound"
        side = BOUND_SIDE.get(round(values.get("bound_dir") or 0))
        return f"controller at its bound {side}" if side else "controller at its bound"


class _TargetErrorRule(_Rule):
    """A rule on the smoothed relative error of the entropy against the controller's target."""

    alpha: float = Field(0.2, gt=0, le=1)
    """EMA weight of the newest step's relative error: one noisy step (the entropy estimate is heavy-tailed)
    neither starts nor breaks the count."""

    stateful: ClassVar[bool] = True

    @model_validator(mode="after")
    def _hysteresis(self) -> "_TargetErrorRule":
        if self.resolve_margin > self.margin:
            raise ValueError("resolve_margin must not exceed margin")
        return self

    def read_keys(self) -> tuple[str, ...]:
        return ENTROPY_MEAN, ENTROPY_TARGET, CONTROLLER_BOUND_DIR

    def warmup(self) -> int:
        return math.ceil(5 / self.alpha)

    def read(self, step: int, metrics: Metrics, h0: Metrics, memory: dict) -> Reading | None:
        h, target = _finite(metrics, ENTROPY_MEAN), _finite(metrics, ENTROPY_TARGET)
        side = _finite(metrics, CONTROLLER_BOUND_DIR)
        if h is None or target is None or side is None or target <= 0:
            return None  # no controller metrics (an imported run) or no target
        error = (h - target) / target
        signed, absolute = memory.get("ema"), memory.get("abs")  # EMAs of the error and of its size
        memory["ema"] = error if signed is None else self.alpha * error + (1 - self.alpha) * signed
        memory["abs"] = (
            abs(error) if absolute is None else self.alpha * abs(error) + (1 - self.alpha) * absolute
        )
        values = {"entropy": h, "target": target, "error": memory["ema"], "abs_error": memory["abs"]}
        return Reading(*self.judge(values, side), {**values, "bound_dir": side})

    def judge(self, values: dict[str, float], side: float) -> tuple[bool, bool]:
        """(fire condition holds, resolve condition holds) for the smoothed errors and the bound's side."""
        raise NotImplementedError


class RunawayRule(_TargetErrorRule):
    """Entropy above its target by more than a margin while the controller sits at the bound that pulls it
    down hardest (controller/bound_dir = -1): the controller cannot bring it back. The entropy bonus with no
    penalty (bonus_coef_min 0) ends here when near-deterministic tokens start to widen by themselves."""

    kind: Literal["runaway"]
    margin: float = Field(0.3, gt=0)
    """Fires while the smoothed relative excess (entropy/mean - entropy/target) / entropy/target is above this."""
    resolve_margin: float = Field(0.15, ge=0)
    """Resolves once the smoothed excess is at or below this, or the controller has left that bound."""

    def judge(self, values: dict[str, float], side: float) -> tuple[bool, bool]:
        down, excess = side <= -0.5, values["error"]
        return down and excess > self.margin, not down or excess <= self.resolve_margin

    def describe(self, values: dict[str, Any]) -> str:
        where = "at" if values["bound_dir"] <= -0.5 else "off"
        return (
            f"entropy/mean {values['entropy']:.4g} nats, smoothed {values['error']:+.0%} vs its target "
            f"{values['target']:.4g} (fires above {self.margin:+.0%}), controller {where} the bound that lowers "
            "entropy hardest: it cannot hold the target (entropy bonus: allow a penalty, bonus_coef_min < 0)"
        )


class OffTargetRule(_TargetErrorRule):
    """Entropy off its target by more than a margin on average, either way, with a closed-loop controller on,
    whether or not the controller sits at a bound: the controller does not hold the target. The average is of
    the absolute error, so a controller that swings the entropy around its target counts as off it; this
    catches what `runaway` and `controller_pinned` do not: REPO-D swinging -20%..+80% with ζ inside its range."""

    kind: Literal["off_target"]
    margin: float = Field(0.4, gt=0)
    """Fires while the smoothed absolute relative error |entropy/mean - entropy/target| / entropy/target is
    above this."""
    resolve_margin: float = Field(0.2, ge=0)
    """Resolves once the smoothed absolute relative error is at or below this."""

    def read_keys(self) -> tuple[str, ...]:
        return (*super().read_keys(), CONTROLLER_CLOSED_LOOP)

    def warmup(self) -> int:
        # After 3/alpha steps the window's first reading weighs under 5% of the slow (~20-step) mean; 5/alpha,
        # as for `runaway`, made the watcher read 270 steps per run instead of 200 (`watch` ~15% slower).
        return math.ceil(3 / self.alpha)

    def read(self, step: int, metrics: Metrics, h0: Metrics, memory: dict) -> Reading | None:
        if _finite(metrics, CONTROLLER_CLOSED_LOOP) != 1.0:
            return None  # no controller, or one that does not steer toward the target (kl_cov, ...)
        return super().read(step, metrics, h0, memory)

    def judge(self, values: dict[str, float], side: float) -> tuple[bool, bool]:
        return values["abs_error"] > self.margin, values["abs_error"] <= self.resolve_margin

    def describe(self, values: dict[str, Any]) -> str:
        side = BOUND_SIDE.get(round(values["bound_dir"]))
        return (
            f"entropy/mean {values['entropy']:.4g} nats, off its target {values['target']:.4g} by "
            f"{values['abs_error']:.0%} on average (fires above {self.margin:.0%}; smoothed error "
            f"{values['error']:+.0%}), controller "
            f"{f'at the bound {side}' if side else 'inside its range'}: it does not hold the target"
        )


class NoSignalRule(_Rule):
    """Every group's completions got the same reward (adv/zero_frac = 1): the policy gets no gradient at all."""

    kind: Literal["no_signal"]
    fraction: float = Field(1.0, gt=0, le=1)
    """Fires when adv/zero_frac is at least this (1: no group had a reward difference)."""
    resolve_fraction: float = Field(1.0, gt=0, le=1)
    """Resolves when adv/zero_frac falls below this (1: one group with a reward difference)."""

    @model_validator(mode="after")
    def _hysteresis(self) -> "NoSignalRule":
        if self.resolve_fraction > self.fraction:
            raise ValueError("resolve_fraction must not be above fraction")
        return self

    def read_keys(self) -> tuple[str, ...]:
        return ADV_ZERO_FRAC, REWARD_MEAN

    def read(self, step: int, metrics: Metrics, h0: Metrics, memory: dict) -> Reading | None:
        zero = _finite(metrics, ADV_ZERO_FRAC)
        if zero is None:
            return None
        return Reading(zero >= self.fraction, zero < self.resolve_fraction,
                       {"zero_frac": zero, "reward": _finite(metrics, REWARD_MEAN)})  # fmt: skip

    def describe(self, values: dict[str, Any]) -> str:
        reward = values.get("reward")
        scored = "" if reward is None else f", reward/mean {reward:.3f}"
        return (
            f"{values['zero_frac']:.0%} of groups got one reward for all their completions{scored}: no "
            "advantage, no gradient. Likely causes: the reward function always returns 0 (or always 1), or "
            "the model cannot solve any prompt yet and needs a warm-up or a base model"
        )


class StalledRule(_Rule):
    """No heartbeat for a while although run.json says running: the trainer hangs or died without a trace."""

    kind: Literal["stalled"]
    after_s: float = Field(600.0, gt=0)
    """Fires when the heartbeat is older than this many seconds while the status is running."""
    resolve_s: float = Field(60.0, gt=0)
    """Resolves when the heartbeat is at most this old again, or the run is no longer running."""

    @model_validator(mode="after")
    def _wall_clock(self) -> "StalledRule":
        if self.for_steps or self.keep_firing_for:
            raise ValueError("for/keep_firing_for do not apply to stalled (judged on wall time): use after_s")
        if self.resolve_s > self.after_s:
            raise ValueError("resolve_s must not exceed after_s")
        return self

    def read_liveness(self, status: str | None, heartbeat: float | None, now: float) -> Reading | None:
        if heartbeat is None or not math.isfinite(heartbeat):
            return None
        age, running = now - heartbeat, status == "running"
        values = {"status": status, "heartbeat_age_s": round(age, 1)}
        return Reading(running and age > self.after_s, not running or age <= self.resolve_s, values)

    def read(self, step: int, metrics: Metrics, h0: Metrics, memory: dict) -> Reading | None:
        return None  # judged on wall time by AlertEngine.check_liveness, never on step metrics

    def describe(self, values: dict[str, Any]) -> str:
        return (
            f"status {values['status']}, last heartbeat {values['heartbeat_age_s']:.0f} s ago "
            f"(fires after {self.after_s:g} s)"
        )


Rule = Annotated[
    CollapseRule
    | FastDeclineRule
    | ClipSpikeRule
    | PrecisionDriftRule
    | NumericalRule
    | DiversityLossRule
    | ControllerPinnedRule
    | RunawayRule
    | OffTargetRule
    | NoSignalRule
    | StalledRule,
    Field(discriminator="kind"),
]
RULE_KINDS = (
    "collapse", "fast_decline", "clip_spike", "precision_drift", "numerical", "diversity_loss",
    "controller_pinned", "runaway", "off_target", "no_signal", "stalled",
)  # fmt: skip


class RuleSet(BaseModel):
    """A rules file: the rules, and what the trainer does while a critical alert fires."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    on_critical: Literal["continue", "stop"] = "continue"
    """`stop`: the trainer ends the run (status finished) while a critical alert is firing."""
    rules: list[Rule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> "RuleSet":
        names = [r.name for r in self.rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"rule names must be unique; repeated: {', '.join(dupes)}")
        return self

    def lookback(self) -> int:
        return max((r.lookback() for r in self.rules), default=0)

    def keys(self) -> list[str]:
        """Every step metric key some rule reads."""
        return sorted({k for r in self.rules for k in r.read_keys()})

    def baseline_keys(self) -> list[str]:
        return sorted({k for r in self.rules for k in r.baseline_keys()})


# ---- loading --------------------------------------------------------------------------------------------


def parse_rules(data: Any, source: str = "rules") -> RuleSet:
    """A RuleSet from parsed YAML; any problem is one UsageError line naming the rule and field."""
    if not isinstance(data, dict):
        raise UsageError(f"{source}: expected a mapping with 'rules:' (and optionally 'on_critical:')")
    if not isinstance(data.get("rules") or [], list):
        raise UsageError(f"{source}: rules: expected a list of rules, got {data['rules']!r}")
    for i, rule in enumerate(data.get("rules") or []):
        kind = rule.get("kind") if isinstance(rule, dict) else None
        if kind not in RULE_KINDS:
            what = f"unknown rule kind {kind!r}" if kind is not None else "missing 'kind'"
            raise UsageError(f"{source}: rules[{i}]: {what}; valid kinds: {', '.join(RULE_KINDS)}")
    try:
        return RuleSet.model_validate(data)
    except ValidationError as err:
        raise UsageError(f"{source}: {_first_error(err, data)}") from None


def _first_error(err: ValidationError, data: dict) -> str:
    e = err.errors()[0]
    loc = list(e["loc"])
    where = ""
    if loc[:1] == ["rules"] and len(loc) > 1 and isinstance(loc[1], int):
        rule = data["rules"][loc[1]]
        name = rule.get("name") if isinstance(rule, dict) else None
        where = f"rules[{loc[1]}]" + (f" ({name})" if name else "") + ": "
        loc = loc[3:]  # drop 'rules', the index and the kind tag
    field_name = ".".join(str(x) for x in loc)
    if e["type"] == "extra_forbidden":
        return f"{where}unknown field {field_name!r}"
    msg = e["msg"].removeprefix("Value error, ")
    return f"{where}{field_name + ': ' if field_name else ''}{msg}"


def load_rules(path: str | Path | None = None) -> RuleSet:
    """Rules from a YAML file; None: the defaults shipped with entropyscope (analysis/default_alerts.yaml)."""
    if path is None:
        text, source = resources.files("analysis").joinpath(DEFAULT_RULES).read_text(), DEFAULT_RULES
    else:
        try:
            text, source = Path(path).read_text(), str(path)
        except OSError as err:
            raise UsageError(f"cannot read rules file {path}: {err.strerror or err}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise UsageError(f"{source}: not valid YAML: {str(err).splitlines()[0]}") from None
    return parse_rules(data, source)


# ---- engine ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Transition:
    """An alert firing or resolving at a step: log it with
    `writer.log_event(t.step, t.kind, t.message, severity=t.severity, payload=t.payload)`."""

    rule: str
    kind: Literal["alert_fired", "alert_resolved"]
    step: int
    severity: Severity
    message: str
    payload: dict[str, Any]

    def line(self) -> str:
        """One line for progress output; a firing says from which step its condition held."""
        verb = "FIRED" if self.kind == FIRED else "resolved"
        since = self.payload.get("since")
        held = (
            f" (condition held from step {since})"
            if self.kind == FIRED and since not in (None, self.step)
            else ""
        )
        return f"step {self.step} {verb} [{self.severity}] {self.message}{held}"


@dataclass
class AlertState:
    """Where one rule stands: inactive, pending (condition holds, `for` not yet met) or firing."""

    rule: str
    rule_kind: str
    severity: Severity
    state: Literal["inactive", "pending", "firing"] = "inactive"
    since: int | None = None
    """Step the condition started to hold (pending) or the alert fired (firing)."""
    onset: int | None = None
    """Of a firing alert, the step its condition started to hold (None when started from a recorded event)."""
    clear_since: int | None = None
    step: int | None = None
    """Last step the rule was judged at."""
    text: str = ""
    """The rule's reading at that step."""


def _json_safe(v: Any) -> Any:
    # NaN/inf are not JSON: payloads must stay parseable by DuckDB's json functions.
    return str(v) if isinstance(v, float) and not math.isfinite(v) else v


@dataclass
class _Tracker:
    """One rule's state machine (see the module docstring) and the memory its reads keep (smoothing)."""

    rule: Any
    state: AlertState
    memory: dict = field(default_factory=dict)
    judge_after: int | None = None
    """Steps up to this one change no state; they only feed a stateful rule's smoothing."""
    last: dict[str, Any] | None = None

    def advance(self, step: int, reading: Reading | None) -> Transition | None:
        s, rule = self.state, self.rule
        if reading is None or (self.judge_after is not None and step <= self.judge_after):
            return None
        s.step, self.last = step, reading.values
        if s.state == "firing":
            if not reading.clear:
                s.clear_since = None
                return None
            s.clear_since = step if s.clear_since is None else s.clear_since
            if step - s.clear_since < rule.keep_firing_for:
                return None
            fired_at = s.since
            s.state, s.since, s.clear_since, s.onset = "inactive", None, None, None
            return self._transition(RESOLVED, step, reading, fired_at)
        if not reading.fire:
            s.state, s.since = "inactive", None
            return None
        if s.state == "inactive":
            s.state, s.since = "pending", step
        if step - s.since < rule.for_steps:
            return None
        pending_since = s.since
        s.state, s.since, s.clear_since, s.onset = "firing", step, None, pending_since
        return self._transition(FIRED, step, reading, pending_since)

    def _transition(self, kind: str, step: int, reading: Reading, since: int | None) -> Transition:
        payload = {"rule": self.rule.name, "rule_kind": self.rule.kind, "since": since}
        payload |= {k: _json_safe(v) for k, v in reading.values.items()}
        message = f"{self.rule.name} {'firing' if kind == FIRED else 'resolved'}: {self.rule.describe(reading.values)}"
        return Transition(self.rule.name, kind, step, self.rule.severity, message, payload)  # type: ignore[arg-type]

    def snapshot(self) -> AlertState:
        text = self.rule.describe(self.last) if self.last is not None else ""
        return AlertState(**{**vars(self.state), "text": text})


class AlertEngine:
    """Runs a RuleSet over a run's steps, one step at a time; remembers H0 and each rule's state.

    The trainer: `engine = AlertEngine(load_rules(path))`, then every step
    `for t in engine.observe(step, metrics): writer.log_event(...)`, and stop when `engine.should_stop`.
    """

    def __init__(self, rules: RuleSet | None = None, *, baseline: Mapping[str, float] | None = None) -> None:
        self.rules = rules if rules is not None else load_rules()
        self.baseline: dict[str, float] = dict(baseline or {})
        """H0 per key: given (a resumed run), else the first finite value observed."""
        self._trackers = {
            r.name: _Tracker(r, AlertState(r.name, r.kind, r.severity)) for r in self.rules.rules
        }
        self._step_trackers = [t for t in self._trackers.values() if not isinstance(t.rule, StalledRule)]
        self._baseline_keys = self.rules.baseline_keys()

    def observe(self, step: int, metrics: Mapping[str, float]) -> list[Transition]:
        """Judge every rule on one step's metrics (key -> value); returns the transitions, usually none."""
        for key in self._baseline_keys:
            if key not in self.baseline and (v := _finite(metrics, key)) is not None:
                self.baseline[key] = v
        out = []
        for t in self._step_trackers:
            if t.judge_after is not None and step <= t.judge_after and not t.rule.stateful:
                continue  # nothing to judge and nothing to remember
            if (tr := t.advance(step, t.rule.read(step, metrics, self.baseline, t.memory))) is not None:
                out.append(tr)
        return out

    def check_liveness(
        self, step: int, status: str | None, heartbeat: float | None, now: float
    ) -> list[Transition]:
        """Judge the `stalled` rules on run.json's status and heartbeat (unix seconds) at wall time `now`."""
        out = []
        for t in self._trackers.values():
            if isinstance(t.rule, StalledRule):
                t.judge_after = None  # judged on wall time: a recorded step never holds it back
                if (tr := t.advance(step, t.rule.read_liveness(status, heartbeat, now))) is not None:
                    out.append(tr)
        return out

    def seed(self, rule: str, firing: bool, step: int) -> None:
        """Start `rule` in a recorded state (its last alert event, at `step`): steps up to `step` then change
        nothing, so a transition already recorded is not reported again. Unknown names are ignored."""
        t = self._trackers.get(rule)
        if t is not None:
            t.state.state = "firing" if firing else "inactive"
            t.state.since, t.state.clear_since = (step if firing else None), None
            t.judge_after = step if t.judge_after is None else max(t.judge_after, step)

    def start_window(self, first_step: int) -> None:
        """The steps to come start mid-run at `first_step`: each rule judges nothing until its warm-up is
        through, so its smoothing has forgotten where the window began."""
        for t in self._trackers.values():
            after = first_step + t.rule.warmup() - 1
            t.judge_after = after if t.judge_after is None else max(t.judge_after, after)

    def states(self) -> list[AlertState]:
        return [t.snapshot() for t in self._trackers.values()]

    @property
    def active(self) -> list[AlertState]:
        """The firing alerts."""
        return [t.snapshot() for t in self._trackers.values() if t.state.state == "firing"]

    @property
    def critical_active(self) -> bool:
        return any(
            t.state.state == "firing" and t.rule.severity == "critical" for t in self._trackers.values()
        )

    @property
    def should_stop(self) -> bool:
        """True while a critical alert fires and the rules say `on_critical: stop`."""
        return self.rules.on_critical == "stop" and self.critical_active

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state for checkpoints, so a resumed run neither repeats nor forgets transitions."""
        trackers = {
            n: {"state": vars(t.state), "memory": t.memory, "last": t.last, "judge_after": t.judge_after}
            for n, t in self._trackers.items()
        }
        return json.loads(json.dumps({"baseline": self.baseline, "trackers": trackers}, default=_json_safe))

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.baseline = dict(state.get("baseline") or {})
        for name, saved in (state.get("trackers") or {}).items():
            t = self._trackers.get(name)
            if t is None:
                continue  # a rule removed from the file since the checkpoint
            for k in ("state", "since", "clear_since", "step"):
                setattr(t.state, k, saved["state"][k])
            t.memory, t.last, t.judge_after = dict(saved["memory"]), saved["last"], saved["judge_after"]


# ---- batch evaluation -----------------------------------------------------------------------------------

Series = pd.DataFrame | Mapping[str, tuple[Any, Any]]


@dataclass
class Evaluation:
    states: list[AlertState]
    transitions: list[Transition]
    engine: AlertEngine


def iter_steps(series: Series) -> Iterator[tuple[int, dict[str, float]]]:
    """Per step, in step order, the metrics logged at it. `series`: a long DataFrame (step, key, value), as
    the store holds it, or key -> (steps, values); a key absent at a step is absent from that step's dict."""
    if isinstance(series, pd.DataFrame):
        series = {
            str(k): (g["step"].to_numpy(), g["value"].to_numpy())
            for k, g in series.groupby("key", sort=False)
        }
    cols = {
        k: (np.asarray(s, dtype=np.int64), np.asarray(v, dtype=np.float64)) for k, (s, v) in series.items()
    }
    if not cols:
        return
    steps = np.unique(np.concatenate([s for s, _ in cols.values()]))
    rows: list[dict[str, float]] = [{} for _ in range(len(steps))]
    for key, (s, v) in cols.items():
        order = np.argsort(s, kind="stable")  # a repeated step: the later row wins
        for i, x in zip(np.searchsorted(steps, s[order]).tolist(), v[order].tolist(), strict=True):
            rows[i][key] = x
    yield from zip(steps.tolist(), rows, strict=True)


def evaluate(
    series: Series,
    rules: RuleSet | None = None,
    *,
    baseline: Mapping[str, float] | None = None,
    prior: Mapping[str, tuple[bool, int]] | None = None,
    window_start: int | None = None,
    status: str | None = None,
    heartbeat: float | None = None,
    now: float | None = None,
    last_step: int | None = None,
) -> Evaluation:
    """Run the rules over a run's stored series, exactly as AlertEngine.observe does step by step.

    baseline: H0 per key (default: the first finite value in the series);
    prior: rule -> (firing, step) of its last recorded alert event (see AlertEngine.seed);
    window_start: the series starts mid-run at this step (see AlertEngine.start_window);
    status/heartbeat/now: run.json's liveness for `stalled` rules, judged at the last step (or `last_step`).
    """
    engine = AlertEngine(rules, baseline=baseline)
    if window_start is not None:
        engine.start_window(window_start)
    for name, (firing, step) in (prior or {}).items():
        engine.seed(name, firing, step)
    transitions: list[Transition] = []
    at = last_step if last_step is not None else 0
    for step, metrics in iter_steps(series):
        transitions += engine.observe(step, metrics)
        at = max(at, step)
    if now is not None:
        transitions += engine.check_liveness(at, status, heartbeat, now)
    return Evaluation(engine.states(), transitions, engine)
