"""Sealed runs (analysis.run_seal): whoever ends a run writes its listing values into `<run>/.summary.json`,
so the first `runs`, `watch --once` and alert count on a store nobody listed before read no segment of it;
an entry whose fingerprint no longer matches is ignored, and a read-only store still lists."""

import json
import shutil
from pathlib import Path

import pytest

from analysis import dashboard_queries as dq
from analysis import run_cache
from analysis import watch as watch_mod
from analysis.compact import compact_runs
from analysis.run_cache import CACHE_DIR, RUN_FILE
from analysis.run_seal import seal_run
from analysis.schema import ENTROPY_MEAN, REWARD_MEAN
from analysis.store_reader import StoreReader
from analysis.store_writer import RunWriter

CONFIG = {"algo": "grpo", "controller": "none"}


def write(store: Path, run_id: str, values: list[float], resume: bool = False, start: int = 1) -> None:
    with RunWriter(store, run_id, CONFIG, resume=resume) as w:
        for i, h in enumerate(values):
            w.log_scalars(start + i, {ENTROPY_MEAN: h, REWARD_MEAN: 0.5})


def first_look(store: Path) -> None:
    """As a process that never saw the store: no cache in memory, none on disk."""
    run_cache._memory.clear()
    shutil.rmtree(store / CACHE_DIR, ignore_errors=True)
    (store / watch_mod.FULL_CACHE).unlink(missing_ok=True)


@pytest.fixture
def segment_reads(monkeypatch) -> list[tuple[str, ...]]:
    """(tables, run ids) of every StoreReader query and the run ids of every watch judgment."""
    calls: list[tuple[str, ...]] = []
    query, evaluate = StoreReader.query, watch_mod.evaluate

    def spy_query(self, sql, params, tables, run_ids):
        calls.append((*tables, *(run_ids if run_ids is not None else ["*"])))
        return query(self, sql, params, tables, run_ids)

    def spy_evaluate(series, rules, **kw):
        calls.append(("judged", kw["status"]))
        return evaluate(series, rules, **kw)

    monkeypatch.setattr(StoreReader, "query", spy_query)
    monkeypatch.setattr(watch_mod, "evaluate", spy_evaluate)
    return calls


def test_a_sealed_run_is_listed_watched_and_counted_without_reading_it(tmp_path, segment_reads):
    write(tmp_path, "a", [1.0, 0.9, float("nan"), 0.95] * 5)
    first_look(tmp_path)
    expected = StoreReader(tmp_path).runs()
    expected_watch: list[str] = []
    watch_mod.watch(tmp_path, once=True, out=expected_watch.append)  # records the NaN's alert events
    expected_counts = dq.active_alerts(StoreReader(tmp_path))
    assert seal_run(tmp_path / "a") and (tmp_path / "a" / RUN_FILE).is_file()

    first_look(tmp_path)
    segment_reads.clear()
    listed = StoreReader(tmp_path).runs()
    lines: list[str] = []
    code = watch_mod.watch(tmp_path, once=True, out=lines.append)
    counts = dq.active_alerts(StoreReader(tmp_path))
    assert segment_reads == []  # no segment of the sealed run was read, no judgment made
    cols = [c for c in listed.columns if c != "heartbeat_age_s"]
    assert listed[cols].equals(expected[cols])
    assert code == 0 and lines == expected_watch[-1:] and counts == expected_counts


def test_a_sealed_entry_with_another_fingerprint_is_ignored(tmp_path, segment_reads):
    write(tmp_path, "a", [1.0] * 10)
    seal_run(tmp_path / "a")
    write(tmp_path, "a", [0.2] * 10, resume=True, start=11)  # resumed: a new segment, the seal outdated
    first_look(tmp_path)
    segment_reads.clear()
    row = StoreReader(tmp_path).runs().iloc[0]
    assert ("steps", "a") in segment_reads and row["n_steps"] == 20

    entries = json.loads((tmp_path / "a" / RUN_FILE).read_text())
    entries["run_summaries.json"][2]["n_steps"] = (
        999  # a wrong value under a fingerprint that no longer holds
    )
    (tmp_path / "a" / RUN_FILE).write_text(json.dumps(entries))
    first_look(tmp_path)
    assert StoreReader(tmp_path).runs().iloc[0]["n_steps"] == 20


def test_a_read_only_store_lists_with_and_without_seals(tmp_path, monkeypatch, segment_reads):
    write(tmp_path, "sealed", [1.0] * 10)
    seal_run(tmp_path / "sealed")
    write(tmp_path, "plain", [0.5] * 10)

    def refuse(path, data):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(run_cache, "write_bytes_atomic", refuse)
    assert not seal_run(tmp_path / "plain") and not (tmp_path / "plain" / RUN_FILE).exists()
    first_look(tmp_path)
    segment_reads.clear()
    runs = StoreReader(tmp_path).runs().set_index("run_id")
    assert list(runs["n_steps"]) == [10, 10] and not (tmp_path / CACHE_DIR).exists()
    assert [c for c in segment_reads if c[0] == "steps"] == [("steps", "plain")]


def test_a_running_run_is_not_sealed_and_a_collapsed_unjudged_run_leaves_the_watch_to_record(tmp_path):
    live = RunWriter(tmp_path, "live", CONFIG)
    live.log_scalars(1, {ENTROPY_MEAN: 1.0})
    live.flush()
    assert not seal_run(tmp_path / "live")
    live.close()

    write(tmp_path, "collapsed", [max(0.3, 1.0 - 0.0175 * i) for i in range(60)])
    assert seal_run(tmp_path / "collapsed")
    entries = json.loads((tmp_path / "collapsed" / RUN_FILE).read_text())
    assert watch_mod.ENDED_CACHE not in entries  # judging it would record transitions: the watch does that
    first_look(tmp_path)
    lines: list[str] = []
    assert watch_mod.watch(tmp_path, once=True, out=lines.append) == 1 and "collapsed/collapse" in lines[-1]


def test_compaction_seals_ended_runs_only(tmp_path):
    write(tmp_path, "done", [1.0] * 5)
    write(tmp_path, "done", [1.0] * 5, resume=True, start=6)
    live = RunWriter(tmp_path, "live", CONFIG)
    live.log_scalars(1, {ENTROPY_MEAN: 1.0})
    live.heartbeat(1, force=True)
    list(compact_runs([tmp_path / "done", tmp_path / "live"]))
    assert (tmp_path / "done" / RUN_FILE).is_file() and not (tmp_path / "live" / RUN_FILE).exists()
    live.close()


def test_the_trainer_and_import_seal_what_they_end(tmp_path, segment_reads):
    from analysis.importers.importer import import_source
    from trainer.loop import compact_finished

    write(tmp_path, "trained", [1.0] * 5)
    write(tmp_path, "trained", [0.9] * 5, resume=True, start=6)  # two segments: the trainer merges them
    assert compact_finished(tmp_path / "trained")
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps({"step": s, "entropy/mean": 1.0}) + "\n" for s in range(5)))
    (run,) = import_source(str(log), store=tmp_path / "store")
    for store in (tmp_path, tmp_path / "store"):  # listed and watched first by a new process: nothing read
        first_look(store)
        segment_reads.clear()
        assert StoreReader(store).runs().iloc[0]["n_steps"] in (10, 5)
        assert watch_mod.watch(store, once=True, out=lambda line: None) == 0
        assert segment_reads == []
    assert (tmp_path / "store" / run.run_id / RUN_FILE).is_file()
