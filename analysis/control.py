"""The control-file protocol: the only way back from the dashboard or CLI to a running trainer.

`<store>/<run_id>/control.json` holds the cumulative desired settings and the requests not yet acknowledged:
`{"version": N, "settings": {key: value, ...}, "requests": [{"version", "settings", "written_at"}, ...],
"written_at": unix s}`. `write_control` adds a request under a lock (numbered last seen + 1) and rewrites the file
atomically; `settings` carries every change the trainer applied (from its events) and every request still
pending, so a version the trainer never read is covered by the later one it reads. The trainer polls the file
once per step with a `ControlWatcher`, validates each new request against `ControlSettings` (the live-tunable
keys and their bounds) and the run's config in order, applies those it accepts together from the next step,
and records one `control_applied` event (payload: version, includes: every accepted version it covers, old,
new) plus one `control_rejected` event per refused request (payload: version when readable, reason).
`request_fates` / `wait_for_fate` tell each sender what became of its version: applied, superseded by (and
included in) a later version, or rejected with the reason. Torch-free: used by the trainer, the CLI and the
dashboard.
"""

import fcntl
import hashlib
import json
import os
import time
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

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
ALWAYS_LIVE = ("eps_low", "eps_high", "lr")
"""Keys that act on every run: the clip range and the optimizer's step size."""
SETPOINT_KEYS = ("target_entropy", "schedule", "schedule_amplitude", "schedule_cycles")
CONTROLLER_KEYS: dict[str, tuple[str, ...]] = {
    "repo_r": ("zeta_min", "zeta_max", "control_deadband", "zeta_ki", "zeta_kp"),
    "repo_d": ("zeta_min", "zeta_max", "control_deadband", "zeta_ki", "zeta_kp"),
    "adapo": ("adapo_gain", "eps_high_min", "eps_high_max"),
    "entropy_bonus": ("bonus_gain", "bonus_kp", "bonus_coef_max", "bonus_coef_min", "bonus_token_cap"),
}
"""The gains and bounds each steering controller reads. The others (none, clip_cov, kl_cov, ce_gppo) steer
toward no target, so on them the setpoint keys would only draw a line nothing follows."""


def acting_keys(controller: str) -> tuple[str, ...]:
    """The live keys that change something on a run with this controller."""
    steering = controller in CONTROLLER_KEYS
    return (*(SETPOINT_KEYS if steering else ()), *CONTROLLER_KEYS.get(controller, ()), *ALWAYS_LIVE)


def inert_keys_reason(controller: str, keys: Iterable[str]) -> str | None:
    """Why some of `keys` would act on nothing on a run with `controller`; None when all of them act."""
    acting = acting_keys(controller)
    inert = [k for k in keys if k not in acting]
    if not inert:
        return None
    return (
        f"controller {controller!r} does not use {', '.join(inert)}; keys that act on this run: "
        f"{', '.join(acting)}"
    )


def keys_help() -> str:
    """The live keys by controller, for `entropyscope control --help`."""
    steering = ", ".join(CONTROLLER_KEYS)
    lines = [f"  every run: {', '.join(ALWAYS_LIVE)}", f"  {steering}: {', '.join(SETPOINT_KEYS)}"]
    by_keys: dict[tuple[str, ...], list[str]] = {}
    for name, keys in CONTROLLER_KEYS.items():  # repo_r and repo_d read the same gains: one line
        by_keys.setdefault(keys, []).append(name)
    lines += [f"  {', '.join(names)}: {', '.join(keys)}" for keys, names in by_keys.items()]
    return "\n".join(lines)


class ControlRequest(BaseModel):
    """One sender's request: the keys it set, under its version."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1)
    settings: ControlSettings
    written_at: float | None = None

    def changes(self) -> dict[str, Any]:
        """Only the keys the writer set."""
        return self.settings.model_dump(exclude_unset=True)


class ControlFile(ControlRequest):
    """The whole control.json: the newest version, the cumulative settings, the requests still pending."""

    requests: list[ControlRequest] = []

    @model_validator(mode="after")
    def _ordered(self) -> "ControlFile":
        versions = [r.version for r in self.requests]
        if versions and (versions != sorted(set(versions)) or versions[-1] != self.version):
            raise ValueError(f"requests must be in increasing version order ending at {self.version}")
        return self

    def batch(self, last_version: int) -> "ControlBatch":
        """What a reader that saw `last_version` has to judge. A file written by hand lists no requests: its
        settings are one request under its version."""
        if not self.requests:
            return ControlBatch(self.version, {}, ((self.version, self.changes()),))
        listed = {key for r in self.requests for key in r.changes()}
        carried = {k: v for k, v in self.changes().items() if k not in listed}
        new = tuple((r.version, r.changes()) for r in self.requests if r.version > last_version)
        return ControlBatch(self.version, carried, new)


@dataclass(frozen=True)
class ControlBatch:
    """One read of control.json, for the trainer: `carried` (settings of versions already acknowledged, which a
    run resumed from an earlier checkpoint may not hold yet), then the new `requests` (version, keys), oldest
    first."""

    version: int
    carried: dict[str, Any]
    requests: tuple[tuple[int, dict[str, Any]], ...]


class ControlError(ValueError):
    """A control file or request that cannot be applied; the message is the reason, one line."""

    def __init__(self, reason: str, version: int | None = None) -> None:
        super().__init__(reason)
        self.version = version


def _reason(err: ValidationError) -> str:
    first = err.errors()[0]
    parts = [str(p) for p in first["loc"]]
    if "settings" in parts[:-1]:  # a key of the settings or of one request's settings
        parts = parts[len(parts) - parts[::-1].index("settings") :]
    loc = ".".join(parts) or "control file"
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
    doc, version = _read_current(run_dir)
    return doc.version if doc is not None else version


def _read_current(run_dir: str | Path) -> tuple[ControlFile | None, int]:
    """The current control.json and its version; (None, 0) when absent. One that cannot be read is named in a
    warning and gives (None, the larger of its version, when it has one, and the newest acknowledged)."""
    path, version = control_path(run_dir), 0
    try:
        raw = json.loads(path.read_text())
        version = raw.get("version", 0)
        if not isinstance(version, int) or isinstance(version, bool):
            version, problem = 0, f"its version is {version!r}, not a whole number"
        else:
            return ControlFile(**raw), version
    except FileNotFoundError:
        return None, 0
    except ValidationError as err:
        problem = _reason(err)
    except (OSError, ValueError, AttributeError, TypeError) as err:
        problem = f"{type(err).__name__}: {err}"
    acked = acknowledged_version(run_dir)
    warnings.warn(
        f"skipping unreadable {path} ({problem}); numbering after version {max(version, acked)}",
        RuntimeWarning,
        stacklevel=3,
    )
    return None, max(version, acked)


def acks(store: str | Path, run_id: str) -> list[dict[str, Any]]:
    """The run's control_applied / control_rejected events, oldest first: step, kind, message, payload (dict)."""
    from analysis.store_reader import StoreReader

    reader = StoreReader(store)
    try:
        events = reader.events(run_id, kinds=[APPLIED, REJECTED])
    finally:
        reader.close()
    out = []
    for step, kind, message, text in zip(
        events["step"], events["kind"], events["message"], events["payload"], strict=True
    ):
        try:
            payload = json.loads(text or "{}")
        except ValueError:
            payload = {}
        out.append({"step": int(step), "kind": kind, "message": message,
                    "payload": payload if isinstance(payload, dict) else {}})  # fmt: skip
    return out


def _version(payload: dict[str, Any]) -> int:
    v = payload.get("version")
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def acknowledged_version(run_dir: str | Path) -> int:
    """The newest control version the run's events applied or rejected; 0 when none."""
    run_dir = Path(run_dir)
    return max((_version(a["payload"]) for a in acks(run_dir.parent, run_dir.name)), default=0)


@contextmanager
def _locked(run_dir: Path) -> Iterator[None]:
    """Two senders at once read and rewrite control.json one after the other (a lock on the run directory, so
    no lock file joins the run's files)."""
    fd = os.open(run_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def write_control(
    run_dir: str | Path, settings: dict[str, Any], version: int | None = None, controller: str | None = None
) -> int:
    """Validate `settings` and add them to control.json as a new request (default version: current + 1).

    The file's settings become those the trainer applied, then every request still pending, then these: no
    earlier request is dropped. With `controller`, keys that act on nothing on that run are refused."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ControlError(f"run directory {str(run_dir)!r} does not exist")
    clean = validate_settings(settings)
    if not clean:
        raise ControlError("nothing to set; pass at least one key=value")
    reason = inert_keys_reason(controller, clean) if controller else None
    if reason:
        raise ControlError(reason)
    from analysis.atomic import write_json_atomic  # here: it imports pyarrow, which `--help` need not load

    with _locked(run_dir):
        current, seen = _read_current(run_dir)
        done = acks(run_dir.parent, run_dir.name)
        acked = max((_version(a["payload"]) for a in done), default=0)
        version = version if version is not None else max(seen, acked) + 1
        listed: list[ControlRequest] = []
        if current is not None:  # a file written by hand lists no requests: its settings are one
            one = ControlRequest(
                version=current.version, settings=current.settings, written_at=current.written_at
            )
            listed = current.requests or [one]
        pending = [r for r in listed if r.version > acked]
        request = ControlRequest(version=version, settings=ControlSettings(**clean), written_at=time.time())
        requests = [*pending, request]
        desired: dict[str, Any] = {}
        for a in done:  # what the trainer holds now, then what it has yet to read
            if a["kind"] == APPLIED and isinstance(a["payload"].get("new"), dict):
                desired.update(a["payload"]["new"])
        for r in requests:
            desired.update(r.changes())
        doc = {"version": version, "settings": validate_settings(desired), "written_at": request.written_at,
               "requests": [r.model_dump(exclude_unset=True) for r in requests]}  # fmt: skip
        write_json_atomic(control_path(run_dir), doc)
    return version


class ControlWatcher:
    """Trainer side: `poll()` once per step returns None (no new file content), a ControlBatch to judge, or
    a ControlError to record. Each distinct file content is judged once."""

    def __init__(self, run_dir: str | Path, last_version: int = 0) -> None:
        self.path = control_path(run_dir)
        self.last_version = last_version
        self._digest: str | None = None

    def poll(self) -> ControlBatch | ControlError | None:
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
        batch = doc.batch(self.last_version)
        self.last_version = doc.version
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"last_version": self.last_version, "digest": self._digest}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_version, self._digest = int(state["last_version"]), state.get("digest")


Outcome = Literal["applied", "superseded", "rejected"]


@dataclass(frozen=True)
class Fate:
    """What became of one request: applied under its own version, superseded by a later version that included
    it (and was applied), or rejected; `step` is the step whose end decided it."""

    version: int
    outcome: Outcome
    step: int
    by: int
    detail: str
    """The change the acknowledgement made (`lr 0.001 -> 0.0005`), or the reason for a rejection."""
    old: dict[str, Any] = field(default_factory=dict)
    new: dict[str, Any] = field(default_factory=dict)
    """The values the acknowledgement changed, before and after (empty for a rejection)."""

    def line(self) -> str:
        if self.outcome == "rejected":
            return f"step {self.step}: version {self.version} rejected: {self.detail}"
        how = (
            "applied,"
            if self.outcome == "applied"
            else f"superseded by version {self.by}, which includes it,"
        )
        return f"step {self.step}: version {self.version} {how} in force from step {self.step + 1}: {self.detail}"


def change_text(old: dict[str, Any], new: dict[str, Any]) -> str:
    """`key old -> new` for each key an acknowledgement changed."""
    return ", ".join(f"{k} {old.get(k)!r} -> {v!r}" for k, v in new.items()) or "no change (already in force)"


def request_fates(acknowledgements: Iterable[dict[str, Any]]) -> dict[int, Fate]:
    """version -> Fate, from the run's acknowledgements (`acks`); the first acknowledgement of a version
    decides it (a resumed run that re-applies it later changes nothing its sender was told)."""
    fates: dict[int, Fate] = {}
    for a in acknowledgements:
        p, step = a["payload"], int(a["step"])
        version = _version(p)
        if a["kind"] == REJECTED:
            if version:
                fates.setdefault(
                    version, Fate(version, "rejected", step, version, p.get("reason") or a["message"])
                )
            continue
        old, new = (p.get(k) if isinstance(p.get(k), dict) else {} for k in ("old", "new"))
        detail = change_text(old, new)
        listed = p.get("includes") if isinstance(p.get("includes"), list) else [version]
        included = [v for v in listed if isinstance(v, int) and not isinstance(v, bool) and v > 0]
        for v in included:
            outcome = "applied" if v == version else "superseded"
            fates.setdefault(v, Fate(v, outcome, step, version, detail, old, new))
    return fates


def find_fate(store: str | Path, run_id: str, version: int) -> Fate | None:
    """The fate of `version`, or None while no acknowledgement decided it."""
    return request_fates(acks(store, run_id)).get(version)


def wait_for_fate(
    store: str | Path, run_id: str, version: int, timeout: float, poll_s: float = 0.25
) -> Fate | None:
    """Poll the run's events for the fate of `version` until `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        fate = find_fate(store, run_id, version)
        if fate is not None or time.monotonic() >= deadline:
            return fate
        time.sleep(poll_s)
