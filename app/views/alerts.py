"""Alerts: every alert episode of every run, from the alert_fired / alert_resolved events in the store.

Active alerts first (fired, not yet resolved), then resolved ones; filter by run and severity (both in the
URL: `?runs=a&severity=critical`). Each episode says the step its condition first held and the step it fired.
Events are recorded by a trainer with alerts on and by `entropyscope watch`; "Evaluate rules now" runs one
watch cycle over the store with the default rules (as `entropyscope watch --once`) and records what it finds,
e.g. for imported runs or runs trained with alerts off, which it reads over every step.
"""

import time

import pandas as pd
import streamlit as st
from pandas.io.formats.style import Styler

from analysis.liveness import format_age
from analysis.schema import SEVERITIES
from analysis.watch import watch
from app import charts, loaders, ui

COLUMNS = {
    "run_id": st.column_config.TextColumn("run"),
    "rule": "rule",
    "severity": "severity",
    "held_from_step": st.column_config.NumberColumn(
        "from step",
        help="first step the rule's condition held (it fires once it has held for the rule's `for`)",
    ),
    "fired_step": st.column_config.NumberColumn("fired at step"),
    "resolved_step": st.column_config.NumberColumn("resolved at step"),
    "age": st.column_config.TextColumn("when", help="time since it fired (active) or resolved"),
    "message": st.column_config.TextColumn("latest reading", width="large"),
}
SEVERITY_ORDER = {s: i for i, s in enumerate(reversed(SEVERITIES))}  # critical first


def display_frame(episodes: pd.DataFrame, now: float) -> pd.DataFrame:
    """Episodes as shown: most severe first, with the time since the last transition."""
    df = episodes.assign(
        age=[format_age(now - t) + " ago" for t in episodes["resolved_at"].fillna(episodes["fired_at"])],
        _rank=episodes["severity"].map(SEVERITY_ORDER),
    )
    return df.sort_values("_rank", kind="stable")[list(COLUMNS)]


def colored(df: pd.DataFrame) -> Styler:
    """Each run's name in its colour, the one its lines have on Compare and Run detail."""
    return df.style.map(
        lambda run_id: f"color: {charts.run_color(run_id)}; font-weight: 600", subset=["run_id"]
    )


def evaluate_button(store: str) -> None:
    """Run one watch cycle on click; its output lines stay in the session until the next click."""
    if st.button("Evaluate rules now", help="One `entropyscope watch --once` cycle over every run with the "
                 "default rules; new transitions are recorded as events in the store"):  # fmt: skip
        lines: list[str] = []
        with st.spinner("Evaluating alert rules…"):
            try:
                watch(store, once=True, out=lines.append)
            except loaders.DATA_ERRORS as err:
                st.warning(f"Rules not evaluated: {type(err).__name__}: {err}")
                return
        st.session_state["alerts_evaluated"] = lines


def tables(store: str, run_ids: list[str], severities: list[str]) -> None:
    with ui.unavailable("Alerts"):
        episodes = loaders.alert_episodes(store, loaders.version(store, None, ["events"]))
        if run_ids:
            episodes = episodes[episodes["run_id"].isin(run_ids)]
        if severities:
            episodes = episodes[episodes["severity"].isin(severities)]
        if episodes.empty:
            st.info("No alert events recorded for these runs. A trainer records them while its `alerts` setting "
                    "is on; `entropyscope watch` (or the button above) records them for any run.")  # fmt: skip
            return
        active = episodes[episodes["state"] == "active"]
        resolved = episodes[episodes["state"] == "resolved"]
        cols = st.columns(3)
        for col, severity in zip(cols[:2], ("critical", "warning"), strict=True):
            col.metric(f"active {severity}", int((active["severity"] == severity).sum()))
        cols[2].metric("resolved", len(resolved))
        now = time.time()
        st.subheader("Active")
        if active.empty:
            st.caption("No alert firing.")
        else:
            shown = display_frame(active, now).drop(columns=["resolved_step"])
            st.dataframe(colored(shown), hide_index=True, column_config=COLUMNS, key="alerts-active")
        st.subheader("Resolved")
        if resolved.empty:
            st.caption("No alert resolved yet.")
        else:
            st.dataframe(colored(display_frame(resolved, now)), hide_index=True, column_config=COLUMNS,
                         key="alerts-resolved")  # fmt: skip


def main() -> None:
    st.title("Alerts")
    store = ui.store()
    runs = ui.load_runs(store)
    if runs is None:
        return
    ui.refuse_unknown_url_runs("runs", runs["run_id"].tolist())
    c1, c2, c3 = st.columns([3, 2, 2], vertical_alignment="bottom")
    run_ids = c1.multiselect(
        "Runs", runs["run_id"].tolist(), key="runs", bind="query-params", placeholder="all"
    )
    severities = c2.multiselect(
        "Severity", SEVERITIES, key="severity", bind="query-params", placeholder="all"
    )
    with c3:
        evaluate_button(store)
    lines = st.session_state.get("alerts_evaluated")
    if lines:  # watch's output: one line per new transition, then a summary line
        with st.expander(f"Last evaluation: {len(lines) - 1} new transitions"):
            st.code("\n".join(lines), language=None)
    live = bool((runs["status"] == "running").any())
    st.fragment(
        lambda: tables(store, run_ids, severities), run_every=ui.LIVE_REFRESH_S if live else ui.IDLE_REFRESH_S
    )()


main()
