"""The Control page's form model, free of Streamlit: which live keys it offers for a controller, how a
value is shown in a text box, which entries the user changed, and how an acknowledgement reads.

Numbers are typed as text (so `1e-4` works and nothing is rounded by a spinner) and sent as typed:
analysis.control.write_control validates and converts them, and its ControlError is the one-line reason
the page shows.
"""

from dataclasses import dataclass
from typing import Any

import pandas as pd

from analysis.control import Fate, request_fates

SCHEDULES = ("constant", "id", "did", "od")


@dataclass(frozen=True)
class Knob:
    key: str  # a live-tunable config key (analysis.control.LIVE_KEYS)
    label: str
    help: str


SETPOINT = (
    Knob("target_entropy", "target entropy (nats)", "Entropy setpoint; empty in the config means H0."),
    Knob(
        "schedule",
        "schedule",
        "id: increase-decrease, did: decrease-increase-decrease, od: oscillatory decay",
    ),
    Knob("schedule_amplitude", "schedule amplitude", "relative: the target stays in target × [1-a, 1+a]"),
    Knob("schedule_cycles", "schedule cycles", "oscillation periods over the run (od)"),
)
CLIPPING = (
    Knob("eps_low", "ε low", "the ratio is clipped at 1 - ε_low"),
    Knob("eps_high", "ε high", "the ratio is clipped at 1 + ε_high"),
    Knob("lr", "learning rate", "AdamW learning rate"),
)
_REPO = (
    Knob("zeta_min", "ζ min", "smallest |ζ| before the sign flips"),
    Knob("zeta_max", "ζ max", "largest |ζ|"),
    Knob("control_deadband", "deadband", "relative band around the target where ζ is held; 0 disables"),
    Knob("zeta_ki", "KI", "integral gain: ladder rungs (doublings of ζ) per step per unit relative error"),
    Knob("zeta_kp", "KP", "proportional gain: rungs of immediate offset per unit relative error"),
)
# The gains and bounds each controller reads; the others have none worth tuning live.
CONTROLLER_KNOBS: dict[str, tuple[Knob, ...]] = {
    "repo_r": _REPO,
    "repo_d": _REPO,
    "adapo": (
        Knob("adapo_gain", "gain", "ε_high ← ε_high · exp(gain · (target − H) / target) per step"),
        Knob("eps_high_min", "ε high min", "lower bound of the adapted ε_high"),
        Knob("eps_high_max", "ε high max", "upper bound of the adapted ε_high"),
    ),
    "entropy_bonus": (
        Knob("bonus_gain", "gain", "integral I ← I + gain · α max · (target − H) / target per step"),
        Knob("bonus_kp", "KP", "α = I + KP · α max · (target − H) / target, within [α min, α max]"),
        Knob("bonus_coef_max", "α max", "upper bound of the bonus coefficient"),
        Knob("bonus_coef_min", "α min", "lower bound of α; below 0 a penalty while entropy is above target"),
        Knob("bonus_token_cap", "token cap", "only tokens below this entropy (nats) earn the bonus"),
    ),
}


def shown(value: Any) -> str:
    """A setting as its text box shows it: empty for None (a default the trainer resolves itself)."""
    if value is None:
        return ""
    return f"{value:g}" if isinstance(value, float) else str(value)


def _same(text: str, current: Any) -> bool:
    if current is None:
        return False
    try:
        return float(text) == float(current)
    except (TypeError, ValueError):
        return text == str(current)


def changed(entries: dict[str, str | None], current: dict[str, Any]) -> dict[str, str]:
    """The entries to send: non-empty and different from the setting in force (`1e-3` equals 0.001)."""
    out = {}
    for key, entry in entries.items():
        text = (entry or "").strip()
        if text and not _same(text, current.get(key)):
            out[key] = text
    return out


def fates(history: pd.DataFrame) -> dict[int, Fate]:
    """version -> what became of it, from the page's control history (analysis.control.request_fates)."""
    acks = [
        {"step": r.step, "kind": r.kind, "message": r.message,
         "payload": {"version": r.version, "includes": r.includes or [r.version], "old": r.old, "new": r.new,
                     "reason": r.reason}}
        for r in history.itertuples()
    ]  # fmt: skip
    return request_fates(acks)


def requests(request: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The requests control.json lists (version, settings, written_at); one written by hand is its own."""
    if request is None:
        return []
    listed = request.get("requests") if isinstance(request.get("requests"), list) else [request]
    return [r for r in listed if isinstance(r, dict) and isinstance(r.get("version"), int)]


def sent_text(request: dict[str, Any]) -> str:
    """`key=value, ...` of one request's own keys."""
    settings = request.get("settings") if isinstance(request.get("settings"), dict) else {}
    return ", ".join(f"{k}={shown(v)}" for k, v in settings.items())


def fate_text(fate: Fate) -> str:
    """What became of a version, as the status box and history say it."""
    if fate.outcome == "rejected":
        return fate.detail
    return change_text(fate.old, fate.new) or "no change (already in force)"


def change_text(old: dict[str, Any], new: dict[str, Any]) -> str:
    """`key old → new` for each key of an applied change."""
    return ", ".join(
        f"{key} {shown(old.get(key)) or 'default'} → {shown(value) or 'default'}"
        for key, value in new.items()
    )


def last_acknowledged(history: pd.DataFrame) -> int:
    """Newest version the trainer acknowledged (0 for none): the form is rebuilt when it changes."""
    versions = history["version"].dropna()
    return int(versions.max()) if len(versions) else 0
