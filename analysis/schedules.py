"""Entropy setpoint schedules (after "Flexible Entropy Control in RLVR"): pure, torch-free functions.

Each maps (step, total steps, base target, amplitude, cycles) to the target in nats. Progress u = step/steps
runs from 0 to 1; `amplitude` is relative to the base target, so every schedule stays within
base * [1 - amplitude, 1 + amplitude] and never goes below 0.
- `constant`: base.
- `id` (increase-then-decrease): base -> base(1+a) at u = 1/2 -> base(1-a) at u = 1.
- `did` (decrease-increase-decrease): base -> base(1-a) at 1/3 -> base(1+a) at 2/3 -> base(1-a) at 1.
- `od` (oscillatory decay): a centre falling linearly from base to base(1-a), plus an oscillation of
  `cycles` periods whose relative amplitude a(1-u) decays to 0.
"""

import math
from collections.abc import Callable

SCHEDULES: dict[str, Callable[..., float]] = {}


def _register(name: str) -> Callable[[Callable[..., float]], Callable[..., float]]:
    def deco(fn: Callable[..., float]) -> Callable[..., float]:
        SCHEDULES[name] = fn
        return fn

    return deco


def _interp(u: float, knots: list[tuple[float, float]]) -> float:
    """Piecewise-linear interpolation of (u, value) knots sorted by u, clamped at the ends."""
    if u <= knots[0][0]:
        return knots[0][1]
    for (u0, v0), (u1, v1) in zip(knots, knots[1:], strict=False):
        if u <= u1:
            return v0 + (v1 - v0) * (u - u0) / (u1 - u0)
    return knots[-1][1]


def _progress(step: int, steps: int) -> float:
    return min(max(step / max(steps, 1), 0.0), 1.0)


@_register("constant")
def constant(step: int, steps: int, base: float, amplitude: float = 0.5, cycles: int = 3) -> float:
    """The base target at every step."""
    return base


@_register("id")
def increase_decrease(step: int, steps: int, base: float, amplitude: float = 0.5, cycles: int = 3) -> float:
    """Rise to base(1+a) at mid-run, then fall to base(1-a) at the end."""
    u = _progress(step, steps)
    return base * _interp(u, [(0.0, 1.0), (0.5, 1.0 + amplitude), (1.0, 1.0 - amplitude)])


@_register("did")
def decrease_increase_decrease(
    step: int, steps: int, base: float, amplitude: float = 0.5, cycles: int = 3
) -> float:
    """Fall to base(1-a) at 1/3, rise to base(1+a) at 2/3, fall to base(1-a) at the end."""
    u = _progress(step, steps)
    lo, hi = 1.0 - amplitude, 1.0 + amplitude
    return base * _interp(u, [(0.0, 1.0), (1 / 3, lo), (2 / 3, hi), (1.0, lo)])


@_register("od")
def oscillatory_decay(step: int, steps: int, base: float, amplitude: float = 0.5, cycles: int = 3) -> float:
    """Centre base(1 - a u) plus a sine of `cycles` periods with relative amplitude a(1-u)."""
    u = _progress(step, steps)
    centre = 1.0 - amplitude * u
    wave = amplitude * (1.0 - u) * math.sin(2 * math.pi * cycles * u)
    return base * (centre + wave)  # within [1 - a, 1 + a] since |wave| <= a(1 - u)


def scheduled_target(
    name: str, step: int, steps: int, base: float, amplitude: float = 0.5, cycles: int = 3
) -> float:
    """The target of schedule `name` at `step`; ValueError listing the valid names otherwise."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; valid: {', '.join(SCHEDULES)}")
    if not 0.0 <= amplitude <= 1.0:
        raise ValueError(f"schedule amplitude must lie in [0, 1], got {amplitude}")
    return SCHEDULES[name](step, steps, base, amplitude, cycles)
