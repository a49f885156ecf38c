"""Control: tune a running trainer's entropy controller live (`?run=ID`; running runs are listed first).

Shows the controller's latest state (entropy, target, ζ, ε_high, bonus coefficient, pinned at a bound?),
target vs measured entropy, and every version sent: applied, superseded by (and included in) a later one,
rejected, or pending. Apply adds a request of only the keys the user changed to the run's control.json
(analysis.control.write_control, next version; earlier pending requests stay in it); the trainer reads it at
its next step. The status beside the form follows it from pending to applied (with the values now in force)
or rejected (with the trainer's reason), refreshed by a fragment so the form stays usable. Only the keys
that act under the run's controller are offered.
Finished and failed runs are shown read-only.
"""

import time
from pathlib import Path

import pandas as pd
import streamlit as st

from analysis.control import APPLIED, ControlError, acting_keys, write_control
from analysis.dashboard_queries import settings_in_force
from analysis.liveness import format_age
from analysis.schema import (
    CONTROLLER_AT_BOUND,
    CONTROLLER_COEF,
    CONTROLLER_EPS_HIGH,
    CONTROLLER_ZETA,
    ENTROPY_MEAN,
    ENTROPY_TARGET,
)
from app import charts, controls, loaders, ui

MAX_POINTS = 500
STATE = (  # metric key, label, number format
    (ENTROPY_MEAN, "entropy", "{:.3f}"),
    (ENTROPY_TARGET, "target", "{:.3f}"),
    (CONTROLLER_AT_BOUND, "at a bound", ""),
    (CONTROLLER_ZETA, "ζ", "{:.3g}"),
    (CONTROLLER_EPS_HIGH, "ε high", "{:.3g}"),
    (CONTROLLER_COEF, "bonus coef", "{:.3g}"),
)


def running_first(runs: pd.DataFrame) -> pd.DataFrame:
    return runs.sort_values("status", key=lambda s: s.ne("running"), kind="stable")


def state_metrics(latest: dict[str, tuple[int, float]]) -> None:
    cols = st.columns(3)
    for i, (key, label, fmt) in enumerate(STATE):
        if key not in latest:
            cols[i % 3].metric(label, "–", help=f"{key}: not logged by this run")
            continue
        step, value = latest[key]
        text = ("yes" if value > 0 else "no") if key == CONTROLLER_AT_BOUND else fmt.format(value)
        cols[i % 3].metric(label, text, help=f"{key} at step {step}")


def status_box(request: dict | None, history: pd.DataFrame, running: bool) -> None:
    """Where the newest control.json version stands: pending, applied (values in force), superseded by a later
    version that includes it, or rejected (reason)."""
    if request is None:
        st.caption("No control change sent to this run yet.")
        return
    version = request["version"]
    fate = controls.fates(history).get(version)
    if fate is not None and fate.outcome == "rejected":
        st.error(f"Version {version} rejected at step {fate.step}: {fate.detail}")
    elif fate is not None:
        how = "acknowledged" if fate.outcome == "applied" else f"included in version {fate.by}, acknowledged"
        st.success(f"Version {version} {how} at step {fate.step}: {controls.fate_text(fate)} "
                   f"(from step {fate.step + 1})")  # fmt: skip
    else:
        mine = next((r for r in controls.requests(request) if r["version"] == version), request)
        written = request.get("written_at")
        age = format_age(time.time() - written) if isinstance(written, int | float) else "–"
        sent = controls.sent_text(mine)
        if running:
            st.info(
                f"Version {version} pending ({sent}): written {age} ago, waiting for the trainer's next step."
            )
        else:
            st.warning(f"Version {version} ({sent}) was never acknowledged: the run is not running.")


RESULTS = {"applied": "applied", "superseded": "superseded: included in v{by}", "rejected": "rejected"}
HISTORY_COLUMNS = ["version", "result", "step", "when", "change"]


def history_table(history: pd.DataFrame, request: dict | None, now: float) -> pd.DataFrame:
    """Every version sent, newest first: version, result (applied, superseded: included in vN, rejected,
    pending), step, age, and the change or the reason; a file the trainer could not read has no version."""
    when = dict(zip(history["step"], history["wall_time"], strict=False))
    rows = [
        {"version": v, "result": RESULTS[f.outcome].format(by=f.by), "step": f.step,
         "when": f"{format_age(now - when.get(f.step, now))} ago", "change": controls.fate_text(f)}
        for v, f in controls.fates(history).items()
    ]  # fmt: skip
    rows += [
        {"version": None, "result": "rejected", "step": r.step, "when": f"{format_age(now - r.wall_time)} ago",
         "change": r.reason or r.message}
        for r in history.itertuples() if r.version is None and r.kind != APPLIED
    ]  # fmt: skip
    decided = {row["version"] for row in rows}
    rows += [
        {"version": r["version"], "result": "pending", "step": None, "when": "–", "change": controls.sent_text(r)}
        for r in controls.requests(request) if r["version"] not in decided
    ]  # fmt: skip
    rows.sort(key=lambda r: (r["step"] is None, r["step"] or 0, r["version"] or 0), reverse=True)
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS)


def live_panel(store: str, run_id: str, controller: str, running: bool, generation: int) -> None:
    """Status of the latest request, controller state, target vs measured entropy, control history."""
    with ui.unavailable(f"Run {run_id}"):
        info = loaders.run_info(store, run_id, loaders.version(store, [run_id], []))
        if running and info.get("status") != "running":
            st.rerun(scope="app")  # it just ended: redraw read-only, without the timer
        history = loaders.control_history(store, run_id, loaders.version(store, [run_id], ["events"]))
        if controls.last_acknowledged(history) != generation:
            st.rerun(scope="app")  # a new acknowledgement: rebuild the form on the settings now in force
        request = loaders.control_request(store, run_id)
        status_box(request, history, running)
        version = loaders.version(store, [run_id], ["steps"])
        state_metrics(loaders.latest_values(store, run_id, tuple(k for k, _, _ in STATE), version))
        keys = (ENTROPY_MEAN, *charts.CONTROLLER_KEYS)
        w = charts.wide(loaders.scalars(store, (run_id,), keys, MAX_POINTS, version))
        ui.show_figure(
            charts.control_figure(w, controller, charts.run_color(run_id)),
            "control-chart",
            "No entropy logged yet.",
        )
        st.markdown("**Control history**")
        table = history_table(history, request, time.time())
        if table.empty:
            st.caption("No control change sent to this run yet.")
        else:
            st.dataframe(table, hide_index=True, key="control-history")


def settings_form(
    store: str, run_id: str, controller: str, current: dict, running: bool, generation: int
) -> None:
    """Text boxes prefilled with the settings in force; Apply sends only the changed ones."""
    acting = acting_keys(controller)  # keys that act on nothing under this controller are not offered
    groups = (("Setpoint", tuple(k for k in controls.SETPOINT if k.key in acting)),
              (f"Controller `{controller}`", controls.CONTROLLER_KNOBS.get(controller, ())),
              ("Clipping and step size", controls.CLIPPING))  # fmt: skip
    entries: dict[str, str | None] = {}
    # Keyed by the last acknowledged version: after a change is applied the boxes start from the new values.
    with st.form(f"control-{run_id}-{generation}"):
        for title, knobs in groups:
            st.markdown(f"**{title}**")
            if not knobs:
                st.caption("No live gains for this controller." if title != "Setpoint" else
                           f"Controller `{controller}` steers toward no entropy target.")  # fmt: skip
                continue
            cols = st.columns(2)
            for i, knob in enumerate(knobs):
                widget_key = f"ctl-{run_id}-{generation}-{knob.key}"
                value = current.get(knob.key)
                if knob.key == "schedule":
                    index = controls.SCHEDULES.index(value) if value in controls.SCHEDULES else None
                    entries[knob.key] = cols[i % 2].selectbox(knob.label, controls.SCHEDULES, index=index,
                                                              key=widget_key, help=knob.help, disabled=not running)  # fmt: skip
                else:
                    entries[knob.key] = cols[i % 2].text_input(knob.label, controls.shown(value), key=widget_key,
                                                               help=knob.help, placeholder="default",
                                                               disabled=not running)  # fmt: skip
        submitted = st.form_submit_button("Apply", type="primary", disabled=not running)
    if submitted:
        apply(store, run_id, controls.changed(entries, current), controller)


def apply(store: str, run_id: str, changes: dict[str, str], controller: str) -> None:
    if not changes:
        st.info("Nothing changed: edit a value, then Apply.")
        return
    try:
        version = write_control(Path(store) / run_id, changes, controller=controller)
    except ControlError as err:  # a bad value: the reason in one line, nothing written
        st.error(f"Not sent: {err}")
        return
    except OSError as err:  # a full or read-only store
        st.error(f"Not sent: cannot write {err.filename or 'control.json'} ({err.strerror or err})")
        return
    st.toast(f"Sent version {version}: {', '.join(f'{k}={v}' for k, v in changes.items())}")


def main() -> None:
    st.title("Control")
    store = ui.store()
    runs = ui.load_runs(store)
    if runs is None:
        return
    run_id = ui.run_picker(running_first(runs), "Run (running runs first)")
    status = runs.set_index("run_id").loc[run_id, "status"]
    running = status == "running"
    with ui.unavailable(f"Run {run_id}"):
        info = loaders.run_info(store, run_id, loaders.version(store, [run_id], []))
        config = info.get("config") if isinstance(info.get("config"), dict) else {}
        controller = str(config.get("controller") or "none")
        history = loaders.control_history(store, run_id, loaders.version(store, [run_id], ["events"]))
        generation = controls.last_acknowledged(history)
        if not running:
            st.info(
                f"Run {run_id} is {status}: only running runs can be tuned. Its last state is shown read-only."
            )
        left, right = st.columns([2, 3], gap="large")
        with left:  # first: a submitted change is written before the status panel reads control.json
            settings_form(store, run_id, controller, settings_in_force(config, history), running, generation)
        with right:
            ui.live_fragment(lambda: live_panel(store, run_id, controller, running, generation), running)


main()
