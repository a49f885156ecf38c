"""`entropyscope compare` on a store written by the store writer (no training): the table, the exact --json
shape, finished runs only, and one-line errors with exit code 2."""

import json

import numpy as np
import pytest

from analysis.schema import ENTROPY_MEAN, REWARD_MEAN
from analysis.store_writer import RunWriter
from trainer.cli import main

SEEDS = range(6)
STEPS = 20


def write_run(store, run_id: str, controller: str, seed: int, final: float, status: str = "finished") -> None:
    """A 20-step run whose entropy falls from 1.0 to `final` (its last 2 steps, the last 10%, sit at `final`)."""
    trace = np.r_[np.linspace(1.0, final, STEPS - 2), [final, final]]
    sweep = {"id": "s1", "params": {"controller": controller, "lr": 0.0}, "seed": seed}
    config = {"model": "tiny-qwen2", "controller": controller, "lr": 0.0, "seed": seed}
    w = RunWriter(store, run_id, config, meta={"sweep": sweep})
    for step, h in enumerate(trace, start=1):
        w.log_scalars(step, {ENTROPY_MEAN: float(h)} | ({REWARD_MEAN: 0.5} if controller == "none" else {}))
    w.close(status)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    store = tmp_path_factory.mktemp("store")
    rng = np.random.default_rng(0)
    for seed in SEEDS:
        write_run(store, f"repo-{seed}", "repo_r", seed, 0.6 + 0.02 * rng.standard_normal())
        write_run(store, f"none-{seed}", "none", seed, 0.2 + 0.02 * rng.standard_normal())
    write_run(store, "repo-9", "repo_r", 9, 5.0, status="running")  # half done: not a final value
    write_run(store, "repo-8", "repo_r", 8, 5.0, status="failed")
    return store


def test_compare_json_has_exactly_the_contract_fields(store, capsys):
    args = ["compare", "controller=repo_r, lr=0.0", "sweep=s1:controller=none,lr=0", "--metric", ENTROPY_MEAN]
    assert main([*args, "--store", str(store), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert list(doc) == ["metric", "groups", "pairs"] and doc["metric"] == ENTROPY_MEAN
    repo, none = doc["groups"]
    assert list(repo) == ["name", "runs", "mean", "iqm", "ci"]
    assert repo["name"] == "controller=repo_r, lr=0.0"
    assert repo["runs"] == [f"repo-{s}" for s in SEEDS]  # the running and the failed run are left out
    assert none["name"] == "sweep=s1:controller=none,lr=0" and len(none["runs"]) == 6
    assert repo["ci"][0] < repo["iqm"] < repo["ci"][1] and 0.55 < repo["mean"] < 0.65
    [pair] = doc["pairs"]
    assert list(pair) == ["a", "b", "ratio", "ratio_ci", "p_improvement", "p_ci", "verdict"]
    assert pair["ratio"] == pytest.approx(repo["iqm"] / none["iqm"])
    assert pair["ratio_ci"][0] < pair["ratio"] < pair["ratio_ci"][1]
    assert pair["p_improvement"] == 1.0 and pair["p_ci"] == [1.0, 1.0]
    assert pair["verdict"] == (
        "controller=repo_r, lr=0.0 keeps more entropy than sweep=s1:controller=none,lr=0: P = 1.00 [1.00, 1.00], "
        "6 seeds each"
    )


def test_compare_prints_the_table_and_verdicts(store, capsys):
    assert (
        main(
            ["compare", "sweep=s1:controller=none", "repo-9", "--metric", ENTROPY_MEAN, "--store", str(store)]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "mean [95% CI]" in out and "IQM [95% CI]" in out and "P(A > B)" in out
    # a run named by id counts whatever its status; 1 seed cannot tell anything apart
    assert "not distinguishable from seed noise with 6 and 1 seeds" in out


def test_a_group_without_finished_runs_is_refused_and_runs_missing_the_metric_are_left_out(store, capsys):
    code = main(["compare", "sweep=s1:controller=repo_r", "sweep=s1:controller=none", "--metric", REWARD_MEAN,
                 "--store", str(store)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert (
        "has no finished run with a final value" in err
        and "repo-0 (no value)" in err
        and "repo-9 (running)" in err
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope", "repo-1"], "no run, group or sweep 'nope'"),
        (["sweep=s9:lr=0", "repo-1"], "no sweep 's9' in the store; sweeps: s1"),
        (["sweep=s1:lr", "repo-1"], "expected key=value"),
        (["repo-1", "repo-2", "--metric", "nope/key"], "no run of these groups logged 'nope/key'"),
    ],
)
def test_bad_input_is_one_line_with_exit_code_2(store, capsys, args, message):
    metric = [] if "--metric" in args else ["--metric", ENTROPY_MEAN]
    assert main(["compare", *args, *metric, "--store", str(store)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_an_empty_store_says_so(tmp_path, capsys):
    assert main(["compare", "a", "b", "--metric", ENTROPY_MEAN, "--store", str(tmp_path)]) == 2
    assert "no runs in store" in capsys.readouterr().err


def test_help_has_an_example(capsys):
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    assert "example: entropyscope compare" in capsys.readouterr().out


def test_a_selection_pooling_several_settings_is_refused(tmp_path, capsys):
    """`sweep=ID:key=value` that leaves another swept key open would count two settings as seeds of one."""
    for seed in (0, 1):
        for lr in (0.1, 0.2):
            w = RunWriter(tmp_path, f"r-{lr}-{seed}", {"lr": lr, "seed": seed},
                          meta={"sweep": {"id": "s", "params": {"controller": "none", "lr": lr}, "seed": seed}})  # fmt: skip
            w.log_scalars(1, {ENTROPY_MEAN: 0.5})
            w.close("finished")
    code = main(["compare", "sweep=s:controller=none", "sweep=s:lr=0.1", "--metric", ENTROPY_MEAN,
                 "--store", str(tmp_path)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "pools 2 settings of sweep 's' (controller=none, lr=0.1; controller=none, lr=0.2)" in err
    assert "e.g. sweep=s:controller=none,lr=0.1" in err
