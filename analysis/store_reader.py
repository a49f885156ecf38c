"""StoreReader: read-only queries over a run store, safe while trainers are writing to it.

Each query lists the finished segments (`*.parquet`; temp names end in `.tmp`, so a half-written file is
never read), registers them as views on a fresh cursor of an in-memory DuckDB connection, and returns a
pandas DataFrame. No file is ever locked, so any number of readers can run beside the writers.
Unreadable segments are skipped with a warning (once per file version) instead of failing the query.
"""

import numbers
import os
import threading
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from analysis.errors import UsageError
from analysis.groups import find_groups
from analysis.liveness import writer_gone
from analysis.metrics import FINAL_TAIL
from analysis.run_cache import RunCache, segments_fingerprint
from analysis.run_ids import inside_store, run_id_problem
from analysis.schema import ENTROPY_MEAN, REWARD_MEAN, TABLES
from analysis.segments import live_segments
from analysis.store_writer import RUN_JSON, read_run_json

if TYPE_CHECKING:
    import duckdb

CONFIG_COLUMNS = ("algo", "controller", "precision", "model", "task")
RUNS_COLUMNS = (
    "run_id", "status", "created", "heartbeat", "heartbeat_age_s", "last_step", *CONFIG_COLUMNS, "source",
    "h0", "entropy", "entropy_last", "entropy_change", "reward", "n_steps", "sweep", "group",
)  # fmt: skip
"""`entropy` and `reward` are final values (analysis.metrics.final_window); `entropy_last` the last step's;
`sweep` the id of the sweep that made the run (None), `group` its group of seeds (analysis.groups)."""
_META_COLUMNS = ("run_id", "status", "created", "heartbeat", "last_step", *CONFIG_COLUMNS, "source", "sweep")
_EXTRA = [pa.field("filename", pa.string()), pa.field("file_row_number", pa.int64())]
# Kept at module level: a view over an Arrow table must not outlive the table it scans.
_EMPTY = {t: pa.schema(list(s) + _EXTRA).empty_table() for t, s in TABLES.items()}
# Natural key of each table: when a resumed run repeats steps, the newest row per key wins (latest
# wall_time, then the later segment, whose name starts with a higher sequence number, then the later row).
_KEYS = {
    "steps": ("run_id", "key", "step"),
    "tokens": ("run_id", "step", "sample_id", "position"),
    "samples": ("run_id", "step", "sample_id"),
    "hists": ("run_id", "step", "bin_lo"),
    # Events never repeat, but a compaction's merged segment and the parts it replaces can both be listed.
    "events": ("run_id", "wall_time", "kind", "message"),
}
_MAX_ATTEMPTS = 5
SUMMARIES_CACHE = "run_summaries.json"
SUMMARY_COLUMNS = ("n_steps", "max_step", "h0", "entropy", "entropy_last", "reward")
# What a cached summary depends on besides the steps segments; a change of any outdates every one.
_SUMMARY_VERSION = f"1:{ENTROPY_MEAN}:{REWARD_MEAN}:{FINAL_TAIL}"


def _q(name: str) -> str:
    return f'"{name}"'


def clean_view_sql(table: str, raw: str) -> str:
    """SELECT over the raw segment view `raw` giving the table's columns with repeated keys removed."""
    cols = ", ".join(_q(c) for c in TABLES[table].names)
    if table not in _KEYS:
        return f"SELECT {cols} FROM {raw}"
    order = "wall_time DESC, " if "wall_time" in TABLES[table].names else ""
    partition = ", ".join(_q(c) for c in _KEYS[table])
    return (
        f"SELECT {cols} FROM {raw} QUALIFY row_number() OVER (PARTITION BY {partition} "
        f"ORDER BY {order}filename DESC, file_row_number DESC) = 1"
    )


def register_views(con: "duckdb.DuckDBPyConnection", files: dict[str, list[str]]) -> None:
    """On an in-memory connection, create views `seg_<table>` (raw segments) and `<table>` (deduplicated)."""
    for table, paths in files.items():
        raw = f"seg_{table}"
        if paths:
            rel = con.read_parquet(paths, filename=True, file_row_number=True, union_by_name=True)
        else:
            rel = con.from_arrow(_EMPTY[table])
        rel.create_view(raw, replace=True)
        con.execute(f"CREATE OR REPLACE TEMP VIEW {table} AS {clean_view_sql(table, raw)}")


def _looks_like_run(store: Path, entry: os.DirEntry) -> bool:
    """A folder of the store holding run.json or a table folder, that stays in the store."""
    try:
        if not entry.is_dir():
            return False
        with os.scandir(entry.path) as it:
            inner = {e.name: e for e in it}
    except OSError:
        return False
    if RUN_JSON not in inner and not any(t in inner and inner[t].is_dir() for t in TABLES):
        return False
    if entry.is_symlink() or any(e.is_symlink() for e in inner.values()):
        return inside_store(store, Path(entry.path))  # a link out of the store is no run of it
    # A plain folder directly in the store, with no link in it, cannot lead out: only its name can be bad.
    return run_id_problem(entry.name) is None


def source_label(info: dict[str, Any]) -> str:
    """Where a run came from: `entropyscope`, or an import's source kind and the trainer behind it."""
    source = info.get("source")
    if not isinstance(source, dict):
        return "entropyscope"
    kind, trainer = str(source.get("kind") or "import"), source.get("trainer")
    return f"{kind} ({trainer})" if trainer and trainer != kind else kind


class StoreReader:
    """Queries over `<store>/*/<table>/*.parquet`; each method returns a fresh DataFrame."""

    def __init__(self, store: str | Path) -> None:
        self.store = Path(store)
        self._con: duckdb.DuckDBPyConnection | None = None  # made at the first query: listing needs none
        self._lock = threading.Lock()
        self._checked: dict[str, tuple[int, int, bool]] = {}  # path -> (size, mtime_ns, readable)

    def close(self) -> None:
        if self._con is not None:
            self._con.close()

    # ---- files ---------------------------------------------------------------------------------------

    def run_dirs(self) -> list[Path]:
        """Directories that look like runs: they hold run.json or a table folder."""
        try:
            with os.scandir(self.store) as it:
                entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
        except OSError:
            return []
        return [Path(e.path) for e in entries if _looks_like_run(self.store, e)]

    def segment_files(self, table: str, run_ids: list[str] | None = None) -> list[str]:
        """Readable segment paths of `table` for the given runs (all runs when None)."""
        if run_ids is None:
            dirs = self.run_dirs()
        else:  # ids name folders inside the store, never paths out of it
            dirs = [self.store / r for r in run_ids if inside_store(self.store, self.store / r)]
        return [str(p) for d in dirs for p in live_segments(d / table) if self._readable(p)]

    def _readable(self, path: Path) -> bool:
        try:
            st = path.stat()
        except OSError:
            return False  # removed since the listing (compaction): not an error
        with self._lock:
            known = self._checked.get(str(path))
        if known and known[:2] == (st.st_size, st.st_mtime_ns):
            return known[2]
        try:
            pq.read_metadata(path)  # the footer is written last: a truncated file has none
        except FileNotFoundError:
            return False
        except Exception as err:
            self._mark_bad(path, st, err)
            return False
        with self._lock:
            self._checked[str(path)] = (st.st_size, st.st_mtime_ns, True)
        return True

    def _mark_bad(self, path: Path, st: os.stat_result, err: Exception) -> None:
        warnings.warn(f"skipping unreadable run-store segment {path}: {err}", RuntimeWarning, stacklevel=3)
        with self._lock:
            self._checked[str(path)] = (st.st_size, st.st_mtime_ns, False)

    def _blame(self, con: "duckdb.DuckDBPyConnection", files: dict[str, list[str]]) -> bool:
        """After a failed query, find segments that cannot be scanned; True if the file set changed."""
        import duckdb

        changed = False
        for path in (Path(p) for paths in files.values() for p in paths):
            try:
                st = path.stat()
                con.read_parquet([str(path)]).to_arrow_table()
            except (FileNotFoundError, duckdb.IOException) as err:
                changed = True
                if path.exists():
                    self._mark_bad(path, st, err)
            except duckdb.Error as err:
                self._mark_bad(path, st, err)
                changed = True
        return changed

    def query(
        self, sql: str, params: list[Any], tables: list[str], run_ids: list[str] | None
    ) -> pd.DataFrame:
        """Run `sql` over views of `tables`, retrying without segments found unreadable."""
        # Imported here: a listing served from the run caches needs no DuckDB, and `entropyscope runs`
        # starts faster without it.
        import duckdb

        for attempt in range(_MAX_ATTEMPTS):
            files = {t: self.segment_files(t, run_ids) for t in tables}
            with self._lock:
                if self._con is None:
                    self._con = duckdb.connect()  # in memory: nothing on disk to lock
                con = self._con.cursor()  # one connection per query: safe from several threads
            try:
                register_views(con, files)
                return con.execute(sql, params).df()
            except duckdb.Error:
                # Data errors leave a culprit to skip; anything else is a bug and must surface.
                if not self._blame(con, files) or attempt == _MAX_ATTEMPTS - 1:
                    raise
            finally:
                con.close()
        raise AssertionError("unreachable")

    # ---- runs ----------------------------------------------------------------------------------------

    def runs(self) -> pd.DataFrame:
        """One row per run: status (run.json's, or `killed` when it says running but its trainer process on
        this host is gone), liveness, config headline and final entropy/reward (RUNS_COLUMNS)."""
        now = time.time()
        rows, infos, dirs = [], {}, self.run_dirs()
        for d in dirs:
            info = infos[d.name] = read_run_json(d) or {"status": "unknown"}
            config = info.get("config") if isinstance(info.get("config"), dict) else {}
            row = {
                "run_id": d.name,
                **{k: info.get(k) for k in ("status", "created", "heartbeat", "last_step")},
            }
            if writer_gone(info):  # run.json still says running, but nothing will write it any more
                row["status"] = "killed"
            sweep = info.get("sweep") if isinstance(info.get("sweep"), dict) else {}
            sweep_id = None if sweep.get("id") is None else str(sweep["id"])
            row |= {"source": source_label(info), "sweep": sweep_id}
            rows.append(row | {k: config.get(k) for k in CONFIG_COLUMNS})
        meta = pd.DataFrame(rows, columns=_META_COLUMNS)
        meta["group"] = meta["run_id"].map({r: g.name for g in find_groups(infos) for r in g.run_ids})
        stats = self.summaries([d.name for d in dirs], every_run=True)
        df = meta.merge(stats, on="run_id", how="left")
        for col in ("created", "heartbeat", "h0", "entropy", "entropy_last", "reward"):
            df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
        df["heartbeat_age_s"] = now - df["heartbeat"]
        df["entropy_change"] = df["entropy"] / df["h0"] - 1
        df["last_step"] = (
            pd.to_numeric(df["last_step"], errors="coerce")
            .fillna(pd.to_numeric(df["max_step"], errors="coerce"))
            .astype("Int64")
        )
        df["n_steps"] = df["n_steps"].fillna(0).astype("int64")
        return df[list(RUNS_COLUMNS)]

    def summaries(self, run_ids: list[str], every_run: bool = False) -> pd.DataFrame:
        """SUMMARY_COLUMNS per run: cached ones whose steps segments are unchanged, the others read now.
        `every_run`: `run_ids` are all the store's runs, so the cache drops the runs no longer in it."""
        cache = RunCache(self.store, SUMMARIES_CACHE, _SUMMARY_VERSION)
        fps = {r: segments_fingerprint(self.store / r, "steps") for r in run_ids}
        known = {r: cache.get(r, fps[r]) for r in run_ids}
        stale = [r for r, summary in known.items() if summary is None]
        for r, summary in self.summary_values(stale).items():
            known[r] = summary
            cache.put(r, fps[r], summary)
        cache.save(run_ids if every_run else None)
        rows = [{"run_id": r, **summary} for r, summary in known.items()]
        return pd.DataFrame(rows, columns=["run_id", *SUMMARY_COLUMNS])

    def summary_values(self, run_ids: list[str]) -> dict[str, dict[str, Any]]:
        """SUMMARY_COLUMNS of each run read now from its steps segments, as JSON values."""
        if not run_ids:
            return {}
        fresh = self.read_summaries(run_ids).set_index("run_id")
        out = {}
        for r in run_ids:
            row = fresh.loc[r] if r in fresh.index else {"n_steps": 0}
            out[r] = {c: _json_number(row.get(c)) for c in SUMMARY_COLUMNS}
        return out

    def sealed_summary(self, run_id: str) -> tuple[str, list[Any]]:
        """(cache name, [version, fingerprint, summary]) of a run, for its per-run file (analysis.run_seal)."""
        fp = segments_fingerprint(self.store / run_id, "steps")  # before reading, as summaries() does
        return SUMMARIES_CACHE, [_SUMMARY_VERSION, fp, self.summary_values([run_id])[run_id]]

    def read_summaries(self, run_ids: list[str]) -> pd.DataFrame:
        """SUMMARY_COLUMNS of `run_ids` from their steps segments (runs without steps have no row)."""
        params = [
            ENTROPY_MEAN,
            REWARD_MEAN,
            FINAL_TAIL,
            ENTROPY_MEAN,
            ENTROPY_MEAN,
            ENTROPY_MEAN,
            REWARD_MEAN,
        ]
        return self.query(_RUNS_SQL, params, ["steps"], run_ids)

    def run_info(self, run_id: str) -> dict[str, Any]:
        """The parsed run.json; {'run_id', 'status': 'unknown'} when it cannot be read."""
        known = [d.name for d in self.run_dirs()]
        if run_id not in known:
            listing = ", ".join(known) if known else "none"
            raise UsageError(f"unknown run '{run_id}' in {self.store}; known runs: {listing}")
        return read_run_json(self.store / run_id) or {"run_id": run_id, "status": "unknown"}

    # ---- per-run data --------------------------------------------------------------------------------

    def table(self, table: str, run_ids: list[str] | None = None) -> pd.DataFrame:
        """A whole store table for some runs (all when None), repeated keys removed, ordered by step."""
        if table not in TABLES:
            raise UsageError(f"unknown table {table!r}; tables: {', '.join(TABLES)}")
        return self.query(_select(table) + " ORDER BY run_id, step", [], [table], run_ids)

    def keys(self, run_ids: list[str]) -> list[str]:
        """Sorted metric keys logged by any of the runs."""
        return sorted(set().union(*self.keys_by_run(run_ids).values()))

    def keys_by_run(self, run_ids: list[str]) -> dict[str, list[str]]:
        """Each run's sorted metric keys ([] for a run that logged none)."""
        sql = 'SELECT DISTINCT run_id, "key" FROM seg_steps ORDER BY run_id, "key"'
        df = self.query(sql, [], ["steps"], list(run_ids))
        found = df.groupby("run_id", sort=False)["key"].agg(list).to_dict()
        return {r: found.get(r, []) for r in run_ids}

    def scalars(self, run_ids: list[str], keys: list[str], max_points: int = 1000) -> pd.DataFrame:
        """Traces per (run, key): raw rows, or at most `max_points` step buckets (mean, min, max).

        Bucket aggregates ignore NaN (a bucket of only NaN gives NaN); raw rows keep NaN and inf as logged.
        """
        if max_points < 1:
            raise ValueError(f"max_points must be >= 1, got {max_points}")
        params = [list(keys), max_points, max_points, max_points, max_points]
        return self.query(_SCALARS_SQL, params, ["steps"], list(run_ids))

    def tokens(self, run_id: str, step: int) -> pd.DataFrame:
        sql = _select("tokens") + " WHERE step = ? ORDER BY sample_id, position"
        return self.query(sql, [int(step)], ["tokens"], [run_id])

    def samples(self, run_id: str, step: int) -> pd.DataFrame:
        sql = _select("samples") + " WHERE step = ? ORDER BY sample_id"
        return self.query(sql, [int(step)], ["samples"], [run_id])

    def steps_with_samples(self, run_id: str) -> list[int]:
        df = self.query("SELECT DISTINCT step FROM seg_samples ORDER BY step", [], ["samples"], [run_id])
        return [int(s) for s in df["step"]]

    def hists(self, run_id: str) -> pd.DataFrame:
        """Entropy histograms of every step, one row per bin."""
        return self.query(_select("hists") + " ORDER BY step, bin_lo", [], ["hists"], [run_id])

    def events(self, run_id: str | list[str] | None = None, kinds: list[str] | None = None) -> pd.DataFrame:
        """Events of one run, or of a list of runs (all runs when None), optionally of some kinds, oldest first."""
        where = "" if kinds is None else " WHERE list_contains(?::VARCHAR[], kind)"
        params = [] if kinds is None else [list(kinds)]
        sql = _select("events") + where + " ORDER BY wall_time, run_id"
        run_ids = [run_id] if isinstance(run_id, str) else run_id
        return self.query(sql, params, ["events"], None if run_ids is None else list(run_ids))


def _json_number(value: Any) -> int | float | None:
    """None for missing or NaN (JSON has no NaN; both read back as NaN); Python's json keeps infinities."""
    if value is None or pd.isna(value):
        return None
    return int(value) if isinstance(value, numbers.Integral) else float(value)


def _select(table: str) -> str:
    return f"SELECT {', '.join(_q(c) for c in TABLES[table].names)} FROM {table}"


# Only the two headline keys are deduplicated, so the listing stays cheap over many long runs. "Final" is the
# mean over the last final_window(n) logged steps of each key (params: the two keys, FINAL_TAIL, the keys again).
_RUNS_SQL = """
WITH picked AS (
    SELECT run_id, step, "key", "value" FROM seg_steps WHERE "key" IN (?, ?)
    QUALIFY row_number() OVER (
        PARTITION BY run_id, "key", step ORDER BY wall_time DESC, filename DESC, file_row_number DESC) = 1
), ranked AS (
    SELECT *, row_number() OVER w AS from_end, greatest(1, count(*) OVER w // ?) AS tail
    FROM picked WINDOW w AS (PARTITION BY run_id, "key" ORDER BY step DESC
                             ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
), counts AS (
    SELECT run_id, count(DISTINCT step) AS n_steps, max(step) AS max_step FROM seg_steps GROUP BY run_id
), summary AS (
    SELECT run_id,
        arg_min("value", step) FILTER (WHERE "key" = ?) AS h0,
        avg("value") FILTER (WHERE "key" = ? AND from_end <= tail) AS entropy,
        arg_max("value", step) FILTER (WHERE "key" = ?) AS entropy_last,
        avg("value") FILTER (WHERE "key" = ? AND from_end <= tail) AS reward
    FROM ranked GROUP BY run_id
)
SELECT counts.run_id, n_steps, max_step, h0, entropy, entropy_last, reward
FROM counts LEFT JOIN summary USING (run_id)
"""

# Params: keys, then max_points four times. Equal-width step buckets per (run, key), only for traces longer
# than max_points; vmin/vmax keep the spikes that a mean would hide.
_SCALARS_SQL = """
WITH s AS (
    SELECT run_id, "key", step, "value", wall_time,
        count(*) OVER w AS n, min(step) OVER w AS s0, max(step) OVER w AS s1
    FROM steps WHERE list_contains(?::VARCHAR[], "key")
    WINDOW w AS (PARTITION BY run_id, "key")
), b AS (
    SELECT *, least(floor((step - s0) * ?::DOUBLE / greatest(s1 - s0, 1)), ? - 1)::BIGINT AS bucket
    FROM s WHERE n > ?
)
SELECT run_id, "key", step, "value", "value" AS vmin, "value" AS vmax, wall_time FROM s WHERE n <= ?
UNION ALL
SELECT run_id, "key", min(step) AS step,
    avg("value") FILTER (WHERE NOT isnan("value")) AS "value",
    min("value") FILTER (WHERE NOT isnan("value")) AS vmin,
    max("value") FILTER (WHERE NOT isnan("value")) AS vmax,
    max(wall_time) AS wall_time
FROM b GROUP BY run_id, "key", bucket
ORDER BY run_id, "key", step
"""
