"""analysis.sweeps: a sweep's runs, settings and ranking (IQM, CIs and verdicts from analysis.stats), its run
counts, and the runs listing's sweep and group columns."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_sweeps_page import REWARD, SEEDS, SWEEP, run_id, write_grid

from analysis import stats
from analysis.groups import Group
from analysis.schema import ENTROPY_MEAN, PASS_AT_K, REWARD_MEAN
from analysis.store_reader import StoreReader
from analysis.store_writer import RunWriter
from analysis.sweeps import (
    METRICS,
    analyse,
    key_values,
    rank,
    read_manifest,
    settings,
    status_counts,
    sweep_dir,
    sweep_ids,
    sweep_runs,
)


def info(sweep: str | None, created: float, status: str = "finished", **params) -> dict:
    doc = {"status": status, "created": created, "config": {"seed": 0, **params}}
    return doc | ({"sweep": {"id": sweep, "params": params, "seed": 0}} if sweep else {})


def test_sweep_ids_newest_first_then_manifests_without_runs(tmp_path: Path) -> None:
    infos = {"a0": info("old", 1.0, lr=1), "b0": info("new", 5.0, lr=1), "b1": info("new", 2.0, lr=2),
             "p": info(None, 9.0)}  # fmt: skip
    for sid in ("old", "starting"):
        sweep_dir(tmp_path, sid).mkdir(parents=True)
        (sweep_dir(tmp_path, sid) / "sweep.json").write_text(json.dumps({"id": sid, "runs": ["x"]}))
    assert sweep_ids(tmp_path, infos) == ["new", "old", "starting"]
    assert sweep_runs(infos, "new") == ["b0", "b1"]
    assert read_manifest(tmp_path, "starting") == {"id": "starting", "runs": ["x"]}
    (sweep_dir(tmp_path, "old") / "sweep.json").write_text("{half")
    assert read_manifest(tmp_path, "old") == {} and read_manifest(tmp_path, "nope") == {}


def test_status_counts_name_runs_not_started() -> None:
    counts = status_counts({"a": "finished", "b": "running", "c": "failed", "d": "killed", "e": "finished"},
                           expected=["a", "b", "c", "d", "e", "f", "g"])  # fmt: skip
    assert counts == {"finished": 2, "running": 1, "failed": 1, "other": 1, "not started": 2}


def test_key_values_order_numbers_by_value_then_text() -> None:
    groups = [Group(str(i), (str(i),), {"k": v}) for i, v in enumerate([1.0, "b", 0.25, True, "a", 10, 0.25])]
    assert key_values(groups, "k") == [0.25, 1.0, 10, "a", "b", True]


def groups_of(values: dict[str, list[float]]) -> tuple[list[Group], dict, dict]:
    """Groups named by `values`' keys, each of finished runs with those final values."""
    groups, infos, finals = [], {}, {}
    for name, vals in values.items():
        ids = tuple(f"{name}-{i}" for i in range(len(vals)))
        groups.append(Group(name, ids, {"x": name}))
        infos |= {r: {"status": "finished"} for r in ids}
        finals |= dict(zip(ids, vals, strict=True))
    return groups, infos, finals


def test_rank_best_ties_and_beaten_follow_the_verdict_rule() -> None:
    rng = np.random.default_rng(3)
    values = {"hi": list(1.0 + 0.05 * rng.standard_normal(8)), "near": list(0.99 + 0.05 * rng.standard_normal(8)),
              "lo": list(0.5 + 0.05 * rng.standard_normal(8))}  # fmt: skip
    groups, infos, finals = groups_of(values)
    found = settings(groups, infos, finals)
    ranking = rank(found, REWARD_MEAN, "maximize")
    assert ranking.best.group.name == max(values, key=lambda k: stats.iqm(values[k]))
    other = "near" if ranking.best.group.name == "hi" else "hi"
    assert [s.group.name for s, _ in ranking.ties] == [other]
    assert [s.group.name for s, _ in ranking.beaten] == ["lo"]
    pair = stats.pair_stats(values[ranking.best.group.name], values["lo"])
    assert ranking.beaten[0][1] == stats.verdict(
        ranking.best.group.name, "lo", pair, "ends with higher reward/mean"
    )
    assert not stats.distinguishable(*_p(values[ranking.best.group.name], values[other]))
    assert rank(found, REWARD_MEAN, "minimize").best.group.name == "lo"
    with pytest.raises(ValueError, match="goal"):
        rank(found, REWARD_MEAN, "best")


def _p(a: list[float], b: list[float]) -> tuple[tuple[float, float], float]:
    pair = stats.pair_stats(a, b)
    return pair.p_ci, pair.p_value


def test_settings_count_finished_runs_with_a_value_only() -> None:
    groups, infos, finals = groups_of({"a": [1.0, 2.0, 3.0], "b": [4.0]})
    infos["a-2"] = {"status": "running"}
    finals["a-1"] = math.nan
    a, b = settings(groups, infos, finals)
    assert a.values == {"a-0": 1.0} and a.left_out == ("a-1 (no value)", "a-2 (running)")
    assert a.stats.n == 1 and b.stats.iqm == 4.0
    groups, infos, finals = groups_of({"c": [1.0]})
    infos["c-0"] = {"status": "failed"}
    (c,) = settings(groups, infos, finals)
    assert c.stats is None and rank([c], REWARD_MEAN, "maximize") is None


def test_analyse_a_sweep_with_runs_still_running(tmp_path: Path) -> None:
    ids = write_grid(tmp_path, unfinished=2)
    reader = StoreReader(tmp_path)
    infos = {r: json.loads((tmp_path / r / "run.json").read_text()) for r in ids}
    result = analyse(reader, infos, SWEEP, METRICS, REWARD_MEAN, "maximize")
    assert result.keys == ["controller", "target_entropy"] and len(result.groups) == len(REWARD)
    assert set(result.by_metric) == {ENTROPY_MEAN, REWARD_MEAN, PASS_AT_K}  # distinct_correct: never logged
    last = next(s for s in result.by_metric[REWARD_MEAN] if s.group.run_ids[-1] == ids[-1])
    assert last.stats.n == len(SEEDS) - 2 and len(last.left_out) == 2  # the running two are not final
    assert result.finals.loc[run_id("none", 0.4, 0), PASS_AT_K] == pytest.approx(0.9)
    assert result.ranking.best.group.params["controller"] == "repo_r"


def test_runs_listing_names_each_runs_sweep_and_group(tmp_path: Path) -> None:
    write_grid(tmp_path)
    with RunWriter(tmp_path, "by-hand", {"model": "tiny-qwen2", "seed": 0}) as w:
        w.log_scalars(1, {REWARD_MEAN: 0.5})
    runs = StoreReader(tmp_path).runs().set_index("run_id")
    assert runs.loc[run_id("repo_r", 0.4, 1), "sweep"] == SWEEP
    assert runs.loc[run_id("repo_r", 0.4, 1), "group"] == "controller=repo_r, target_entropy=0.4"
    assert pd.isna(runs.loc["by-hand", "sweep"]) and runs.loc["by-hand", "group"] == "by-hand"


def test_a_damaged_sweep_field_makes_no_sweep_run(tmp_path: Path) -> None:
    infos = {"a": info("s", 1.0, lr=1), "b": {"sweep": {"id": "s", "params": "lr=1"}}, "c": {"sweep": "s"}}
    assert sweep_runs(infos, "s") == ["a"] and sweep_ids(tmp_path, infos) == ["s"]
