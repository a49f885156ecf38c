"""The controller interface, its registry and the factory that builds one from the config.

A controller observes one step's measured entropy and the step's target and sets its parameter `.value`
(ζ, ε_high or a coefficient); the update and the loss only read that value through the hooks below,
whose defaults change nothing. State is `state_dict()` / `load_state_dict()`, saved in checkpoints.
"""

from collections.abc import Callable
from typing import Any, ClassVar

import torch

from analysis import schema
from analysis.errors import UsageError

CONTROLLERS: dict[str, Callable[[Any], "Controller"]] = {}


def register_controller(name: str) -> Callable:
    """Decorator: register a controller class (built as cls(cfg)) under `name`."""

    def deco(cls: Callable) -> Callable:
        CONTROLLERS[name] = cls
        return cls

    return deco


class Controller:
    """`none`: plain policy gradient. Subclasses override `update` and the hooks they need."""

    needs_entropy_grad: ClassVar[bool] = False
    # Steers the entropy toward entropy/target: the off_target alert judges only these.
    closed_loop: ClassVar[bool] = False

    def __init__(self, cfg: Any = None) -> None:
        self.value = 0.0
        self.at_bound = False

    def update(self, measured: float, target: float, step: int) -> None:
        """Observe a step's mean entropy and target; set `.value` for the next step."""

    def retune(self, cfg: Any, changed: set[str]) -> None:
        """After live config `changed` keys (state already loaded): bring `.value` inside the new bounds."""

    def state_dict(self) -> dict[str, Any]:
        return {"value": float(self.value), "at_bound": bool(self.at_bound)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value, self.at_bound = float(state["value"]), bool(state["at_bound"])

    def bound_dir(self) -> int:
        """+1 at the bound that raises entropy hardest, -1 at the one that lowers it hardest (or, for a
        one-sided controller, does least to raise it), 0 in between: what the runaway alert reads."""
        return 0

    def metrics(self, eps_low: float, eps_high: float) -> dict[str, float]:
        """The controller/* step metrics."""
        lo, hi = self.clip_range(eps_low, eps_high)
        return {
            schema.CONTROLLER_ZETA: 0.0,
            schema.CONTROLLER_EPS_LOW: lo,
            schema.CONTROLLER_EPS_HIGH: hi,
            schema.CONTROLLER_COEF: 0.0,
            schema.CONTROLLER_AT_BOUND: float(self.at_bound),
            schema.CONTROLLER_BOUND_DIR: float(self.bound_dir()),
            schema.CONTROLLER_CLOSED_LOOP: float(self.closed_loop),
        }

    # Hooks read by the update; the defaults leave plain policy gradient unchanged.
    def clip_range(self, eps_low: float, eps_high: float) -> tuple[float, float]:
        return eps_low, eps_high

    def advantages(
        self, adv: torch.Tensor, old_logp: torch.Tensor, entropy: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Per-token advantages (B, R) for the objective, from those (B, R) of the estimator."""
        return adv

    def objective_kwargs(
        self,
        logp: torch.Tensor,
        old_logp: torch.Tensor,
        adv: torch.Tensor,
        mask: torch.Tensor,
        generator: torch.Generator | None,
    ) -> dict[str, Any]:
        """Extra keyword arguments for the clipped surrogate of one minibatch."""
        return {}

    def extra_loss(
        self,
        logp: torch.Tensor,
        old_logp: torch.Tensor,
        adv: torch.Tensor,
        mask: torch.Tensor,
        entropy: torch.Tensor | None,
        agg_mode: str,
    ) -> tuple[torch.Tensor | None, dict[str, float]]:
        """A term added to the minibatch loss, or None."""
        return None, {}


register_controller("none")(Controller)


def build_controller(cfg: Any) -> Controller:
    """The controller named by `cfg.controller`, parameterised by the config's knobs."""
    if cfg.controller not in CONTROLLERS:
        raise UsageError(f"unknown controller {cfg.controller!r}; valid: {', '.join(sorted(CONTROLLERS))}")
    return CONTROLLERS[cfg.controller](cfg)
