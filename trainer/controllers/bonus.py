"""Entropy bonus with an auto-tuned coefficient, as SAC tunes its temperature (Haarnoja et al. 2018).

Loss += -α · H (H with gradient, aggregated like the policy loss). log α follows the SAC temperature
gradient, normalised by the target: log α <- log α + g · (target - H) / target, α in [1e-6, α_max].
"""

import math
from typing import Any

import torch

from analysis import schema
from trainer.aggregation import agg_loss
from trainer.controllers.base import Controller, register_controller

COEF_MIN = 1e-6


def bonus_step(coef: float, measured: float, target: float, gain: float, coef_max: float) -> float:
    """The next coefficient α."""
    log_a = math.log(max(coef, COEF_MIN)) + gain * (target - measured) / max(target, 1e-8)
    return min(coef_max, max(COEF_MIN, math.exp(log_a)))


def entropy_bonus_loss(entropy: torch.Tensor, mask: torch.Tensor, coef: float, agg_mode: str) -> torch.Tensor:
    """-α · agg(H) for entropy (B, R) with gradient."""
    return -coef * agg_loss(entropy, mask, agg_mode)


@register_controller("entropy_bonus")
class EntropyBonus(Controller):
    needs_entropy_grad = True

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.gain, self.coef_max = cfg.bonus_gain, cfg.bonus_coef_max
        self.value = cfg.bonus_coef_init

    def update(self, measured: float, target: float, step: int) -> None:
        self.value = bonus_step(self.value, measured, target, self.gain, self.coef_max)
        self.at_bound = self.value >= self.coef_max or self.value <= COEF_MIN

    def retune(self, cfg: Any, changed: set[str]) -> None:
        self.value = min(self.coef_max, self.value)

    def metrics(self, eps_low: float, eps_high: float) -> dict[str, float]:
        return {**super().metrics(eps_low, eps_high), schema.CONTROLLER_COEF: self.value}

    def extra_loss(self, logp, old_logp, adv, mask, entropy, agg_mode):
        return entropy_bonus_loss(entropy, mask, self.value, agg_mode), {}
