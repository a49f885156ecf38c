"""ADAPO: DAPO's decoupled clip with ε_high adapted toward the entropy target.

Law (multiplicative integral): ε_high <- clip(ε_high · exp(g · (target - H) / target), ε_min, ε_max).
The step is proportional to the relative error, so it is scale-free in nats, slows down near the target
(no bang-bang oscillation as with a fixed ×1.1 step), moves ε_high on a log scale (ε_high > 0 always) and
accumulates the error (integral action: a persistent deficit keeps widening the clip until it binds).

Authority: widening ε_high can only give back the entropy-raising updates that the high clip removes (A > 0
on unlikely tokens, quadrant E2), so ADAPO raises entropy only as far as the high clip binds. On digit_sum a
sampled unlikely token is rarely correct: 84% of positive-advantage tokens have p >= 0.7, whose ratio cannot
pass 1/p (README, Controllers). On the demo task (2 epochs x 2 minibatches per rollout) GRPO's high clip
binds on ~1% of tokens; ADAPO pins ε_high at ε_max (controller/at_bound ~0.9) and ends at 1.4x GRPO's
entropy (bench/controllers.py; more minibatches or epochs per rollout did not make the clip bind on more
than ~3%). Moving ε_low the other way too was
measured and rejected: with ε_low · ε_high fixed the reward collapsed (every group all-wrong) late in the
run; a fixed ε_low of 0.05 (clip-low raises entropy, Park et al. 2025) gave 1.6x GRPO at 0.89x its reward.
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
    closed_loop = True

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

    def bound_dir(self) -> int:
        # A wider high clip lets more entropy-raising updates through.
        return 1 if self.value >= self.hi else -1 if self.value <= self.lo else 0

    def clip_range(self, eps_low: float, eps_high: float) -> tuple[float, float]:
        return eps_low, self.value
