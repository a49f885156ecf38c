"""Streamlit helpers shared by the pages: the store, the runs list, run picking, panels, live refresh."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app import loaders
from app.charts import PLOTLY_CONFIG
from app.store import store_path

LIVE_REFRESH_S = 2.0  # running runs: new segments land every few steps
IDLE_REFRESH_S = 30.0  # the runs list, so new runs show up without a reload


def store() -> str:
    return store_path()


@contextmanager
def unavailable(what: str) -> Iterator[None]:
    """Show a warning instead of a traceback when the store cannot answer (damaged or vanished data)."""
    try:
        yield
    except loaders.DataUnavailable as err:
        st.warning(f"{what} unavailable: {err}")


def load_runs(store_dir: str) -> pd.DataFrame | None:
    """The runs table (newest first), or None after telling the user why there is nothing to show."""
    try:
        runs = loaders.runs_table(store_dir, loaders.version(store_dir, None, ["steps", "events"]))
    except loaders.DataUnavailable as err:
        st.warning(f"Cannot read the run store {store_dir}: {err}")
        return None
    if runs.empty:
        st.info(f"No runs in `{store_dir}` yet. Start one with `entropyscope train --store {store_dir}`.")
        return None
    return runs.sort_values(["created", "run_id"], ascending=[False, True], na_position="last").reset_index(
        drop=True
    )


def literal(text: str, limit: int = 80) -> str:
    """`text` as inline code on one line: markdown, HTML and newlines in it stay plain characters."""
    shown = repr(text if len(text) <= limit else text[:limit] + "…")
    return f"`{shown.replace('`', chr(0x2018))}`"


def refuse_unknown_url_runs(param: str, run_ids: list[str]) -> None:
    """Say which run ids in the address (`?param=`) are no run of this store; the picker drops them."""
    known = set(run_ids)
    unknown = [r for r in st.query_params.get_all(param) if r not in known]
    if unknown:
        st.error(
            f"`?{param}=` in the address names no run of this store: {', '.join(literal(r) for r in unknown[:5])}"
            " (only run folders inside the store are shown); pick a run below."
        )


def run_picker(runs: pd.DataFrame, label: str = "Run") -> str:
    """A run selectbox bound to the URL (`?run=ID`), defaulting to the newest run."""
    ids = runs["run_id"].tolist()
    refuse_unknown_url_runs("run", ids)
    return st.selectbox(label, ids, index=0, key="run", bind="query-params")


def is_live(runs: pd.DataFrame, run_ids: list[str]) -> bool:
    sel = runs[runs["run_id"].isin(run_ids)]
    return bool((sel["status"] == "running").any())


def show_figure(fig: go.Figure | None, key: str, empty: str) -> None:
    if fig is None:
        st.caption(empty)
    else:
        st.plotly_chart(fig, key=key, config=PLOTLY_CONFIG)


def live_fragment(render: Callable[[], None], live: bool) -> None:
    """Run `render` as a fragment that reruns alone every LIVE_REFRESH_S while the run is live."""
    st.fragment(render, run_every=LIVE_REFRESH_S if live else None)()
