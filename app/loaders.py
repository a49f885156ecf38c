"""Cached data loaders: the only place the app touches the store, always through analysis/.

Each loader opens a fresh StoreReader (an in-memory DuckDB over Parquet segments: nothing on disk is
locked) for one load and closes it, so no connection outlives a rerun or holds files a trainer writes.
Loaders take plain values only, never widgets, plus a `version` fingerprint of the files they read: a
finished run is read once, a live run again as soon as the trainer writes a segment. ttl and max_entries
bound memory; the fingerprint, not the ttl, decides freshness.
"""

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import streamlit as st

from analysis import compare, sweeps
from analysis import dashboard_queries as dq
from analysis.errors import UsageError
from analysis.groups import Group
from analysis.run_cache import segments_fingerprint
from analysis.store_reader import StoreReader

TTL_S = 600
MAX_ENTRIES = 32
PER_RUN_BYTES = 64 * 2**20  # what per_run keeps in memory; the least recently used values go first
# Data errors a page reports as "unavailable" instead of a traceback; anything else is a bug and surfaces.
DATA_ERRORS = (duckdb.Error, pa.ArrowException, OSError, UsageError)


class DataUnavailable(Exception):
    """The store could not answer (damaged segment, vanished run, unreadable file)."""


@contextmanager
def _reader(store: str) -> Iterator[StoreReader]:
    try:
        with closing(StoreReader(store)) as reader:
            yield reader
    except DATA_ERRORS as err:
        raise DataUnavailable(f"{type(err).__name__}: {err}") from err


def version(store: str, run_ids: Sequence[str] | None, tables: Sequence[str]) -> str:
    """Fingerprint of the files a load reads (cheap: a directory listing, not cached)."""
    return dq.fingerprint(store, None if run_ids is None else list(run_ids), list(tables))


@st.cache_data(ttl=TTL_S, max_entries=8, show_spinner=False)
def runs_table(store: str, version: str) -> pd.DataFrame:
    """StoreReader.runs() plus active alerts per run."""
    with _reader(store) as r:
        df = r.runs()
        alerts = dq.active_alerts(r)
    df["active_alerts"] = df["run_id"].map(alerts).fillna(0).astype("int64")
    return df


@st.cache_data(ttl=TTL_S, max_entries=MAX_ENTRIES, show_spinner=False)
def first_entropy(store: str, run_ids: tuple[str, ...], version: str) -> dict[str, float]:
    """H0 (first-step mean entropy) of each run; NaN where it logged none."""
    with _reader(store) as r:
        df = r.summaries(list(run_ids))
    return dict(zip(df["run_id"], pd.to_numeric(df["h0"], errors="coerce").astype("float64"), strict=True))


@st.cache_data(ttl=TTL_S, max_entries=MAX_ENTRIES, show_spinner=False)
def run_info(store: str, run_id: str, version: str) -> dict[str, Any]:
    with _reader(store) as r:
        return r.run_info(run_id)


class _Memo:
    """Values by key within a byte budget, the least recently used dropped first; shared by the sessions'
    script threads."""

    def __init__(self, budget: int) -> None:
        self._values: OrderedDict[tuple, tuple[Any, int]] = OrderedDict()  # key -> (value, bytes)
        self._held, self._budget = 0, budget
        self._lock = threading.Lock()

    def get(self, key: tuple) -> Any:
        with self._lock:
            if key not in self._values:
                return None
            self._values.move_to_end(key)
            return self._values[key][0]

    def put(self, key: tuple, value: Any) -> None:
        size = int(value.memory_usage().sum()) if isinstance(value, pd.DataFrame) else 1024
        with self._lock:
            if key in self._values:
                return
            self._values[key] = (value, size)
            self._held += size
            while self._held > self._budget:
                self._held -= self._values.popitem(last=False)[1][1]


_per_run_memo = _Memo(PER_RUN_BYTES)


def per_run(
    store: str, run_ids: Sequence[str], what: tuple, read: Callable[[list[str]], dict[str, Any]]
) -> dict[str, Any]:
    """Each run's value of `what`, read (one call of `read` for all of them) only for the runs whose steps
    segments changed since this process last read it: with one live run among fifty ended ones, a refresh
    or a new visitor reads the live run alone (st.cache_data, keyed by every run's fingerprint, reads all)."""
    fps = {r: segments_fingerprint(Path(store) / r, "steps") for r in run_ids}
    keys = {r: (store, r, what, json.dumps(fps[r])) for r in run_ids if fps[r] is not None}
    out = {r: value for r, key in keys.items() if (value := _per_run_memo.get(key)) is not None}
    missing = [r for r in run_ids if r not in out]
    if missing:
        fresh = read(missing)
        out |= fresh
        for r in missing:
            if r in keys:
                _per_run_memo.put(keys[r], fresh[r])
    return out


@st.cache_data(ttl=TTL_S, max_entries=MAX_ENTRIES, show_spinner=False)
def metric_keys(store: str, run_ids: tuple[str, ...], version: str) -> list[str]:
    def read(ids: list[str]) -> dict[str, list[str]]:
        with _reader(store) as r:
            return r.keys_by_run(ids)

    return sorted(set().union(*per_run(store, run_ids, ("keys",), read).values()))


@st.cache_data(ttl=TTL_S, max_entries=MAX_ENTRIES, show_spinner=False)
def scalars(
    store: str, run_ids: tuple[str, ...], keys: tuple[str, ...], max_points: int, version: str
) -> pd.DataFrame:
    """Traces with at most `max_points` buckets per (run, key): step, value, vmin, vmax, wall_time."""

    def read(ids: list[str]) -> dict[str, pd.DataFrame]:
        with _reader(store) as r:
            df = r.scalars(ids, list(keys), max_points)
        by_run = dict(tuple(df.groupby("run_id", sort=False)))
        return {run_id: by_run.get(run_id, df.iloc[0:0]) for run_id in ids}

    traces = per_run(store, run_ids, ("scalars", keys, max_points), read)
    return pd.concat([traces[r] for r in sorted(run_ids)], ignore_index=True)  # ordered as the query orders


@st.cache_data(ttl=TTL_S, max_entries=MAX_ENTRIES, show_spinner=False)
def run_starts(store: str, run_ids: tuple[str, ...], version: str) -> dict[str, float]:
    with _reader(store) as r:
        return dq.run_starts(r, list(run_ids))


@st.cache_data(ttl=TTL_S, max_entries=MAX_ENTRIES, show_spinner=False)
def tokens_seen(store: str, run_ids: tuple[str, ...], version: str) -> tuple[pd.DataFrame, list[str]]:
    with _reader(store) as r:
        return dq.tokens_seen(r, list(run_ids))


@st.cache_data(ttl=TTL_S, max_entries=MAX_ENTRIES, show_spinner=False)
def hists(store: str, run_id: str, version: str) -> pd.DataFrame:
    with _reader(store) as r:
        return r.hists(run_id)


@st.cache_data(ttl=TTL_S, max_entries=MAX_ENTRIES, show_spinner=False)
def events(store: str, run_id: str, version: str) -> pd.DataFrame:
    with _reader(store) as r:
        return r.events(run_id)


@st.cache_data(ttl=TTL_S, max_entries=MAX_ENTRIES, show_spinner=False)
def latest_values(
    store: str, run_id: str, keys: tuple[str, ...], version: str
) -> dict[str, tuple[int, float]]:
    """key -> (step, value) of each key's last finite value."""
    with _reader(store) as r:
        return dq.latest_values(r, run_id, keys)


@st.cache_data(ttl=TTL_S, max_entries=MAX_ENTRIES, show_spinner=False)
def control_history(store: str, run_id: str, version: str) -> pd.DataFrame:
    with _reader(store) as r:
        return dq.control_history(r, run_id)


def control_request(store: str, run_id: str) -> dict[str, Any] | None:
    """The run's control.json; not cached: one small file, read on every refresh of the Control page."""
    return dq.control_request(store, run_id)


@st.cache_data(ttl=TTL_S, max_entries=8, show_spinner=False)
def alert_episodes(store: str, version: str) -> pd.DataFrame:
    with _reader(store) as r:
        return dq.alert_episodes(r)


@st.cache_data(ttl=TTL_S, max_entries=MAX_ENTRIES, show_spinner=False)
def delta_pairs(store: str, run_id: str, version: str) -> pd.DataFrame:
    with _reader(store) as r:
        return dq.entropy_delta_pairs(r, run_id)


@st.cache_data(ttl=TTL_S, max_entries=MAX_ENTRIES, show_spinner=False)
def steps_with_samples(store: str, run_id: str, version: str) -> list[int]:
    with _reader(store) as r:
        return r.steps_with_samples(run_id)


@st.cache_data(ttl=TTL_S, max_entries=MAX_ENTRIES, show_spinner=False)
def step_samples(store: str, run_id: str, step: int, version: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(samples, token records) of one step."""
    with _reader(store) as r:
        return r.samples(run_id, step), r.tokens(run_id, step)


@st.cache_data(ttl=TTL_S, max_entries=MAX_ENTRIES, show_spinner=False)
def forking_tokens(store: str, run_id: str, limit: int, version: str) -> pd.DataFrame:
    with _reader(store) as r:
        return dq.top_entropy_tokens(r, run_id, limit)


@st.cache_data(ttl=TTL_S, max_entries=MAX_ENTRIES, show_spinner=False)
def token_texts(
    store: str, run_id: str, token_ids: tuple[int, ...], version: str
) -> tuple[dict[int, str], bool]:
    """Token id -> text with the run's tokenizer (found in a checkpoint), or ⟨id⟩ when there is none."""
    try:
        return dq.decode_tokens(store, run_id, token_ids)
    except DATA_ERRORS as err:
        raise DataUnavailable(f"{type(err).__name__}: {err}") from err


@st.cache_data(ttl=TTL_S, max_entries=8, show_spinner=False)
def run_infos(store: str, version: str) -> dict[str, dict[str, Any]]:
    """{run_id: run.json} of every run: what groups of seeds are made of."""
    with _reader(store) as r:
        return compare.run_infos(r)


@st.cache_data(ttl=TTL_S, max_entries=MAX_ENTRIES, show_spinner=False)
def group_comparison(
    store: str, groups: tuple[tuple[str, tuple[str, ...]], ...], metric: str, version: str
) -> compare.Comparison:
    """Final values of `metric` per (name, run ids) group, with CIs and pairwise verdicts; groups without a
    finished run are left out (Comparison.dropped). A group of one run counts it whatever its status."""
    with _reader(store) as r:
        chosen = [(Group(name, runs), len(runs) == 1) for name, runs in groups]
        return compare.compare_groups(r, compare.run_infos(r), chosen, metric, strict=False)


@st.cache_data(ttl=TTL_S, max_entries=MAX_ENTRIES, show_spinner=False)
def sweep_result(
    store: str, sweep_id: str, metrics: tuple[str, ...], objective: str, goal: str, version: str
) -> sweeps.SweepResult:
    """One sweep's final values, settings with CIs per metric, and its ranking by `objective` and `goal`."""
    with _reader(store) as r:
        return sweeps.analyse(r, compare.run_infos(r), sweep_id, metrics, objective, goal)
