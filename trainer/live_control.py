"""Live control of a running trainer: judge what its ControlWatcher read from control.json, apply the accepted
requests to the config, controller and optimizer from the next step, and record each fate as an event.

Shared by our loop (trainer/loop.py) and the integrations' Session: `p` is any run holding `cfg`, `controller`,
`optimizer` and `overrides` (and `ranks` when data-parallel).
"""

from typing import Any

from pydantic import ValidationError

from analysis.control import (
    APPLIED,
    LIVE_KEYS,
    REJECTED,
    ControlError,
    ControlWatcher,
    change_text,
    inert_keys_reason,
)
from analysis.store_writer import RunWriter
from trainer.config import TrainConfig
from trainer.controllers import build_controller
from trainer.distributed import SINGLE


def apply_control(p: Any, changes: dict[str, Any], version: int | None = None) -> None:
    """Apply validated live settings to the config, controller and optimizer, from the next step; ControlError
    (the reason) when the combined config is invalid or a key acts on nothing under this run's controller."""
    reason = inert_keys_reason(p.cfg.controller, changes)
    if reason:
        raise ControlError(reason, version)
    try:
        cfg = TrainConfig(**{**p.cfg.model_dump(), **changes})
    except ValidationError as e:
        first = e.errors()[0]
        raise ControlError(f"invalid with the run's config: {first['msg'].lower()}", version) from None
    controller = build_controller(cfg)
    controller.load_state_dict(p.controller.state_dict())
    controller.retune(cfg, set(changes))
    p.cfg, p.controller = cfg, controller
    for group in p.optimizer.param_groups:
        group["lr"] = cfg.lr


def _reject(writer: RunWriter, step: int, err: ControlError) -> None:
    payload = {"version": err.version, "reason": str(err)}
    writer.log_event(step, REJECTED, f"control rejected: {err}", severity="warning", payload=payload)


def poll_control(writer: RunWriter, p: Any, watcher: ControlWatcher, step: int) -> None:
    """Check control.json once: apply each new request in order (after the settings it carries from versions
    already acknowledged), record one control_applied for those accepted (old -> new, every version included)
    and a control_rejected per refused one (the reason). Across ranks, rank 0 reads the file and every rank
    applies what it read, at the same step."""
    ranks = getattr(p, "ranks", SINGLE)
    batch = ranks.share(watcher.poll() if ranks.main else None)
    if batch is None:
        return
    if isinstance(batch, ControlError):
        _reject(writer, step, batch)
        return
    before = p.cfg.model_dump()
    included: list[int] = []
    units = [(None, batch.carried)] if batch.carried else []
    for version, changes in [*units, *batch.requests]:
        try:
            apply_control(p, changes, version)
        except ControlError as e:
            if version is None:  # what the file carries no longer fits this run: say so, judge the rest
                e = ControlError(f"settings carried from acknowledged versions: {e}")
            _reject(writer, step, e)
            continue
        if version is not None:
            included.append(version)
    after = p.cfg.model_dump()
    new = {k: after[k] for k in LIVE_KEYS if after[k] != before[k]}
    old = {k: before[k] for k in new}
    if not included and not new:
        return
    p.overrides.update(new)
    version = included[-1] if included else None
    also = f" (includes {', '.join(f'v{v}' for v in included[:-1])})" if len(included) > 1 else ""
    name = f"control v{version}" if version is not None else "control settings carried by control.json"
    writer.log_event(
        step,
        APPLIED,
        f"{name}{also} applied from step {step + 1}: {change_text(old, new)}",
        payload={"version": version, "includes": included, "old": old, "new": new},
    )
