"""The plain-DuckDB recipe (analysis.store_views): each row once, nothing from outside the store."""

import shutil

from analysis.compact import compact_run
from analysis.schema import ENTROPY_MEAN
from analysis.segments import live_segments, superseded
from analysis.store_reader import StoreReader
from analysis.store_views import connect, views_sql
from analysis.store_writer import RunWriter
from trainer.checkpoint import checkpoints

STEPS_SQL = "SELECT step, value FROM steps WHERE run_id = ? AND key = ? ORDER BY step"


def write(store, run_id, values, resume=False):
    with RunWriter(store, run_id, {"algo": "grpo"}, resume=resume, flush_every_steps=1) as w:
        for step, v in values.items():
            w.log_scalars(step, {ENTROPY_MEAN: v})


def test_views_show_a_resumed_step_and_a_compactions_parts_once(tmp_path):
    write(tmp_path, "r", {1: 1.0, 2: 0.9, 3: 0.8})
    write(tmp_path, "r", {3: 0.7, 4: 0.6}, resume=True)  # resumed from step 2: step 3 again, newer value
    compact_run(tmp_path / "r")
    steps = tmp_path / "r" / "steps"
    assert len(list(steps.glob("*.parquet"))) > len(live_segments(steps)) == 1 and superseded(steps)
    con = connect(tmp_path)
    assert con.execute(STEPS_SQL, ["r", ENTROPY_MEAN]).fetchall() == [(1, 1.0), (2, 0.9), (3, 0.7), (4, 0.6)]
    write(tmp_path, "r", {5: 0.5}, resume=True)
    assert con.execute(STEPS_SQL, ["r", ENTROPY_MEAN]).fetchall()[-1] == (5, 0.5)  # no reconnect needed


def test_nothing_is_read_through_a_link_out_of_the_store(tmp_path):
    store, outside = tmp_path / "store", tmp_path / "outside"
    write(store, "ok", {1: 1.0})
    write(outside, "secret", {1: 42.0})
    (store / "linked").symlink_to(outside / "secret")  # a whole run folder
    segment = next((outside / "secret" / "steps").glob("*.parquet"))
    (store / "ok" / "steps" / "00000099-1-deadbeef.parquet").symlink_to(segment)  # one segment
    (store / "ok" / "checkpoints").mkdir()
    shutil.copytree(store / "ok" / "steps", outside / "step_9", symlinks=False)
    (store / "ok" / "checkpoints" / "step_9").symlink_to(outside / "step_9")  # a checkpoint
    assert "secret" not in views_sql(store) and str(outside) not in views_sql(store)
    assert connect(store).execute("SELECT DISTINCT value FROM steps").fetchall() == [(1.0,)]
    assert StoreReader(store).table("steps")["value"].tolist() == [1.0]
    assert checkpoints(store / "ok") == []
