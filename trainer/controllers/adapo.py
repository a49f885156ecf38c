"""ADAPO: DAPO's decoupled clip with ε_high adapted toward the entropy target.

Law (multiplicative integral): ε_high <- clip(ε_high · exp(g · (target - H) / target), ε_min, ε_max).
The step is proportional to the relative error, so it is scale-free in nats, slows down near the target
(no bang-bang oscillation as with a fixed ×1.1 step), moves ε_high on a log scale (ε_high > 0 always) and
accumulates the error (integral action: a persistent deficit keeps widening the clip until it binds).
"""

import math
from typing import Any

from trainer.controllers.base import Controller, register_controller


def adapo_step(eps_high: float, measured: float, target: float, gain: float, lo: float, hi: float) -> float:
    """The next ε_high."""
    err = (target - measured) / max(target, 1e-8)
    return min(hi, max(lo, eps_high * math.exp(gain * err)))


@register_controller("adapo")
class Adapo(Controller):
    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.gain, self.lo, self.hi = cfg.adapo_gain, cfg.eps_high_min, cfg.eps_high_max
        self.value = min(self.hi, max(self.lo, cfg.eps_high))

    def update(self, measured: float, target: float, step: int) -> None:
        self.value = adapo_step(self.value, measured, target, self.gain, self.lo, self.hi)
        self.at_bound = self.value <= self.lo or self.value >= self.hi

    def retune(self, cfg: Any, changed: set[str]) -> None:
        value = cfg.eps_high if "eps_high" in changed else self.value
        self.value = min(self.hi, max(self.lo, value))

    def clip_range(self, eps_low: float, eps_high: float) -> tuple[float, float]:
        return eps_low, self.value
