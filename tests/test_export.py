"""export_run: one run to a fresh DuckDB file or a wide CSV."""

import json

import duckdb
import pandas as pd
import pytest

from analysis.errors import UsageError
from analysis.export import export_run
from analysis.schema import ENTROPY_MEAN, REWARD_MEAN, TABLES
from analysis.store_writer import RunWriter

CONFIG = {"algo": "dapo", "controller": "adapo", "lr": 1e-6}


@pytest.fixture
def store(tmp_path):
    store = tmp_path / "runs"
    for run_id, steps in (("a", 4), ("b", 2)):
        with RunWriter(store, run_id, CONFIG) as w:
            for s in range(1, steps + 1):
                w.log_scalars(s, {ENTROPY_MEAN: 1.0 / s, REWARD_MEAN: 0.25 * s})
                w.log_hist(s, [0.0, 0.5, 1.0], [3, 4])
                w.log_tokens(
                    {"step": [s], "sample_id": [s], "position": [0], "token_id": [7], "logp": [-0.1],
                     "entropy": [0.3], "advantage": [1.0], "ratio": [1.0], "clip_side": [0], "quadrant": [1]}
                )  # fmt: skip
                w.heartbeat(s)
            w.log_event(steps, "checkpoint", "saved")
    return store


def test_export_duckdb(store, tmp_path):
    out = export_run(store, "a", tmp_path / "a.duckdb")
    assert out == tmp_path / "a.duckdb"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.duckdb", "runs"]  # no temp or WAL left
    with duckdb.connect(str(out), read_only=True) as con:
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        assert tables == set(TABLES) | {"run"}
        assert con.execute("SELECT count(*), count(DISTINCT run_id) FROM steps").fetchone() == (8, 1)
        assert con.execute("SELECT count(*) FROM hists").fetchone() == (8,)
        assert con.execute("SELECT count(*) FROM tokens").fetchone() == (4,)
        assert con.execute("SELECT count(*) FROM samples").fetchone() == (0,)
        assert con.execute("SELECT kind FROM events").fetchall() == [("checkpoint",)]
        cols = [r[0] for r in con.execute("DESCRIBE tokens").fetchall()]
        assert cols == TABLES["tokens"].names
        run_id, status, last_step, config = con.execute(
            "SELECT run_id, status, last_step, config FROM run"
        ).fetchone()
    assert (run_id, status, last_step) == ("a", "finished", 4) and json.loads(config) == CONFIG


def test_export_csv_is_wide(store, tmp_path):
    out = export_run(store, "a", tmp_path / "a.csv")
    df = pd.read_csv(out)
    assert list(df.columns) == ["step", "wall_time", ENTROPY_MEAN, REWARD_MEAN]
    assert df["step"].tolist() == [1, 2, 3, 4]
    assert df[REWARD_MEAN].tolist() == [0.25, 0.5, 0.75, 1.0]


def test_export_refuses_overwrite(store, tmp_path):
    target = tmp_path / "a.duckdb"
    target.write_bytes(b"precious")
    with pytest.raises(UsageError, match="already exists"):
        export_run(store, "a", target)
    assert target.read_bytes() == b"precious"


def test_export_bad_suffix_lists_valid_ones(store, tmp_path):
    with pytest.raises(UsageError, match=r"\.duckdb or \.csv"):
        export_run(store, "a", tmp_path / "a.parquet")


def test_export_unknown_run(store, tmp_path):
    with pytest.raises(UsageError, match="unknown run 'zz'"):
        export_run(store, "zz", tmp_path / "zz.csv")
    assert not (tmp_path / "zz.csv").exists()
