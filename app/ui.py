"""Streamlit helpers shared by the pages: the store, the runs list, run picking, panels, live refresh."""

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from analysis.liveness import writer_gone
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
        return _no_store(store_dir, err)
    if runs.empty:
        return _no_runs(store_dir)
    return _newest_first(runs)


def load_run_infos(store_dir: str) -> dict[str, dict[str, Any]] | None:
    """{run_id: run.json}, newest first as load_runs orders them, or None after saying why there is none.

    Only run.json files: for a page that needs no summary of every run, this is what stays cheap on a store
    of a thousand runs while some are live (load_runs reads again whenever any run writes a segment)."""
    try:
        infos = loaders.run_infos(store_dir, loaders.version(store_dir, None, []))
    except loaders.DataUnavailable as err:
        return _no_store(store_dir, err)
    if not infos:
        return _no_runs(store_dir)
    created = pd.to_numeric(
        pd.Series([info.get("created") for info in infos.values()], dtype=object), errors="coerce"
    )
    order = _newest_first(pd.DataFrame({"run_id": list(infos), "created": created}))["run_id"]
    return {r: infos[r] for r in order}


def _newest_first(runs: pd.DataFrame) -> pd.DataFrame:
    """Rows by `created`, newest first; ties and runs of unknown age by run id."""
    return runs.sort_values(["created", "run_id"], ascending=[False, True], na_position="last").reset_index(
        drop=True
    )


def _no_store(store_dir: str, err: Exception) -> None:
    st.warning(f"Cannot read the run store {store_dir}: {err}")


def _no_runs(store_dir: str) -> None:
    st.info(f"No runs in `{store_dir}` yet. Start one with `entropyscope train --store {store_dir}`.")


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


def any_running(infos: dict[str, dict[str, Any]], run_ids: Sequence[str]) -> bool:
    """Whether a trainer still writes one of `run_ids` (run.json says running and its process is not gone)."""
    return any(infos.get(r, {}).get("status") == "running" and not writer_gone(infos[r]) for r in run_ids)


def show_figure(fig: go.Figure | None, key: str, empty: str) -> None:
    if fig is None:
        st.caption(empty)
    else:
        st.plotly_chart(fig, key=key, config=PLOTLY_CONFIG)


def live_fragment(render: Callable[[], None], live: bool) -> None:
    """Run `render` as a fragment that reruns alone every LIVE_REFRESH_S while the run is live."""
    st.fragment(render, run_every=LIVE_REFRESH_S if live else None)()
