"""Runs: every run in the store with status, heartbeat, config headline and entropy summary.

Filter by text, config, sweep and group of seeds (`?in_sweep=ID&in_group=NAME`, analysis.groups); group the rows by
sweep or group (`?by=sweep|group`); select rows to compare them or open one in Run detail / Token inspector, or
its sweep in Sweeps.
The table refreshes itself (a fragment), fast while a run is live and slowly otherwise, so new runs
appear without a reload.
"""

import time

import pandas as pd
import streamlit as st

from analysis.liveness import heartbeat_text, status_label
from analysis.runs_table import FINAL_NOTE
from app import nav, ui

FILTERS = ("status", "algo", "controller", "precision", "source", "sweep", "group")
# Widget keys are shared by every page of a session: Sweeps' `sweep` and Compare's `group` are selectboxes.
URL_KEYS = {"sweep": "in_sweep", "group": "in_group"}
GROUP_BY = ("sweep", "group")  # rows of one sweep or group together, its name in a narrow first column
# Widths in pixels add up to what the page holds at 1600 px (with the sidebar open), so no column hides
# behind a horizontal scroll; a longer run id or model path is cut on screen and whole on hover and in CSV.
COLUMNS = {
    "run_id": st.column_config.TextColumn("run", width=215),
    "status_label": st.column_config.TextColumn("status", width=65),
    "heartbeat_age": st.column_config.TextColumn(
        "heartbeat", help="time since the trainer last wrote run.json (running runs only)", width=65
    ),
    "algo": st.column_config.TextColumn("algo", width=45),
    "controller": st.column_config.TextColumn("controller", width=80),
    "precision": st.column_config.TextColumn("precision", width=62),
    "model": st.column_config.TextColumn("model", width=63),
    "task": st.column_config.TextColumn("task", width=60),
    "source": st.column_config.TextColumn(
        "source", help="entropyscope, or the tool an imported run came from (and its trainer)", width=85
    ),
    "last_step": st.column_config.NumberColumn("step", width=45),
    "h0": st.column_config.NumberColumn(
        "H0", format="%.3f", help="entropy at the first step (nats)", width=45
    ),
    "entropy": st.column_config.NumberColumn(
        "final H", format="%.3f", help=f"mean token entropy; {FINAL_NOTE}", width=55
    ),
    "entropy_last": st.column_config.NumberColumn(
        "last H", format="%.3f", help="mean token entropy, last step", width=50
    ),
    "entropy_change_pct": st.column_config.NumberColumn(
        "ΔH vs H0", format="%+.1f%%", help="final H / H0 - 1", width=65
    ),
    "reward": st.column_config.NumberColumn(
        "reward", format="%.3f", help=f"final reward/mean; {FINAL_NOTE}", width=55
    ),
    "active_alerts": st.column_config.NumberColumn(
        "alerts", help="alerts fired and not yet resolved", width=45
    ),
}
ROWS_SHOWN = 20  # the table scrolls past this many rows
ROW_PX, HEADER_PX = 35, 38


def display_frame(runs: pd.DataFrame, now: float, by: str | None = None) -> pd.DataFrame:
    """The runs table as shown: readable status and ages, change vs H0 in percent, and (`by`) the sweep or group
    in a first column."""
    df = runs.copy()
    df["status_label"] = [status_label(s, h, now) for s, h in zip(df["status"], df["heartbeat"], strict=True)]
    df["heartbeat_age"] = [
        heartbeat_text(s, h, now) for s, h in zip(df["status"], df["heartbeat"], strict=True)
    ]
    df["entropy_change_pct"] = df["entropy_change"] * 100
    for col in FILTERS[1:] + ("model", "task"):
        df[col] = df[col].fillna("–").astype(str)
    live = (df["status"] == "running").any()  # the heartbeat says something only for running runs
    if by:
        df["by"] = df[by]
    # Grouped, the group's name takes the source column's room (source stays a filter): no width is left at
    # 1600 px for one more column once a run is live and the heartbeat shows.
    hidden = (set() if live else {"heartbeat_age"}) | ({"source"} if by else set())
    return df[(["by"] if by else []) + [c for c in COLUMNS if c not in hidden]]


def by_column(by: str | None) -> st.column_config.Column:
    help_ = {
        "sweep": "the sweep that made the run",
        "group": "runs that differ only in seed (analysis.groups)",
    }
    return st.column_config.TextColumn(by, help=help_.get(by or ""), width=85)


def filter_widgets(runs: pd.DataFrame) -> tuple[str, dict[str, list[str]], str | None]:
    """Search text, per-column choices and the grouping, all held in the URL so a view can be shared."""
    cols = st.columns([2] + [1] * len(FILTERS) + [1])
    text = cols[0].text_input("Search run id", key="q", bind="query-params", placeholder="substring")
    by = cols[-1].selectbox("group by", ("none", *GROUP_BY), key="by", bind="query-params")
    chosen = {}
    for col, name in zip(cols[1:-1], FILTERS, strict=True):
        options = sorted(runs[name].fillna("–").astype(str).unique())
        key = URL_KEYS.get(name, name)
        chosen[name] = col.multiselect(name, options, key=key, bind="query-params", placeholder="all")
    return text, chosen, None if by == "none" else by


def apply_filters(df: pd.DataFrame, text: str, chosen: dict[str, list[str]]) -> pd.DataFrame:
    mask = (
        df["run_id"].str.contains(text, case=False, regex=False) if text else pd.Series(True, index=df.index)
    )
    for name, values in chosen.items():
        if values:
            mask &= df[name].fillna("–").astype(str).isin(values)
    return df[mask]


def action_buttons(selected: list[str], sweeps: set[str]) -> None:
    """Buttons for the selected runs; `sweeps`: the sweeps they belong to (Sweeps opens when it is one)."""
    cols = st.columns(4)
    if cols[0].button(f"Compare selected ({len(selected)})", disabled=not selected, type="primary"):
        st.switch_page(nav.page_file("compare"), query_params={"runs": selected})
    if cols[1].button("Run detail", disabled=len(selected) != 1):
        st.switch_page(nav.page_file("run_detail"), query_params={"run": selected[0]})
    if cols[2].button("Token inspector", disabled=len(selected) != 1):
        st.switch_page(nav.page_file("token_inspector"), query_params={"run": selected[0]})
    if cols[3].button("Sweep", disabled=len(sweeps) != 1, help="the sweep of the selected runs, on Sweeps"):
        # Also through its widget's state: this page's URL-bound filters can drop the new page's query
        # parameter on the way (seen in Chromium), and Sweeps would open on the newest sweep instead.
        st.session_state["sweep"] = next(iter(sweeps))
        st.switch_page(nav.page_file("sweeps"), query_params={"sweep": next(iter(sweeps))})


def main() -> None:
    st.title("Runs")
    store = ui.store()
    runs = ui.load_runs(store)
    if runs is None:
        return
    text, chosen, by = filter_widgets(runs)
    live = bool((runs["status"] == "running").any())

    unread = [runs]  # the listing this run of the page just read; a refresh of the table alone reads again

    def table() -> None:
        latest = unread.pop() if unread else ui.load_runs(store)  # cached by the store's file fingerprint
        if latest is None:
            return
        shown = apply_filters(latest, text, chosen)
        if by:  # stable: newest first within a group
            shown = shown.sort_values(by, kind="stable", na_position="last")
        shown = shown.reset_index(drop=True)
        n_live = int((latest["status"] == "running").sum())
        groups = f" in {shown[by].nunique(dropna=False)} by {by}" if by else ""
        st.caption(f"{len(shown)} of {len(latest)} runs{groups} · {n_live} running · store `{store}`")
        event = st.dataframe(
            display_frame(shown, time.time(), by), column_config=COLUMNS | {"by": by_column(by)},
            hide_index=True, key="runs_table",
            on_select="rerun", selection_mode="multi-row",
            height=HEADER_PX + ROW_PX * min(max(len(shown), 1), ROWS_SHOWN),
        )  # fmt: skip
        rows = [i for i in event.selection.rows if i < len(shown)]
        picked = shown.loc[rows]
        action_buttons(picked["run_id"].tolist(), set(picked["sweep"].dropna()))

    st.fragment(table, run_every=ui.LIVE_REFRESH_S if live else ui.IDLE_REFRESH_S)()


main()
