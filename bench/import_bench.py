"""Benchmark: `entropyscope import` rows/s from TensorBoard, MLflow (SQLite) and verl JSONL, side by side with
tbparse and MlflowClient.get_metric_history reading the same data (goal: >= 100,000 rows/s for JSONL, and no
source slower than its reference reader).

Run: `.venv/bin/python bench/import_bench.py [--steps 20000] [--keys 20] [--sources tensorboard,mlflow,jsonl]`
(the issue's size is --steps 100000: about ten minutes on 2 cores, most of it in the reference readers).
tbparse is a bench-only dependency: `pip install tbparse`; without it that column says so.

Each source holds `steps` x `keys` scalars under verl's names, written as the real writers lay them out:
TensorBoard one event per scalar through the tensorboard package's RecordWriter (what SummaryWriter.add_scalar
writes, without torch's per-call overhead); verl's file-logger lines; an MLflow run created and logged through
MlflowClient into SQLite, whose remaining points are bulk-inserted into the same `metrics` table, since
logging 2M points through MLflow takes over ten minutes. Our figure is a whole import into an empty store
(read, map names, de-duplicate, write Parquet); the reference readers only read into memory. Each is timed
once, after both sides' modules are imported (they take tens of seconds at full size; rerun to see the
spread).
"""

import argparse
import json
import socket
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from analysis.importers.importer import import_source

VERL_KEYS = [
    "actor/entropy", "actor/pg_loss", "actor/pg_clipfrac", "actor/pg_clipfrac_lower", "actor/ppo_kl",
    "actor/grad_norm", "actor/lr", "critic/score/mean", "critic/score/max", "critic/score/min",
    "critic/advantages/mean", "critic/returns/mean", "response_length/mean", "response_length/max",
    "response_length/clip_ratio", "timing_s/step", "timing_s/gen", "timing_s/update_actor", "perf/throughput",
    "perf/total_num_tokens",
]  # fmt: skip
T0 = 1_700_000_000.0


def key_names(n: int) -> list[str]:
    return VERL_KEYS[:n] + [f"extra/k{i}" for i in range(n - len(VERL_KEYS))]


def values(steps: int, keys: int) -> np.ndarray:
    """(steps, keys) plausible scalars."""
    rng = np.random.default_rng(0)
    return np.abs(rng.normal(0.5, 0.2, size=(steps, keys)))


def write_tensorboard(folder: Path, keys: list[str], data: np.ndarray) -> None:
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter

    folder.mkdir(parents=True)
    with (folder / f"events.out.tfevents.{int(T0)}.{socket.gethostname()}.1.0").open("wb") as f:
        writer = RecordWriter(f)
        writer.write(event_pb2.Event(wall_time=T0, file_version="brain.Event:2").SerializeToString())
        for step, row in enumerate(data.tolist()):
            for key, value in zip(keys, row, strict=True):
                summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=key, simple_value=value)])
                event = event_pb2.Event(wall_time=T0 + step, step=step, summary=summary)
                writer.write(event.SerializeToString())


def write_jsonl(path: Path, keys: list[str], data: np.ndarray) -> None:
    with path.open("w") as f:
        for step, row in enumerate(data.tolist()):
            line = {"step": step, "data": dict(zip(keys, row, strict=True))}
            f.write(json.dumps(line, separators=(",", ":")) + "\n")


def write_mlflow(db: Path, keys: list[str], data: np.ndarray) -> tuple[str, str]:
    """(tracking URI, run id): the run and its first step logged through MLflow, the rest bulk-inserted."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{db}"
    client = MlflowClient(tracking_uri=uri)
    run = client.create_run(client.create_experiment("bench"), run_name="bench")
    run_id = run.info.run_id
    ms = int(T0 * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(data[0, i]), ms, 0) for i, k in enumerate(keys)])
    rows = (
        (key, float(data[step, i]), ms + step * 1000, run_id, step, False)
        for step in range(1, len(data))
        for i, key in enumerate(keys)
    )
    with sqlite3.connect(db) as con:
        con.executemany(
            "INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )
    return uri, run_id


def timed(fn: Callable[[], int]) -> tuple[float, int]:
    t0 = time.perf_counter()
    rows = fn()
    return time.perf_counter() - t0, rows


def ours(source: str, store: Path) -> Callable[[], int]:
    return lambda: sum(run.rows_written for run in import_source(source, store=store))


def tbparse_rows(folder: Path) -> Callable[[], int]:
    def read() -> int:
        from tbparse import SummaryReader

        return len(SummaryReader(str(folder)).scalars)

    return read


def mlflow_history_rows(uri: str, run_id: str, keys: list[str]) -> Callable[[], int]:
    def read() -> int:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        return sum(len(client.get_metric_history(run_id, key)) for key in keys)

    return read


def pandas_rows(path: Path) -> Callable[[], int]:
    def read() -> int:
        import pandas as pd

        df = pd.json_normalize(pd.read_json(path, lines=True).to_dict("records"))
        return int(df.drop(columns=["step"]).notna().sum().sum())

    return read


def warm_up() -> None:
    """Import what either side uses before timing, so neither pays for module loading."""
    import contextlib
    import importlib

    for name in ("analysis.importers.tb_events", "analysis.importers.tabular", "analysis.importers.mlflow_runs",
                 "analysis.store_reader", "tensorboard.backend.event_processing.event_accumulator",
                 "mlflow.tracking", "pandas", "tbparse"):  # fmt: skip
        with contextlib.suppress(ImportError):  # a missing one is reported where it is used
            importlib.import_module(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--keys", type=int, default=20)
    parser.add_argument("--sources", default="tensorboard,mlflow,jsonl")
    args = parser.parse_args()
    warm_up()
    keys, data = key_names(args.keys), values(args.steps, args.keys)
    n = args.steps * args.keys
    print(f"{args.steps:,} steps x {args.keys} keys = {n:,} rows per source")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for source in args.sources.split(","):
            t0 = time.perf_counter()
            if source == "tensorboard":
                folder = root / "tb" / "bench"
                write_tensorboard(folder, keys, data)
                spec, ref_name, ref = str(folder), "tbparse", tbparse_rows(folder)
            elif source == "mlflow":
                uri, run_id = write_mlflow(root / "mlflow.db", keys, data)
                spec, ref_name, ref = (
                    f"{uri}#{run_id}",
                    "get_metric_history",
                    mlflow_history_rows(uri, run_id, keys),
                )
            elif source == "jsonl":
                path = root / "verl.jsonl"
                write_jsonl(path, keys, data)
                spec, ref_name, ref = str(path), "pandas read_json", pandas_rows(path)
            else:
                raise SystemExit(f"unknown source {source!r}")
            print(f"{source}: data written in {time.perf_counter() - t0:.1f} s", flush=True)
            t_ours, rows = timed(ours(spec, root / f"store-{source}"))
            assert rows == n, (source, rows, n)
            try:
                t_ref, ref_rows = timed(ref)
                assert ref_rows == n, (ref_name, ref_rows, n)
            except ImportError as err:
                t_ref = None
                ref_name = f"{ref_name} (not installed: {err.name})"
            results.append((source, t_ours, ref_name, t_ref))
            print(f"{source}: ours {t_ours:.1f} s, {ref_name} {t_ref and f'{t_ref:.1f} s'}", flush=True)
    print("\n| source | import s | import rows/s | reference | reference s | reference rows/s | speed-up |")
    print("|---|---|---|---|---|---|---|")
    for source, t_ours, ref_name, t_ref in results:
        ref = f"{t_ref:.1f} | {n / t_ref:,.0f} | {t_ref / t_ours:.1f}x" if t_ref else "– | – | –"
        print(f"| {source} | {t_ours:.1f} | {n / t_ours:,.0f} | {ref_name} | {ref} |")


if __name__ == "__main__":
    main()
