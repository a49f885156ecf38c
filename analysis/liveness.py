"""Is a run alive? Status plus heartbeat age, read one way by the CLI, the dashboard and `control`."""

import math
import os
import socket
from typing import Any

STALE_HEARTBEAT_S = 120.0
"""A run marked running whose heartbeat is older than this was probably killed without closing."""


def format_age(seconds: Any) -> str:
    """A duration in the largest fitting unit: '42 s', '3.5 m', '1.2 h', '5.8 d'; '–' when unknown."""
    try:
        s = float(seconds)  # numpy and pandas scalars too
    except (TypeError, ValueError):
        return "–"
    if math.isnan(s):
        return "–"
    s = max(s, 0.0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s / size:.1f} {unit}"
    return f"{s:.0f} s"


def heartbeat_age(info: dict[str, Any], now: float) -> float | None:
    """Seconds since run.json's heartbeat, None when it has none."""
    try:
        beat = float(info.get("heartbeat"))  # numpy and pandas scalars too
    except (TypeError, ValueError):
        return None
    return None if math.isnan(beat) else now - beat


def writer_gone(info: dict[str, Any]) -> bool:
    """run.json says running, but the process it names on this host is gone: the trainer was killed."""
    pid = info.get("pid")
    if info.get("status") != "running" or info.get("host") != socket.gethostname() or type(pid) is not int:
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except OSError:
        return False  # it exists, under another user
    return False


def status_label(status: object, heartbeat: Any, now: float) -> str:
    """run.json's status, flagged when a run marked running has gone silent."""
    status = str(status) if isinstance(status, str) and status else "unknown"
    age = heartbeat_age({"heartbeat": heartbeat}, now)
    if status == "running" and age is not None and age > STALE_HEARTBEAT_S:
        return f"running? (silent {format_age(age)})"
    return status


def heartbeat_text(status: object, heartbeat: Any, now: float) -> str:
    """The heartbeat's age for a running run ('3 s'); '–' for one that ended, where it means nothing."""
    age = heartbeat_age({"heartbeat": heartbeat}, now)
    return format_age(age) if status == "running" and age is not None else "–"


def control_refusal(run_id: str, info: dict[str, Any], now: float) -> str | None:
    """Why a control change sent to this run would never be read (None: its trainer is live)."""
    source = info.get("source")
    if isinstance(source, dict) and not source.get("live"):  # `entropyscope import`: no trainer reads ours
        return (
            f"run {run_id!r} is imported from {source.get('kind')} logs: no trainer reads its control.json, "
            "so nothing was written; steer it in the trainer that writes those logs"
        )
    status = "killed" if writer_gone(info) else info.get("status")
    if status != "running":
        return (
            f"run {run_id!r} is {status or 'of unknown status'}: only a running trainer reads control.json, "
            f"so nothing was written; resume it with `entropyscope train --run-id {run_id} --resume` first"
        )
    age = heartbeat_age(info, now)
    if age is None or age > STALE_HEARTBEAT_S:
        return (
            f"run {run_id!r} is marked running but its last heartbeat was {format_age(age)} ago (over "
            f"{STALE_HEARTBEAT_S:.0f} s: its trainer was probably killed), so nothing was written; resume it "
            f"with `entropyscope train --run-id {run_id} --resume` first"
        )
    return None
