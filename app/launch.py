"""`python -m app.launch ARGS` is `streamlit run ARGS` with the dashboard's modules imported first.

Streamlit imports a page's modules on the first session that runs it, so the first visitor after a start
waited for pandas, DuckDB, pyarrow and Plotly (measured: 2.19 s first paint of the Runs page vs 1.40 s for
later first-time visitors). Importing them before the server starts moves that wait to start-up. Modules
that declare st.cache_data functions stay out: before the runtime exists Streamlit warns about each one.

Before the server listens (for WARM_WAIT_S at most; the rest goes on beside it), a thread reads the store's
listing once, which leaves every run's summary and alert count in the process's memory (analysis.run_cache),
and builds one figure, which loads Plotly's validators: the first visitor then pays neither. Measured on
1,000 sealed runs with 4 live (docs/benchmarks.md): the server is ready 0.14 s later, and the first Runs page
draws 0.43 s sooner than beside a warm-up still running.
"""

import sys
import threading
from contextlib import closing

import plotly.graph_objects as go
from streamlit.web import cli

import app.charts
from analysis import dashboard_queries
from analysis.store_reader import StoreReader
from app.store import store_path

WARM_WAIT_S = 5.0  # a store that takes longer (thousands of unsealed runs) must not hold the server back


def warm(store: str) -> None:
    """Fill the per-process caches the first page view would fill."""
    app.charts.layout(go.Figure(go.Scatter(x=[0], y=[0])), "warm-up", "warm-up")
    try:
        with closing(StoreReader(store)) as reader:
            reader.runs()
            dashboard_queries.active_alerts(reader)
    except Exception:  # noqa: BLE001 -- only a head start: a page reading the same store reports what fails
        pass


def script_store(argv: list[str]) -> str:
    """The store the dashboard script will show: its `--store` after `--`, else where store_path() looks."""
    return store_path(argv[argv.index("--") + 1 :] if "--" in argv else [])


if __name__ == "__main__":
    warming = threading.Thread(target=warm, args=(script_store(sys.argv[1:]),), daemon=True)
    warming.start()
    warming.join(WARM_WAIT_S)
    sys.exit(cli.main(["run", *sys.argv[1:]], prog_name="streamlit"))
