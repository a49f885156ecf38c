"""Caches keyed by a run's segments (analysis.run_cache): the runs listing, the dashboard's alert counts and
`watch` read again only the runs whose files changed; a damaged cache file is ignored."""

from pathlib import Path

import pytest

from analysis import dashboard_queries as dq
from analysis import run_cache
from analysis import watch as watch_mod
from analysis.run_cache import CACHE_DIR, RunCache, segments_fingerprint
from analysis.schema import ENTROPY_MEAN, REWARD_MEAN
from analysis.store_reader import StoreReader
from analysis.store_writer import RunWriter

CONFIG = {"algo": "grpo", "controller": "none"}


def write(store: Path, run_id: str, values: list[float], resume: bool = False, start: int = 1) -> None:
    with RunWriter(store, run_id, CONFIG, resume=resume) as w:
        for i, h in enumerate(values):
            w.log_scalars(start + i, {ENTROPY_MEAN: h, REWARD_MEAN: 0.5})


def new_process() -> None:
    """Forget what this process cached, as the next CLI call starts without it."""
    run_cache._memory.clear()


@pytest.fixture
def reads(monkeypatch) -> list[list[str]]:
    """The run ids of each summary read from segments."""
    calls: list[list[str]] = []
    original = StoreReader.read_summaries

    def spy(self, run_ids):
        calls.append(sorted(run_ids))
        return original(self, run_ids)

    monkeypatch.setattr(StoreReader, "read_summaries", spy)
    return calls


def test_summaries_of_some_runs_keep_the_others_cached(tmp_path, reads):
    """Compare's H0 of the chosen runs must not drop the rest of the store from the listing's cache."""
    for run_id in ("a", "b", "c"):
        write(tmp_path, run_id, [1.0] * 5)
    StoreReader(tmp_path).runs()
    assert StoreReader(tmp_path).summaries(["a"])["h0"].tolist() == [1.0]
    new_process()
    StoreReader(tmp_path).runs()
    assert reads == [["a", "b", "c"]]


@pytest.mark.parametrize("same_process", [True, False])
def test_runs_rereads_only_changed_runs(tmp_path, reads, same_process):
    write(tmp_path, "a", [1.0] * 20)
    write(tmp_path, "b", [0.8] * 20)
    first = StoreReader(tmp_path).runs().set_index("run_id")
    assert reads == [["a", "b"]] and first.loc["b", "entropy"] == pytest.approx(0.8)
    if not same_process:
        new_process()
    assert (tmp_path / CACHE_DIR / "run_summaries.json").is_file()

    write(tmp_path, "b", [0.2] * 20, resume=True, start=21)  # a new segment of b only
    again = StoreReader(tmp_path).runs().set_index("run_id")
    assert reads == [["a", "b"], ["b"]]
    assert again.loc["b", "n_steps"] == 40 and again.loc["b", "entropy"] == pytest.approx(0.2)
    assert again.loc["a"].drop("heartbeat_age_s").equals(first.loc["a"].drop("heartbeat_age_s"))

    StoreReader(tmp_path).runs()
    assert reads == [["a", "b"], ["b"]]  # nothing changed: nothing read


def test_cached_listing_equals_a_fresh_read(tmp_path):
    write(tmp_path, "a", [1.0, float("nan"), 0.5])
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "run.json").write_text('{"status": "finished"}')
    fresh = StoreReader(tmp_path).runs()
    new_process()
    cached = StoreReader(tmp_path).runs()
    assert fresh.drop(columns="heartbeat_age_s").equals(cached.drop(columns="heartbeat_age_s"))


@pytest.mark.parametrize(
    "content", ["{not json", '{"version": "other", "runs": {}}', '{"version": 1, "runs": 3}', "[]"]
)
def test_a_damaged_cache_file_is_ignored(tmp_path, reads, content):
    write(tmp_path, "a", [1.0] * 10)
    expected = StoreReader(tmp_path).runs().loc[0, "entropy"]
    new_process()
    (tmp_path / CACHE_DIR / "run_summaries.json").write_text(content)
    assert StoreReader(tmp_path).runs().loc[0, "entropy"] == expected
    assert reads == [["a"], ["a"]]


def test_a_wrong_cached_value_under_another_fingerprint_is_not_used(tmp_path):
    cache = RunCache(tmp_path, "x.json", "v1")
    cache.put("a", [["s.parquet", 1, 2]], 7)
    cache.save(["a", "gone"])
    new_process()
    again = RunCache(tmp_path, "x.json", "v1")
    assert again.get("a", [["s.parquet", 1, 2]]) == 7
    assert again.get("a", [["s.parquet", 1, 3]]) is None  # touched: a new mtime
    assert again.get("a", None) is None  # listing raced a compaction
    assert RunCache(tmp_path, "x.json", "v2").get("a", [["s.parquet", 1, 2]]) is None


def test_fingerprint_follows_live_segments(tmp_path):
    write(tmp_path, "a", [1.0] * 5)
    fp = segments_fingerprint(tmp_path / "a", "steps")
    names = [p.name for p in (tmp_path / "a" / "steps").glob("*.parquet")]
    assert [f[0] for f in fp] == sorted(names)
    assert segments_fingerprint(tmp_path / "a", "tokens") == []  # no folder: no segments


def test_a_read_only_store_lists_without_a_cache(tmp_path, monkeypatch):
    write(tmp_path, "a", [1.0] * 10)

    def refuse(path, data):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(run_cache, "write_bytes_atomic", refuse)
    assert StoreReader(tmp_path).runs().loc[0, "n_steps"] == 10
    assert not (tmp_path / CACHE_DIR).exists()


def test_active_alerts_reread_only_changed_runs(tmp_path, monkeypatch):
    from analysis.store_writer import write_events

    write(tmp_path, "a", [1.0] * 5)
    write(tmp_path, "b", [1.0] * 5)
    write_events(tmp_path / "a", [(3, "alert_fired", "critical", "collapse", {"rule": "collapse"})])
    queried: list[list[str] | None] = []
    original = StoreReader.query

    def spy(self, sql, params, tables, run_ids):
        if tables == ["events"]:
            queried.append(sorted(run_ids) if run_ids is not None else None)
        return original(self, sql, params, tables, run_ids)

    monkeypatch.setattr(StoreReader, "query", spy)
    assert dq.active_alerts(StoreReader(tmp_path)) == {"a": 1}
    new_process()
    write_events(tmp_path / "b", [(4, "alert_fired", "warning", "x", {"rule": "x"})])
    assert dq.active_alerts(StoreReader(tmp_path)) == {"a": 1, "b": 1}
    assert queried == [["a", "b"], ["b"]]


def test_watch_does_not_reread_unchanged_ended_runs(tmp_path, monkeypatch):
    collapse = [max(0.3, 1.0 - 0.0175 * i) for i in range(60)]
    write(tmp_path, "ended", collapse)
    live = RunWriter(tmp_path, "live", CONFIG)  # running while watched
    for i in range(5):
        live.log_scalars(i + 1, {ENTROPY_MEAN: 1.0})
    live.flush()
    judged: list[str] = []
    original = watch_mod.evaluate

    def spy(series, rules, **kw):
        judged.append(kw["status"])
        return original(series, rules, **kw)

    monkeypatch.setattr(watch_mod, "evaluate", spy)
    lines: list[str] = []
    code = watch_mod.watch(tmp_path, once=True, out=lines.append)
    assert judged == ["finished", "running"] and code == 1  # collapse is critical
    firing = lines[-1]
    assert "ended/collapse" in firing

    for _ in range(2):  # a later call, in this process and in a new one: the ended run is not judged again
        judged.clear()
        lines.clear()
        assert watch_mod.watch(tmp_path, once=True, out=lines.append) == 1
        assert judged == ["running"] and lines == [firing]
        new_process()

    write(tmp_path, "ended", [1.0] * 40, resume=True, start=61)  # recovers: its steps changed
    judged.clear()
    lines.clear()
    assert watch_mod.watch(tmp_path, once=True, out=lines.append) == 0
    assert judged == ["finished", "running"] and "ended/collapse" not in lines[-1]
    live.close()
