"""CE-GPPO (Su et al. 2025): gradient-preserving clipping.

Where PPO's clip is active (A > 0 and r > 1 + ε_high, or A < 0 and r < 1 - ε_low) the token keeps a
bounded gradient β2·(1 + ε_high)·A·∇log π (high side) or β1·(1 - ε_low)·A·∇log π (low side) instead of
none; the surrogate itself is in objectives.clipped_surrogate (gp_beta_low, gp_beta_high).
"""

from typing import Any

from trainer.controllers.base import Controller, register_controller


@register_controller("ce_gppo")
class CeGppo(Controller):
    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.beta_low, self.beta_high = cfg.gppo_beta_low, cfg.gppo_beta_high

    def objective_kwargs(self, logp, old_logp, adv, mask, generator):
        return {"gp_beta_low": self.beta_low, "gp_beta_high": self.beta_high}
