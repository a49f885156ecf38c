"""Run store: RunWriter segments and run.json, StoreReader queries, robustness to damaged files."""

import json
import math
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis import atomic, compact, store_writer
from analysis.atomic import write_json_atomic, write_parquet_atomic
from analysis.compact import compact_run
from analysis.errors import UsageError
from analysis.schema import ENTROPY_MEAN, REWARD_MEAN, TABLES
from analysis.segments import live_segments
from analysis.store_reader import RUNS_COLUMNS, StoreReader
from analysis.store_writer import RunWriter

CONFIG = {
    "algo": "grpo",
    "controller": "repo_r",
    "precision": "fp32",
    "model": "tiny-qwen2",
    "task": "digit_sum",
}
SEGMENT = re.compile(r"^\d{8}-\d+-[0-9a-f]{8}\.parquet$")


def token_columns(step: int, n: int = 3) -> dict[str, list]:
    return {
        "step": [step] * n,
        "sample_id": [step * 10] * n,
        "position": list(range(n)),
        "token_id": [100 + i for i in range(n)],
        "logp": [-0.5] * n,
        "entropy": [1.25] * n,
        "advantage": [0.5] * n,
        "ratio": [1.0] * n,
        "clip_side": [-1, 0, 1][:n],
        "quadrant": [1, 2, 3][:n],
    }


def sample_row(step: int, sample_id: int, text: str = "42", reward: float = 1.0) -> dict:
    return {
        "step": step,
        "sample_id": sample_id,
        "group_id": sample_id // 2,
        "prompt_token_ids": [1, 2, 3],
        "response_token_ids": [4, 5],
        "prompt_text": "1+41=",
        "response_text": text,
        "reward": reward,
        "correct": reward > 0,
    }


def write_run(store: Path, run_id: str = "r1", steps: int = 10, **kw) -> None:
    with RunWriter(store, run_id, CONFIG, **kw) as w:
        for s in range(1, steps + 1):
            w.log_scalars(s, {ENTROPY_MEAN: 2.0 - 0.1 * s, REWARD_MEAN: 0.1 * s})
            w.log_hist(s, [0.0, 1.0, 2.0], [s, 2 * s])
            w.log_samples([sample_row(s, 10 * s), sample_row(s, 10 * s + 1, "41", 0.0)])
            w.log_tokens(token_columns(s))
            w.heartbeat(s)


def segments(run_dir: Path, table: str) -> list[Path]:
    return sorted((run_dir / table).glob("*.parquet"))


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


# ---- writer: segments and schema -------------------------------------------------------------------


def test_round_trip_every_table(tmp_path):
    write_run(tmp_path, steps=3)
    with RunWriter(tmp_path, "r1", CONFIG, resume=True) as w:
        w.log_event(3, "checkpoint", "saved step_3", payload={"path": "x"})
    r = StoreReader(tmp_path)

    sc = r.scalars(["r1"], [ENTROPY_MEAN])
    assert sc["step"].tolist() == [1, 2, 3]
    np.testing.assert_allclose(sc["value"], [1.9, 1.8, 1.7])
    assert r.keys(["r1"]) == sorted([ENTROPY_MEAN, REWARD_MEAN])

    tok = r.tokens("r1", 2)
    assert tok["position"].tolist() == [0, 1, 2] and tok["clip_side"].tolist() == [-1, 0, 1]
    assert (tok["run_id"] == "r1").all() and tok["logp"].tolist() == [-0.5] * 3

    sam = r.samples("r1", 2)
    assert sam["sample_id"].tolist() == [20, 21]
    assert list(sam["prompt_token_ids"][0]) == [1, 2, 3] and sam["response_text"].tolist() == ["42", "41"]
    assert sam["correct"].tolist() == [True, False]
    assert r.steps_with_samples("r1") == [1, 2, 3]

    h = r.hists("r1")
    assert h["step"].tolist() == [1, 1, 2, 2, 3, 3] and h["count"].tolist() == [1, 2, 2, 4, 3, 6]
    assert h["bin_hi"].tolist()[:2] == [1.0, 2.0]

    ev = r.events("r1")
    assert ev["kind"].tolist() == ["checkpoint"] and json.loads(ev["payload"][0]) == {"path": "x"}


def test_segments_have_exact_schema_and_dtypes(tmp_path):
    write_run(tmp_path, steps=2)
    with RunWriter(tmp_path, "r1", CONFIG, resume=True) as w:
        w.log_event(2, "resumed", "again")
    run_dir = tmp_path / "r1"
    for table, schema in TABLES.items():
        files = segments(run_dir, table)
        assert files, table
        for f in files:
            assert pq.read_schema(f).equals(schema), (table, f)
    tok = StoreReader(tmp_path).tokens("r1", 1)
    expected = {
        "step": "int64",
        "position": "int32",
        "token_id": "int32",
        "logp": "float32",
        "clip_side": "int8",
    }
    assert {c: str(tok[c].dtype) for c in expected} == expected


def test_segments_are_named_and_written_atomically(tmp_path):
    write_run(tmp_path, steps=12, flush_every_steps=3, flush_every_s=3600)
    run_dir = tmp_path / "r1"
    names = [p.name for t in ("steps", "tokens", "hists", "samples") for p in (run_dir / t).iterdir()]
    assert names and all(SEGMENT.match(n) for n in names), names  # no temp file left behind
    seqs = [int(p.name[:8]) for p in segments(run_dir, "steps")]
    assert seqs == sorted(seqs) and len(seqs) == 4


def test_failed_parquet_write_leaves_no_file(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.pq, "write_table", boom)
    with pytest.raises(OSError, match="disk full"):
        write_parquet_atomic(tmp_path / "t" / "a.parquet", TABLES["steps"].empty_table())
    assert list((tmp_path / "t").iterdir()) == []


def test_write_json_atomic_replaces_whole_file(tmp_path):
    path = tmp_path / "x.json"
    write_json_atomic(path, {"a": 1, "p": Path("/tmp")})
    write_json_atomic(path, {"b": 2})
    assert read_json(path) == {"b": 2} and [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_flush_on_step_count_makes_rows_visible_before_close(tmp_path):
    w = RunWriter(tmp_path, "r1", CONFIG, flush_every_s=3600, flush_every_steps=3)
    r = StoreReader(tmp_path)
    w.log_scalars(1, {ENTROPY_MEAN: 1.0})
    w.log_scalars(2, {ENTROPY_MEAN: 1.0})
    assert r.scalars(["r1"], [ENTROPY_MEAN]).empty
    w.log_scalars(3, {ENTROPY_MEAN: 1.0})
    assert r.scalars(["r1"], [ENTROPY_MEAN])["step"].tolist() == [1, 2, 3]
    w.close()


def test_flush_on_time(tmp_path):
    with RunWriter(tmp_path, "r1", CONFIG, flush_every_s=0.0, flush_every_steps=1000) as w:
        w.log_scalars(1, {ENTROPY_MEAN: 1.0})
        assert len(segments(tmp_path / "r1", "steps")) == 1


def test_nan_and_inf_are_kept(tmp_path):
    with RunWriter(tmp_path, "r1", CONFIG) as w:
        w.log_scalars(1, {"a": math.nan, "b": math.inf, "c": np.float32(1.5)})
    df = StoreReader(tmp_path).scalars(["r1"], ["a", "b", "c"]).set_index("key")
    assert (
        math.isnan(df.loc["a", "value"]) and df.loc["b", "value"] == math.inf and df.loc["c", "value"] == 1.5
    )


def test_bad_input_is_rejected(tmp_path):
    with RunWriter(tmp_path, "r1", CONFIG) as w:
        with pytest.raises(ValueError, match="unknown event kind"):
            w.log_event(1, "exploded", "x")
        with pytest.raises(ValueError, match="severity"):
            w.log_event(1, "error", "x", severity="meh")
        with pytest.raises(ValueError, match="do not match the schema"):
            w.log_tokens({"step": [1]})
        with pytest.raises(ValueError, match="n\\+1 edges"):
            w.log_hist(1, [0.0, 1.0], [1, 2])
        with pytest.raises(ValueError, match="lack"):
            w.log_samples([{"step": 1}])
    with pytest.raises(UsageError, match="invalid run id"):
        RunWriter(tmp_path, "../escape", CONFIG)


# ---- writer: run.json ------------------------------------------------------------------------------


def test_run_json_status_transitions(tmp_path):
    w = RunWriter(tmp_path, "r1", CONFIG)
    meta = read_json(tmp_path / "r1" / "run.json")
    assert meta["status"] == "running" and meta["config"] == CONFIG and meta["run_id"] == "r1"
    assert {"created", "heartbeat", "last_step", "host", "pid"} <= set(meta)
    assert {"python", "pyarrow", "duckdb"} <= set(meta["versions"])
    w.heartbeat(7, force=True)
    assert read_json(tmp_path / "r1" / "run.json")["last_step"] == 7
    w.close()
    meta = read_json(tmp_path / "r1" / "run.json")
    assert meta["status"] == "finished" and meta["last_step"] == 7
    w.close("failed")  # a second close changes nothing
    assert read_json(tmp_path / "r1" / "run.json")["status"] == "finished"


def test_heartbeat_is_rate_limited(tmp_path, monkeypatch):
    monkeypatch.setattr(store_writer, "HEARTBEAT_MIN_INTERVAL_S", 3600.0)  # no timing luck involved
    w = RunWriter(tmp_path, "r1", CONFIG)
    w.heartbeat(1, force=True)
    w.heartbeat(2)  # too soon after the last write: kept in memory only
    assert read_json(tmp_path / "r1" / "run.json")["last_step"] == 1
    w.close()
    assert read_json(tmp_path / "r1" / "run.json")["last_step"] == 2


def test_exception_marks_run_failed_and_logs_error(tmp_path):
    with pytest.raises(RuntimeError, match="loss is nan"), RunWriter(tmp_path, "r1", CONFIG) as w:
        w.log_scalars(4, {ENTROPY_MEAN: 1.0})
        raise RuntimeError("loss is nan")
    assert read_json(tmp_path / "r1" / "run.json")["status"] == "failed"
    r = StoreReader(tmp_path)
    ev = r.events("r1", kinds=["error"])
    assert ev["step"].tolist() == [4] and "loss is nan" in ev["message"][0]
    assert ev["severity"][0] == "critical" and "Traceback" in json.loads(ev["payload"][0])["traceback"]
    assert r.scalars(["r1"], [ENTROPY_MEAN])["step"].tolist() == [4]  # buffered rows were flushed
    assert r.runs()["status"].tolist() == ["failed"]


def test_existing_run_needs_resume(tmp_path):
    write_run(tmp_path, steps=1)
    with pytest.raises(UsageError, match=r"run 'r1' already exists in .*pass --resume .*--run-id"):
        RunWriter(tmp_path, "r1", CONFIG)
    with pytest.raises(UsageError, match="cannot resume run 'nope'"):
        RunWriter(tmp_path, "nope", CONFIG, resume=True)
    assert not (tmp_path / "nope").exists()


def test_resume_keeps_segments_and_reopens(tmp_path):
    write_run(tmp_path, steps=5)
    before = read_json(tmp_path / "r1" / "run.json")
    old = set(segments(tmp_path / "r1", "steps"))
    w = RunWriter(tmp_path, "r1", CONFIG, resume=True)
    meta = read_json(tmp_path / "r1" / "run.json")
    assert meta["status"] == "running" and meta["created"] == before["created"] and meta["last_step"] == 5
    w.log_scalars(6, {ENTROPY_MEAN: 0.5})
    w.close()
    new = set(segments(tmp_path / "r1", "steps")) - old
    assert old <= set(segments(tmp_path / "r1", "steps")) and len(new) == 1
    assert min(int(p.name[:8]) for p in new) > max(int(p.name[:8]) for p in old)
    assert StoreReader(tmp_path).scalars(["r1"], [ENTROPY_MEAN])["step"].tolist() == list(range(1, 7))


def test_analysis_never_imports_torch():
    code = (
        "import sys, analysis.store_writer, analysis.store_reader, analysis.export, analysis.metrics;"
        "print([m for m in ('torch', 'transformers', 'streamlit') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---- reader: queries -------------------------------------------------------------------------------


def test_runs_listing(tmp_path):
    write_run(tmp_path, "a", steps=4)
    write_run(tmp_path, "b", steps=2)
    df = StoreReader(tmp_path).runs()
    assert list(df.columns) == list(RUNS_COLUMNS)
    a = df.set_index("run_id").loc["a"]
    assert a["status"] == "finished" and a["last_step"] == 4 and a["n_steps"] == 4
    assert a["algo"] == "grpo" and a["controller"] == "repo_r" and a["task"] == "digit_sum"
    assert a["h0"] == pytest.approx(1.9) and a["entropy"] == pytest.approx(1.6)
    assert a["entropy_change"] == pytest.approx(1.6 / 1.9 - 1) and a["reward"] == pytest.approx(0.4)
    assert 0 <= a["heartbeat_age_s"] < 60


def test_run_info(tmp_path):
    write_run(tmp_path, "a", steps=1)
    r = StoreReader(tmp_path)
    assert r.run_info("a")["config"] == CONFIG
    with pytest.raises(UsageError, match="unknown run 'zz'.*known runs: a"):
        r.run_info("zz")


def test_downsampling_limits_points_and_keeps_spikes(tmp_path):
    n = 5000
    with RunWriter(tmp_path, "r1", CONFIG, flush_every_steps=1000) as w:
        for s in range(n):
            w.log_scalars(
                s, {"loss": 100.0 if s == 2345 else 1.0, "dip": -50.0 if s == 10 else 0.0, "nan": math.nan}
            )
    r = StoreReader(tmp_path)
    df = r.scalars(["r1"], ["loss", "dip", "nan"], max_points=100)
    for key, g in df.groupby("key"):
        assert 1 < len(g) <= 100, key
        assert g["step"].is_monotonic_increasing
    loss = df[df.key == "loss"]
    assert loss["vmax"].max() == 100.0 and loss["vmin"].min() == 1.0
    spike = loss[loss["vmax"] == 100.0].iloc[0]
    assert 1.0 < spike["value"] < 100.0  # the mean dilutes the spike; vmax keeps it
    assert df[df.key == "dip"]["vmin"].min() == -50.0
    assert df[df.key == "nan"]["value"].isna().all()
    assert df[df.key == "loss"]["value"].mean() == pytest.approx(1.0 + 99.0 / n, rel=0.05)


def test_short_traces_are_raw(tmp_path):
    write_run(tmp_path, steps=10)
    df = StoreReader(tmp_path).scalars(["r1"], [ENTROPY_MEAN], max_points=10)
    assert len(df) == 10 and (df["vmin"] == df["value"]).all() and (df["vmax"] == df["value"]).all()
    assert len(StoreReader(tmp_path).scalars(["r1"], [ENTROPY_MEAN], max_points=5)) == 5


def test_resumed_steps_keep_latest_rows(tmp_path):
    write_run(tmp_path, steps=10)
    # Resume from a checkpoint at step 5: steps 6..7 are logged again, with new values.
    with RunWriter(tmp_path, "r1", CONFIG, resume=True) as w:
        for s in (6, 7):
            w.log_scalars(s, {ENTROPY_MEAN: -float(s)})
            w.log_samples([sample_row(s, 10 * s, "new")])
            w.log_hist(s, [0.0, 1.0, 2.0], [0, 0])
            w.log_tokens(token_columns(s, n=2))
    r = StoreReader(tmp_path)
    df = r.scalars(["r1"], [ENTROPY_MEAN])
    assert df["step"].tolist() == list(range(1, 11))
    assert df.set_index("step").loc[[6, 7], "value"].tolist() == [-6.0, -7.0]
    sam = r.samples("r1", 6)
    assert sam.set_index("sample_id").loc[60, "response_text"] == "new" and len(sam) == 2
    assert r.hists("r1").query("step == 6")["count"].tolist() == [0, 0]
    assert len(r.tokens("r1", 7)) == 3  # positions 0-1 replaced, position 2 only in the old segment
    assert r.runs()["n_steps"].tolist() == [10]


def test_events_filter(tmp_path):
    with RunWriter(tmp_path, "a", CONFIG) as w:
        w.log_event(1, "alert_fired", "entropy collapsed", severity="warning")
        w.log_event(2, "alert_resolved", "ok")
    with RunWriter(tmp_path, "b", CONFIG) as w:
        w.log_event(1, "checkpoint", "saved")
    r = StoreReader(tmp_path)
    assert len(r.events()) == 3
    assert r.events(kinds=["alert_fired", "checkpoint"])["run_id"].tolist() == ["a", "b"]
    assert r.events("a", kinds=[]).empty


@pytest.mark.parametrize("group_rows", [compact.ROW_GROUP_ROWS, 5])
def test_compaction_keeps_every_row_and_a_resumed_run_sorts_after_it(tmp_path, monkeypatch, group_rows):
    monkeypatch.setattr(compact, "ROW_GROUP_ROWS", group_rows)
    write_run(tmp_path, steps=6, flush_every_steps=2, flush_every_s=1e9)
    with RunWriter(tmp_path, "r1", CONFIG, resume=True) as w:
        w.log_event(6, "checkpoint", "saved")
    run_dir, r = tmp_path / "r1", StoreReader(tmp_path)
    order = {"steps": ["step", "key"], "tokens": ["step", "sample_id", "position"], "samples": ["step", "sample_id"],
             "hists": ["step", "bin_lo"], "events": ["wall_time"]}  # fmt: skip

    def table(t: str) -> pd.DataFrame:
        return r.table(t, ["r1"]).sort_values(order[t], ignore_index=True)

    before = {t: table(t) for t in TABLES}
    assert len(segments(run_dir, "steps")) == 3
    merged = compact_run(run_dir)
    assert merged["steps"] == 3 and all(len(live_segments(run_dir / t)) == 1 for t in TABLES)
    groups = pq.ParquetFile(live_segments(run_dir / "steps")[0]).num_row_groups
    assert groups == (1 if group_rows > 100 else 2)  # parts of 4 rows: 1+2 reach 5 rows, then 3 alone
    for t in TABLES:
        pd.testing.assert_frame_equal(table(t), before[t])
    with RunWriter(tmp_path, "r1", CONFIG, resume=True) as w:  # a step repeated after the compaction
        w.log_scalars(6, {ENTROPY_MEAN: -1.0})
    assert r.scalars(["r1"], [ENTROPY_MEAN])["value"].tolist()[-1] == -1.0


def test_events_are_read_once_while_a_compaction_replaces_their_segments(tmp_path):
    """Compaction writes the merged segment before removing the parts: a reader may list both at once."""
    with RunWriter(tmp_path, "a", CONFIG) as w:
        w.log_event(1, "alert_fired", "entropy collapsed", severity="warning")
        w.log_event(2, "alert_resolved", "ok")
    parts = segments(tmp_path / "a", "events")
    merged = pa.concat_tables([pq.read_table(p) for p in parts])
    pq.write_table(merged, parts[0].with_name(compact.compacted_name()))
    assert StoreReader(tmp_path).events("a")["kind"].tolist() == ["alert_fired", "alert_resolved"]


# ---- reader: empty, damaged and partial stores -----------------------------------------------------


@pytest.mark.parametrize("exists", [True, False])
def test_empty_store(tmp_path, exists):
    store = tmp_path / "runs" if exists else tmp_path / "missing"
    store.mkdir(exist_ok=True) if exists else None
    r = StoreReader(store)
    assert r.runs().empty and list(r.runs().columns) == list(RUNS_COLUMNS)
    sc = r.scalars(["x"], [ENTROPY_MEAN])
    assert sc.empty and list(sc.columns) == ["run_id", "key", "step", "value", "vmin", "vmax", "wall_time"]
    assert r.keys(["x"]) == [] and r.events().empty


def test_run_without_segments(tmp_path):
    RunWriter(tmp_path, "r1", CONFIG)  # running, nothing logged yet
    r = StoreReader(tmp_path)
    row = r.runs().iloc[0]
    assert row["status"] == "running" and row["n_steps"] == 0 and math.isnan(row["h0"])
    for name, df in [
        ("tokens", r.tokens("r1", 1)),
        ("samples", r.samples("r1", 1)),
        ("hists", r.hists("r1")),
    ]:
        assert df.empty and list(df.columns) == TABLES[name].names
    assert r.steps_with_samples("r1") == []


def test_temp_files_are_never_read(tmp_path):
    write_run(tmp_path, steps=2)
    (tmp_path / "r1" / "steps" / ".00000099-1-deadbeef.parquet.1234abcd.tmp").write_bytes(b"PAR1 half")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert StoreReader(tmp_path).scalars(["r1"], [ENTROPY_MEAN])["step"].tolist() == [1, 2]


def test_truncated_segment_is_skipped_once(tmp_path):
    write_run(tmp_path, steps=3)
    good = segments(tmp_path / "r1", "steps")[0]
    bad = good.with_name("00000099-1-deadbeef.parquet")
    bad.write_bytes(good.read_bytes()[:-20])
    r = StoreReader(tmp_path)
    with pytest.warns(RuntimeWarning, match="deadbeef"):
        assert r.scalars(["r1"], [ENTROPY_MEAN])["step"].tolist() == [1, 2, 3]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # cached: no second warning for the same file version
        assert r.runs()["n_steps"].tolist() == [3]


def test_segment_corrupt_inside_is_skipped(tmp_path):
    write_run(tmp_path, steps=2)
    n = 3000
    data = pa.table(
        {"run_id": ["r1"] * n, "step": range(100, 100 + n), "key": [ENTROPY_MEAN] * n, "value": [1.0] * n,
         "wall_time": [0.0] * n},
        schema=TABLES["steps"],
    )  # fmt: skip
    bad = tmp_path / "r1" / "steps" / "00000099-1-deadbeef.parquet"
    write_parquet_atomic(bad, data)
    col = pq.read_metadata(bad).row_group(0).column(1)  # step: its data pages, footer left intact
    raw = bytearray(bad.read_bytes())
    start = col.data_page_offset + 20
    for i in range(start, start + col.total_compressed_size // 2):
        raw[i] ^= 0x5A
    bad.write_bytes(bytes(raw))
    r = StoreReader(tmp_path)
    with pytest.warns(RuntimeWarning, match="deadbeef"):
        assert r.scalars(["r1"], [ENTROPY_MEAN])["step"].tolist() == [1, 2]


def test_corrupt_or_missing_run_json(tmp_path):
    write_run(tmp_path, "half", steps=3)
    (tmp_path / "half" / "run.json").write_text('{"run_id": "half", "sta')
    write_run(tmp_path, "gone", steps=2)
    (tmp_path / "gone" / "run.json").unlink()
    write_run(tmp_path, "ok", steps=1)
    (tmp_path / "not_a_run").mkdir()
    r = StoreReader(tmp_path)
    df = r.runs().set_index("run_id")
    assert sorted(df.index) == ["gone", "half", "ok"]
    assert df.loc["half", "status"] == "unknown" and df.loc["half", "last_step"] == 3
    assert df.loc["half", "entropy"] == pytest.approx(1.7)
    assert df.loc["gone", "status"] == "unknown" and df.loc["ok", "status"] == "finished"
    assert r.run_info("half") == {"run_id": "half", "status": "unknown"}


def test_a_second_compaction_never_replaces_a_file_a_reader_may_be_scanning(tmp_path):
    """CI found it: the merged segment had one fixed name, so a run compacted, resumed and compacted again
    had that file replaced under a reader, and DuckDB scanning it failed ("don't know what type")."""
    with RunWriter(tmp_path, "r", CONFIG) as w:
        for step in (1, 2):
            w.log_scalars(step, {ENTROPY_MEAN: float(step)})
            w.flush()
    compact_run(tmp_path / "r")
    with RunWriter(tmp_path, "r", CONFIG, resume=True) as w:
        w.log_scalars(3, {ENTROPY_MEAN: 3.0})
    files = sorted((tmp_path / "r" / "steps").glob("*.parquet"))
    before = {p: (p.stat().st_ino, p.stat().st_size, p.stat().st_mtime_ns) for p in files}
    compact_run(tmp_path / "r")
    assert {p: (p.stat().st_ino, p.stat().st_size, p.stat().st_mtime_ns) for p in files} == before
    (merged,) = live_segments(tmp_path / "r" / "steps")
    assert merged not in before and merged.name > max(p.name for p in before if "compacted" in p.name)
    assert StoreReader(tmp_path).scalars(["r"], [ENTROPY_MEAN])["step"].tolist() == [1, 2, 3]
