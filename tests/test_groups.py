"""Groups over seeds (analysis.groups): by sweep values or by config minus seed/run id/store, names that read as
the differing keys, and the selections `entropyscope compare` takes."""

import pytest

from analysis.errors import UsageError
from analysis.groups import find_groups, group_by_options, group_runs, parse_pairs, same_value, select


def sweep_run(sweep: str, seed: int, **params) -> dict:
    config = {"model": "tiny-qwen2", "steps": 50, "seed": seed, **params}
    return {"config": config, "status": "finished", "sweep": {"id": sweep, "params": params, "seed": seed}}


def plain_run(seed: int, run_id: str, **config) -> dict:
    return {"config": {"model": "tiny-qwen2", "seed": seed, "run_id": run_id, "store": f"/s{seed}", **config}}


@pytest.fixture
def infos() -> dict[str, dict]:
    runs = {
        f"s1-{c}-{t}-{seed}": sweep_run("s1", seed, controller=c, target_entropy=t)
        for c in ("repo_r", "none")
        for t in (0.4, 0.8)
        for seed in (0, 1, 2)
    }
    runs |= {f"lr-{seed}": sweep_run("s2", seed, lr=0.0) for seed in (0, 1)}
    runs |= {f"g{seed}": plain_run(seed, f"g{seed}", controller="none", lr=1e-3) for seed in (0, 1, 2)}
    runs |= {f"r{seed}": plain_run(seed, f"r{seed}", controller="repo_r", lr=1e-3) for seed in (0, 1)}
    return runs


def test_runs_differing_only_in_seed_form_one_group(infos):
    groups = {g.name: g.run_ids for g in find_groups(infos)}
    assert groups["controller=repo_r, target_entropy=0.4"] == (
        "s1-repo_r-0.4-0",
        "s1-repo_r-0.4-1",
        "s1-repo_r-0.4-2",
    )
    assert groups["lr=0.0"] == ("lr-0", "lr-1")
    # no sweep: same config but seed, run id and store; named by the one key that differs between such groups
    assert groups["controller=none"] == ("g0", "g1", "g2")
    assert groups["controller=repo_r"] == ("r0", "r1")
    assert len(groups) == 7


def test_shared_names_are_told_apart_by_sweep_then_run():
    infos = {
        "a0": sweep_run("A", 0, controller="none"),
        "b0": sweep_run("B", 0, controller="none"),
        "p0": plain_run(0, "p0", controller="none"),
        "p1": plain_run(1, "p1", controller="repo_r"),
    }
    names = sorted(g.name for g in find_groups(infos))
    assert names == [
        "controller=none",
        "controller=repo_r",
        "sweep=A: controller=none",
        "sweep=B: controller=none",
    ]


def test_one_plain_group_is_named_by_its_first_run():
    infos = {"x1": plain_run(1, "x1"), "x0": plain_run(0, "x0")}
    [group] = find_groups(infos)
    assert (group.name, group.run_ids) == ("x0", ("x0", "x1"))


def test_select_by_run_id_group_name_and_sweep_values(infos):
    groups = find_groups(infos)
    assert select("g1", infos, groups).run_ids == ("g1",)
    assert select("controller=none", infos, groups).run_ids == ("g0", "g1", "g2")
    # a group name's keys in any order, values by value
    assert select("target_entropy=0.40,controller=repo_r", infos, groups).name == (
        "controller=repo_r, target_entropy=0.4"
    )
    chosen = select("sweep=s1:controller=none,target_entropy=0.8", infos, groups)
    assert chosen.run_ids == ("s1-none-0.8-0", "s1-none-0.8-1", "s1-none-0.8-2")
    assert select("sweep=s2:lr=0", infos, groups).run_ids == ("lr-0", "lr-1")  # 0 selects 0.0
    assert len(select("sweep=s1:controller=repo_r", infos, groups).run_ids) == 6  # both targets
    assert len(select("sweep=s1", infos, groups).run_ids) == 12


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nope", "no run, group or sweep 'nope'"),
        ("sweep=zz:lr=0", "no sweep 'zz' in the store; sweeps: s1, s2"),
        ("sweep=s1:controller=adapo", "no run of sweep 's1' matches 'controller=adapo'; its settings: "),
        ("sweep=s1:controller", "expected key=value"),
        ("controller=", "no run, group or sweep"),
    ],
)
def test_bad_selections_say_what_exists(infos, spec, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        select(spec, infos, find_groups(infos))


def test_values_match_by_value_not_by_spelling():
    assert parse_pairs("lr=0,on=true,name=repo_r,t=1e-3,x=[1]", "s") == {
        "lr": 0, "on": True, "name": "repo_r", "t": "1e-3", "x": "[1]",
    }  # fmt: skip
    assert same_value(0, 0.0) and same_value(0.4, 0.4) and same_value(float("nan"), float("nan"))
    assert same_value("1e-3", 0.001) and same_value(0.001, "1e-3")  # PyYAML reads 1e-3 as text
    assert not same_value(True, 1) and not same_value("repo_r", "none") and not same_value(None, 0)


def test_group_by_choices_for_the_compare_page(infos):
    chosen = ["s1-repo_r-0.4-0", "s1-none-0.8-1", "g0", "r1"]
    assert group_by_options(infos, chosen) == [
        "none", "auto", "sweep:controller", "sweep:target_entropy", "config:controller", "config:lr", "config:steps",
        "config:target_entropy",
    ]  # fmt: skip
    assert [(g.name, g.run_ids) for g in group_runs(infos, chosen, "sweep:target_entropy")] == [
        ("target_entropy=0.4", ("s1-repo_r-0.4-0",)), ("target_entropy=0.8", ("s1-none-0.8-1",)),
        ("target_entropy=–", ("g0", "r1")),
    ]  # fmt: skip
    by_controller = {g.name: g.run_ids for g in group_runs(infos, chosen, "config:controller")}
    assert by_controller == {
        "controller=none": ("s1-none-0.8-1", "g0"),
        "controller=repo_r": ("s1-repo_r-0.4-0", "r1"),
    }
    auto = {g.name: g.run_ids for g in group_runs(infos, ["g0", "g2", "r1"], "auto")}
    assert auto == {"controller=none": ("g0", "g2"), "controller=repo_r": ("r1",)}  # store-wide names
    assert [g.run_ids for g in group_runs(infos, ["g0", "r1"], "none")] == [("g0",), ("r1",)]
