"""Entropy controllers: one small object per family, built by `build_controller(cfg)`."""

from trainer.controllers import adapo, bonus, cov, gppo, repo  # noqa: F401  (registration)
from trainer.controllers.base import CONTROLLERS, Controller, build_controller, register_controller

__all__ = ["CONTROLLERS", "Controller", "build_controller", "register_controller"]
