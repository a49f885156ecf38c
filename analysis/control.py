"""The control-file protocol: the only way back from the dashboard or CLI to a running trainer.

`<store>/<run_id>/control.json` holds `{"version": N, "settings": {key: value, ...}, "written_at": unix s}`,
written atomically (`write_control`, which picks version = last seen + 1). The trainer polls it once per step
with a `ControlWatcher`, validates it against `ControlSettings` (the live-tunable keys and their bounds),
applies it from the next step and records a `control_applied` event (payload: version, old, new) or a
`control_rejected` event (payload: version when readable, reason). `find_ack` / `wait_for_ack` look the
acknowledgement up in the run's events. Torch-free: used by the trainer, the CLI and the dashboard.
"""

import hashlib
import json
import time
import warnings
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from analysis.atomic import write_json_atomic

CONTROL_FILE = "control.json"
APPLIED, REJECTED = "control_applied", "control_rejected"


class ControlSettings(BaseModel):
    """Live-tunable config keys (same names and meaning as the trainer config), with safety bounds."""

    model_config = ConfigDict(extra="forbid", strict=False)

    target_entropy: float | None = Field(default=None, ge=0, le=20)
    schedule: Literal["constant", "id", "did", "od"] | None = None
    schedule_amplitude: float | None = Field(default=None, ge=0, le=1)
    schedule_cycles: int | None = Field(default=None, ge=1, le=100)
    zeta_min: float | None = Field(default=None, gt=0, le=100)
    zeta_max: float | None = Field(default=None, gt=0, le=100)
    control_deadband: float | None = Field(default=None, ge=0, lt=1)
    zeta_ki: float | None = Field(default=None, gt=0, le=100)
    zeta_kp: float | None = Field(default=None, ge=0, le=100)
    adapo_gain: float | None = Field(default=None, gt=0, le=10)
    eps_high_min: float | None = Field(default=None, gt=0, le=10)
    eps_high_max: float | None = Field(default=None, gt=0, le=10)
    bonus_gain: float | None = Field(default=None, gt=0, le=10)
    bonus_kp: float | None = Field(default=None, ge=0, le=10)
    bonus_coef_max: float | None = Field(default=None, gt=0, le=100)
    bonus_coef_min: float | None = Field(default=None, ge=-100, le=0)
    bonus_token_cap: float | None = Field(default=None, gt=0, le=100)
    eps_low: float | None = Field(default=None, gt=0, lt=1)
    eps_high: float | None = Field(default=None, gt=0, le=10)
    lr: float | None = Field(default=None, ge=0, le=1)


LIVE_KEYS = tuple(ControlSettings.model_fields)


class ControlFile(BaseModel):
    """The whole control.json."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1)
    settings: ControlSettings
    written_at: float | None = None

    def changes(self) -> dict[str, Any]:
        """Only the keys the writer set."""
        return self.settings.model_dump(exclude_unset=True)


class ControlError(ValueError):
    """A control file or request that cannot be applied; the message is the reason, one line."""

    def __init__(self, reason: str, version: int | None = None) -> None:
        super().__init__(reason)
        self.version = version


def _reason(err: ValidationError) -> str:
    first = err.errors()[0]
    parts = [str(p) for p in first["loc"]]
    loc = ".".join(parts[1:] if parts[:1] == ["settings"] and len(parts) > 1 else parts) or "control file"
    if first["type"] == "extra_forbidden":  # repr: a key with a newline in it must not break the line
        return f"unknown key {loc!r}; live-tunable keys: {', '.join(LIVE_KEYS)}"
    return f"key {loc!r}: {first['msg'].lower()} (got {first.get('input')!r})"


def validate_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The validated subset of live keys; ControlError with the reason otherwise."""
    try:
        return ControlSettings(**settings).model_dump(exclude_unset=True)
    except ValidationError as e:
        raise ControlError(_reason(e)) from None
    except TypeError as e:
        raise ControlError(f"settings must be a mapping of key: value ({e})") from None


def parse_control(text: str, last_version: int = 0) -> ControlFile:
    """Parse and validate control.json text; ControlError (bad JSON, unknown key, wrong type, out of bounds,
    stale version) otherwise. `last_version` is the newest version the reader has already seen."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise ControlError(f"bad JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    version = raw.get("version") if isinstance(raw, dict) else None
    version = version if isinstance(version, int) and not isinstance(version, bool) else None
    if not isinstance(raw, dict):
        raise ControlError("control file must be a JSON object with 'version' and 'settings'")
    try:
        doc = ControlFile(**raw)
    except ValidationError as e:
        raise ControlError(_reason(e), version) from None
    if doc.version <= last_version:
        raise ControlError(
            f"stale version {doc.version}: version {last_version} was already seen", doc.version
        )
    return doc


def control_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / CONTROL_FILE


def read_version(run_dir: str | Path) -> int:
    """The version in the current control.json, 0 when absent. When it cannot be read (hand-edited garbage),
    a warning names it and the newest version the trainer acknowledged stands in, so the next version numbered
    from this one is not refused as stale."""
    path = control_path(run_dir)
    try:
        v = json.loads(path.read_text()).get("version", 0)
        if isinstance(v, int) and not isinstance(v, bool):
            return v
        problem = f"its version is {v!r}, not a whole number"
    except FileNotFoundError:
        return 0
    except (OSError, ValueError, AttributeError) as err:
        problem = f"{type(err).__name__}: {err}"
    acked = acknowledged_version(run_dir)
    message = f"skipping unreadable {path} ({problem}); numbering after version {acked}"
    warnings.warn(message, RuntimeWarning, stacklevel=2)
    return acked


def acknowledged_version(run_dir: str | Path) -> int:
    """The newest control version the run's events applied or rejected; 0 when none."""
    from analysis.store_reader import StoreReader

    run_dir = Path(run_dir)
    reader = StoreReader(run_dir.parent)
    try:
        events = reader.events(run_dir.name, kinds=[APPLIED, REJECTED])
    finally:
        reader.close()
    return max(map(_payload_version, events["payload"]), default=0)


def _payload_version(payload: str | None) -> int:
    try:
        v = json.loads(payload or "{}").get("version")
    except (ValueError, AttributeError):
        return 0
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def write_control(run_dir: str | Path, settings: dict[str, Any], version: int | None = None) -> int:
    """Validate `settings` and write control.json atomically with `version` (default: current + 1)."""
    if not Path(run_dir).is_dir():
        raise ControlError(f"run directory {str(run_dir)!r} does not exist")
    clean = validate_settings(settings)
    if not clean:
        raise ControlError("nothing to set; pass at least one key=value")
    version = version if version is not None else read_version(run_dir) + 1
    write_json_atomic(
        control_path(run_dir), {"version": version, "settings": clean, "written_at": time.time()}
    )
    return version


class ControlWatcher:
    """Trainer side: `poll()` once per step returns None (no new file content), a ControlFile to apply, or
    a ControlError to record. Each distinct file content is judged once."""

    def __init__(self, run_dir: str | Path, last_version: int = 0) -> None:
        self.path = control_path(run_dir)
        self.last_version = last_version
        self._digest: str | None = None

    def poll(self) -> ControlFile | ControlError | None:
        try:
            data = self.path.read_bytes()
        except OSError:
            return None
        digest = hashlib.sha256(data).hexdigest()
        if digest == self._digest:
            return None
        self._digest = digest
        try:
            doc = parse_control(data.decode("utf-8", errors="replace"), self.last_version)
        except ControlError as e:
            return e
        self.last_version = doc.version
        return doc

    def state_dict(self) -> dict[str, Any]:
        return {"last_version": self.last_version, "digest": self._digest}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_version, self._digest = int(state["last_version"]), state.get("digest")


def find_ack(store: str | Path, run_id: str, version: int) -> dict[str, Any] | None:
    """The control_applied / control_rejected event acknowledging `version`, as a dict, or None."""
    from analysis.store_reader import StoreReader

    reader = StoreReader(store)
    try:
        events = reader.events(run_id, kinds=[APPLIED, REJECTED])
    finally:
        reader.close()
    for row in events.to_dict("records"):
        payload = json.loads(row["payload"]) if row.get("payload") else {}
        if payload.get("version") == version:
            return {**row, "payload": payload}
    return None


def wait_for_ack(
    store: str | Path, run_id: str, version: int, timeout: float, poll_s: float = 0.25
) -> dict | None:
    """Poll the run's events for the acknowledgement of `version` until `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        ack = find_ack(store, run_id, version)
        if ack is not None or time.monotonic() >= deadline:
            return ack
        time.sleep(poll_s)
