"""MLflow runs -> rows: every metric's full history, params and tags.

SOURCE is a tracking URI with an optional `#SELECTOR`: a run id, an experiment name, or several of them
separated by commas (`sqlite:///mlflow.db#grpo-sweep`); without one, every active run of every experiment.
A path to a `.db` file stands for `sqlite:///PATH`, a path to an mlruns/ folder for `file://PATH`.

On a SQLite backend the database is read directly, read-only (MLflow's own tables: experiments, runs,
params, tags, latest_metrics, metrics), one indexed query per key: MLflow's client builds an object per
point. Values are those get_metric_history returns (NaN where MLflow marks one). A file store (mlruns/, a
`file:` URI or the folder itself) is read directly too. Other backends (an MLflow server, another database)
go through MlflowClient.get_metric_history, one key at a time. Incremental reads take the rows past the last
rowid seen (SQLite), the lines appended to each metric file (file store), or the points past those already
read per key (client).
"""

import os
import re
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from analysis.errors import UsageError
from analysis.importers.lines import LineTail
from analysis.importers.rows import Rows

MS = 1e-3
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def split_source(spec: str) -> tuple[str, list[str]]:
    """(tracking URI, selectors) of `URI#A,B`; a bare path is a file store (a folder) or a SQLite file."""
    uri, _, selector = spec.partition("#")
    if "://" not in uri and ":" not in uri.split("/")[0]:
        path = Path(uri).resolve()
        uri = f"file://{path}" if path.is_dir() else f"sqlite:///{path}"
    elif (db := sqlite_path(uri)) is not None:
        uri = f"sqlite:///{db.resolve()}"  # absolute: run.json's source and the run id name one database
    return uri, [s.strip() for s in selector.split(",") if s.strip()]


def is_file_store(path: Path) -> bool:
    """Whether `path` looks like an MLflow file store (mlruns/): experiment folders with a meta.yaml."""
    return path.is_dir() and any((d / "meta.yaml").is_file() for d in path.iterdir() if d.is_dir())


def sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite:/// URI (three slashes: relative path, four: absolute), else None."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///"))


class SqliteBackend:
    """MLflow's tables read with sqlite3, read-only: no migration, no lock held."""

    def __init__(self, path: Path, uri: str) -> None:
        if not path.is_file():
            raise UsageError(f"no MLflow database at {path} (from {uri})")
        try:
            self.con = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True, check_same_thread=False)
            tables = {r[0] for r in self.con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.Error as err:
            raise UsageError(f"cannot read MLflow database {path}: {err}") from None
        if not {"experiments", "runs", "metrics", "params", "tags"} <= tables:
            raise UsageError(
                f"{path} is not an MLflow tracking database (no experiments/runs/metrics tables)"
            )

    def runs(self) -> list[tuple[str, str, str]]:
        """(run id, run name, experiment name) of every active run, oldest first."""
        sql = """SELECT r.run_uuid, r.name, e.name FROM runs r JOIN experiments e USING (experiment_id)
                 WHERE r.lifecycle_stage = 'active' AND e.lifecycle_stage = 'active' ORDER BY r.start_time"""
        return [(a, b or a[:8], c) for a, b, c in self.con.execute(sql)]

    def params_tags(self, run_id: str) -> tuple[dict[str, str], dict[str, str]]:
        params = dict(self.con.execute("SELECT key, value FROM params WHERE run_uuid = ?", (run_id,)))
        tags = dict(self.con.execute("SELECT key, value FROM tags WHERE run_uuid = ?", (run_id,)))
        return params, tags

    def metrics(self, run_id: str, cursor: Any) -> tuple[Rows, Any]:
        """Points logged after `cursor` (a rowid; None for all), per key, in logging order."""
        keys = [
            r[0] for r in self.con.execute("SELECT key FROM latest_metrics WHERE run_uuid = ?", (run_id,))
        ]
        sql = """SELECT step, CASE WHEN is_nan THEN NULL ELSE value END, timestamp, rowid FROM metrics
                 WHERE run_uuid = ? AND key = ?"""
        # A first read goes by key through MLflow's primary-key index (it covers these columns: 1.7 s for 500k
        # points); a rowid bound there would make SQLite scan the whole run once per key (9.9 s). Later reads
        # take only the rows past the last one seen, through the run_uuid index.
        if cursor is not None:
            sql += " AND rowid > ?"
        series, last = [], -1 if cursor is None else cursor
        for key in sorted(keys):
            rows = self.con.execute(
                sql, (run_id, key) if cursor is None else (run_id, key, cursor)
            ).fetchall()
            if not rows:
                continue
            a = np.array(rows, dtype=np.float64)  # NULL -> NaN
            a = a[np.lexsort((a[:, 3], a[:, 2]))]  # by timestamp, then insertion: the later point wins
            series.append((key, a[:, 0], a[:, 1], a[:, 2] * MS))
            last = max(last, int(a[:, 3].max()))
        return Rows.of_series(series), last


class FileBackend:
    """An MLflow file store (mlruns/) read directly: MLflow 3 opens one only behind an opt-in, and its
    metric files are plain text (`timestamp value step` per line), one per key."""

    def __init__(self, root: Path, uri: str) -> None:
        if not is_file_store(root):
            raise UsageError(
                f"no MLflow file store at {root} (from {uri}): no experiment folders with meta.yaml"
            )
        self.root = root
        self._dirs: dict[str, Path] = {}

    def runs(self) -> list[tuple[str, str, str]]:
        found = []
        for exp_dir in sorted(d for d in self.root.iterdir() if (d / "meta.yaml").is_file()):
            exp = _yaml(exp_dir / "meta.yaml")
            if exp.get("lifecycle_stage", "active") != "active":
                continue
            for run_dir in sorted(d for d in exp_dir.iterdir() if (d / "meta.yaml").is_file()):
                meta = _yaml(run_dir / "meta.yaml")
                run_id = str(meta.get("run_id") or meta.get("run_uuid") or run_dir.name)
                if meta.get("lifecycle_stage", "active") == "active":
                    self._dirs[run_id] = run_dir
                    name = str(meta.get("run_name") or run_id[:8])
                    found.append(
                        (meta.get("start_time") or 0, run_id, name, str(exp.get("name", exp_dir.name)))
                    )
        return [(run_id, name, exp) for _, run_id, name, exp in sorted(found)]

    def params_tags(self, run_id: str) -> tuple[dict[str, str], dict[str, str]]:
        run_dir = self._dirs[run_id]
        return _files_text(run_dir / "params"), _files_text(run_dir / "tags")

    def metrics(self, run_id: str, cursor: Any) -> tuple[Rows, Any]:
        """Lines appended to each metric file since `cursor` (file -> LineTail)."""
        tails: dict[Path, LineTail] = cursor or {}
        series = []
        metrics_dir = self._dirs[run_id] / "metrics"
        for file in sorted(p for p in metrics_dir.rglob("*") if p.is_file()) if metrics_dir.is_dir() else []:
            tail = tails.setdefault(file, LineTail(file))
            fields = [line.split() for _, line, _ in tail.lines(final=False)]
            if fields:
                a = np.array([f if len(f) == 3 else [*f, b"0"] for f in fields], dtype=np.float64)
                a = a[np.lexsort((np.arange(len(a)), a[:, 0]))]  # by timestamp, then order logged
                series.append((file.relative_to(metrics_dir).as_posix(), a[:, 2], a[:, 1], a[:, 0] * MS))
        return Rows.of_series(series), tails


def _yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise UsageError(f"cannot read MLflow metadata {path}: {err}") from None
    return data if isinstance(data, dict) else {}


def _files_text(folder: Path) -> dict[str, str]:
    """{relative path: text} of the files under `folder` (params and tags: one file each, '/' in keys)."""
    if not folder.is_dir():
        return {}
    return {p.relative_to(folder).as_posix(): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


class ClientBackend:
    """Any other tracking URI, through MlflowClient (a server that does not answer fails fast)."""

    def __init__(self, uri: str) -> None:
        # A dead server must fail in seconds, not after MLflow's default retries with backoff (minutes).
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        self.uri = uri

    def _call(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as err:  # MlflowException, connection errors, a store that cannot be opened
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UsageError(f"MLflow at {self.uri} did not answer: {first}") from None

    def runs(self) -> list[tuple[str, str, str]]:
        experiments = self._call(self.client.search_experiments)
        names = {e.experiment_id: e.name for e in experiments}
        runs = self._call(self.client.search_runs, list(names), "", 1, 100_000, ["attributes.start_time ASC"])
        return [
            (r.info.run_id, r.info.run_name or r.info.run_id[:8], names[r.info.experiment_id]) for r in runs
        ]

    def params_tags(self, run_id: str) -> tuple[dict[str, str], dict[str, str]]:
        run = self._call(self.client.get_run, run_id)
        return dict(run.data.params), dict(run.data.tags)

    def metrics(self, run_id: str, cursor: Any) -> tuple[Rows, Any]:
        """Points past those already read of each key (cursor: key -> count), ordered by time then step."""
        seen: dict[str, int] = dict(cursor or {})
        keys = sorted(self._call(self.client.get_run, run_id).data.metrics)
        series = []
        for key in keys:
            history = self._call(self.client.get_metric_history, run_id, key)
            history = sorted(history, key=lambda m: (m.timestamp, m.step))[seen.get(key, 0) :]
            if history:
                steps = np.array([m.step for m in history], dtype=np.int64)
                values = np.array([m.value for m in history], dtype=np.float64)
                times = np.array([m.timestamp for m in history], dtype=np.float64) * MS
                series.append((key, steps, values, times))
                seen[key] = seen.get(key, 0) + len(history)
        return Rows.of_series(series), seen


def open_backend(uri: str) -> SqliteBackend | FileBackend | ClientBackend:
    path = sqlite_path(uri)
    if path is not None:
        return SqliteBackend(path, uri)
    if uri.startswith("file:"):
        return FileBackend(Path(uri.removeprefix("file://").removeprefix("file:")), uri)
    return ClientBackend(uri)


class MlflowSource:
    """One MLflow run."""

    kind = "mlflow"
    trainer = None

    def __init__(
        self, backend: SqliteBackend | FileBackend | ClientBackend, uri: str, run: tuple[str, str, str]
    ) -> None:
        self.backend = backend
        self.run_uuid, self.name, self.experiment = run
        self.location = f"{uri}#{self.run_uuid}"
        self._cursor: Any = None

    def info(self) -> dict:
        params, tags = self.backend.params_tags(self.run_uuid)
        visible = {k: v for k, v in tags.items() if not k.startswith("mlflow.")}
        return {
            "config": params,
            "source": {"experiment": self.experiment, "mlflow_run_id": self.run_uuid, "tags": visible},
        }

    def read(self, final: bool = True) -> Rows:
        rows, self._cursor = self.backend.metrics(self.run_uuid, self._cursor)
        return rows


def open_mlflow(spec: str) -> list[MlflowSource]:
    """The MLflow runs a SOURCE names; UsageError when none, or when a selector matches nothing."""
    uri, selectors = split_source(spec)
    backend = open_backend(uri)
    runs = backend.runs()
    if selectors:
        chosen = []
        for sel in selectors:
            match = [r for r in runs if r[0] == sel or (not _RUN_ID.match(sel) and r[2] == sel)]
            if not match:
                experiments = sorted({r[2] for r in runs})
                raise UsageError(
                    f"no MLflow run id or experiment {sel!r} at {uri}; experiments: {', '.join(experiments) or 'none'}"
                )
            chosen += [r for r in match if r not in chosen]
        runs = chosen
    if not runs:
        raise UsageError(f"no active MLflow runs at {uri}")
    return [MlflowSource(backend, uri, r) for r in runs]
