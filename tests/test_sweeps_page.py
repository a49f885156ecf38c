"""The Sweeps page (AppTest) and analysis.sweeps over a store written by hand: a 2 x 2 grid at 4 seeds, each
run's run.json carrying its sweep values and a `.sweeps/<id>/sweep.json` manifest, as `entropyscope sweep`
writes them (no training)."""

import json
from pathlib import Path

import numpy as np
import pytest
from test_app_pages import assert_clean, figures, open_page, values
from test_compare_page import write_sweep

from analysis.schema import ENTROPY_MEAN, PASS_AT_K, REWARD_MEAN
from analysis.store_writer import RunWriter
from analysis.sweeps import MANIFEST, sweep_dir

SWEEP = "grid"
SEEDS = range(4)
STEPS = 20
# (controller, target) -> final reward; entropy ends at target / 2
REWARD = {("repo_r", 0.4): 0.8, ("repo_r", 0.8): 0.795, ("none", 0.4): 0.3, ("none", 0.8): 0.31}


def run_id(controller: str, target: float, seed: int) -> str:
    return f"{SWEEP}-{controller}-{target}-s{seed}"


def write_grid(
    store: Path, unfinished: int = 0, pending: int = 0, left_open: list | None = None
) -> list[str]:
    """The grid's runs (the last `unfinished` left running), a manifest naming `pending` runs not yet started;
    returns the run ids."""
    rng = np.random.default_rng(0)
    ids = []
    for (controller, target), reward in REWARD.items():
        for seed in SEEDS:
            params = {"controller": controller, "target_entropy": target}
            meta = {"sweep": {"id": SWEEP, "params": params, "seed": seed}}
            rid = run_id(controller, target, seed)
            w = RunWriter(store, rid, {"model": "tiny-qwen2", **params, "seed": seed}, meta=meta)
            end = reward + 0.02 * rng.standard_normal()
            for step, frac in enumerate(np.linspace(0, 1, STEPS), start=1):
                w.log_scalars(step, {REWARD_MEAN: float(0.2 + frac * (end - 0.2)),
                                     ENTROPY_MEAN: float(1.0 - frac * (1.0 - target / 2)),
                                     PASS_AT_K: 0.9})  # fmt: skip
            ids.append(rid)
            if len(ids) <= len(REWARD) * len(SEEDS) - unfinished:
                w.close()
            else:
                w.flush()  # left running
                if left_open is not None:
                    left_open.append(w)
    manifest = {"id": SWEEP, "metric": {"name": REWARD_MEAN, "goal": "maximize"},
                "runs": ids + [f"{SWEEP}-pending-{i}" for i in range(pending)]}  # fmt: skip
    sweep_dir(store, SWEEP).mkdir(parents=True, exist_ok=True)
    (sweep_dir(store, SWEEP) / MANIFEST).write_text(json.dumps(manifest))
    return ids


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("sweeps") / "store"
    write_grid(store)
    return store


def test_sweeps_page_plots_each_metric_against_each_key(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = open_page(store, "sweeps", monkeypatch, sweep=SWEEP)
    assert_clean(at)
    panels = [f["layout"]["meta"]["panel"] for f in figures(at)]
    assert panels == [f"sweep:{m}:{k}" for m in (REWARD_MEAN, ENTROPY_MEAN, PASS_AT_K)
                      for k in ("controller", "target_entropy")] + ["sweep:parcoords"]  # fmt: skip
    fig = figures(at)[0]
    assert fig["layout"]["yaxis"]["title"]["text"] == "reward/mean (reward)"
    dots = [t for t in fig["data"] if t["name"].endswith(" runs")]
    assert len(dots) == 4 and sum(len(values(t["y"])) for t in dots) == 16
    iqm = {t["name"]: t for t in fig["data"] if "(n=" in t["name"]}
    assert sorted(iqm) == sorted(f"controller={c}, target_entropy={t} (n=4)" for c, t in REWARD)
    for t in iqm.values():
        lo, hi = values(t["error_y"]["arrayminus"])[0], values(t["error_y"]["array"])[0]
        assert lo >= 0 and hi >= 0 and lo + hi > 0  # a real interval around the IQM
    assert "Sweep `'grid'`: 16 finished · 0 running · 0 failed" in at.caption[0].value
    texts = [t.value for t in at.text]
    best, tie, beaten = texts
    assert best.startswith("controller=repo_r, target_entropy=") and best.endswith("n = 4")
    # the two repo_r settings end 0.005 apart: not told apart at 4 seeds; both `none` settings are beaten
    assert (
        "not distinguishable from seed noise with 4 seeds each" in tie and tie.count("controller=repo_r") == 2
    )
    assert [line.split(" ends with higher reward/mean than ")[1].split(":")[0] for line in beaten.splitlines()] == [
        "controller=none, target_entropy=0.4", "controller=none, target_entropy=0.8"]  # fmt: skip


def test_sweeps_page_live_counts_and_objective_from_the_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_grid(tmp_path, unfinished=2, pending=3)
    at = open_page(tmp_path, "sweeps", monkeypatch, metric=ENTROPY_MEAN, goal="minimize")
    assert_clean(at)
    assert (at.selectbox(key="metric").value, at.selectbox(key="goal").value) == (ENTROPY_MEAN, "minimize")
    assert at.selectbox(key="sweep").value == SWEEP  # the only sweep, chosen without a URL
    captions = [c.value for c in at.caption]
    assert "14 finished · 2 running · 0 failed · 3 not started" in captions[0]
    assert any(c.startswith("Live:") for c in captions)
    best = at.text[0].value
    assert best.startswith("controller=") and "target_entropy=0.4: IQM 0.2" in best  # lowest final entropy
    # the entropy charts come first: the objective's
    assert figures(at)[0]["layout"]["meta"]["panel"] == f"sweep:{ENTROPY_MEAN}:controller"


def test_sweeps_page_says_when_there_is_no_sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with RunWriter(tmp_path, "plain", {"seed": 0}) as w:
        w.log_scalars(1, {REWARD_MEAN: 0.5})
    at = open_page(tmp_path, "sweeps", monkeypatch)
    assert_clean(at)
    assert [i.value for i in at.info] == [
        f"No sweep in `{tmp_path}` yet. Start one with `entropyscope sweep SPEC.yaml --store {tmp_path}` "
        "(docs/sweeps.md)."
    ]


def test_sweeps_page_names_an_unknown_sweep_in_the_url(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = open_page(store, "sweeps", monkeypatch, sweep="nope")
    assert_clean(at)
    assert "names no sweep of this store" in at.error[0].value
    assert at.selectbox(key="sweep").value == SWEEP and figures(at)  # the newest sweep, shown


@pytest.fixture(scope="module")
def mixed_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The grid and two runs made by hand, at two seeds of one config."""
    store = tmp_path_factory.mktemp("mixed") / "store"
    write_grid(store)
    for seed in (0, 1):
        with RunWriter(store, f"by-hand-{seed}", {"model": "tiny-qwen2", "lr": 0.01, "seed": seed}) as w:
            w.log_scalars(1, {REWARD_MEAN: 0.5})
    return store


def test_runs_table_filters_by_sweep_and_group(mixed_store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = open_page(mixed_store, "runs", monkeypatch, in_sweep=SWEEP)
    assert_clean(at)
    table = at.dataframe[0].value
    assert sorted(table["run_id"]) == sorted(run_id(c, t, s) for c, t in REWARD for s in SEEDS)
    assert "sweep" in at.multiselect(key="in_sweep").label and at.multiselect(key="in_sweep").options == [
        SWEEP,
        "–",
    ]
    at = open_page(mixed_store, "runs", monkeypatch, in_group="controller=none, target_entropy=0.8")
    assert sorted(at.dataframe[0].value["run_id"]) == [run_id("none", 0.8, s) for s in SEEDS]
    at = open_page(mixed_store, "runs", monkeypatch, in_sweep="–")
    assert sorted(at.dataframe[0].value["run_id"]) == ["by-hand-0", "by-hand-1"]


def test_runs_table_groups_rows_by_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_grid(tmp_path, unfinished=1)
    with RunWriter(tmp_path, "by-hand", {"model": "tiny-qwen2", "lr": 0.01, "seed": 0}) as w:
        w.log_scalars(1, {REWARD_MEAN: 0.5})
    at = open_page(tmp_path, "runs", monkeypatch, by="group")
    assert_clean(at)
    table = at.dataframe[0].value
    # the group's name first; source gives it its room, so the table still fits beside the heartbeat
    assert list(table.columns[:2]) == ["by", "run_id"] and "heartbeat_age" in table and "source" not in table
    assert at.caption[0].value.startswith(
        f"{len(REWARD) * len(SEEDS) + 1} of {len(REWARD) * len(SEEDS) + 1} runs in 5 by group"
    )
    order = table["by"].tolist()
    assert order == sorted(order) and len(set(order)) == len(REWARD) + 1  # each group's rows together


def test_one_key_no_manifest_no_reward(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sweep of one key whose runs logged entropy only and left no sweep.json: the objective falls back to a
    logged metric, and there is no parallel-coordinates view."""
    write_sweep(tmp_path)
    at = open_page(tmp_path, "sweeps", monkeypatch)
    assert_clean(at)
    assert at.selectbox(key="metric").value == ENTROPY_MEAN
    assert [f["layout"]["meta"]["panel"] for f in figures(at)] == [f"sweep:{ENTROPY_MEAN}:controller"]
    assert at.text[0].value.startswith("controller=repo_r: IQM 0.6")
    assert "8 finished · 0 running · 0 failed" in at.caption[0].value
