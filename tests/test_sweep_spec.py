"""Sweep specs without training: parsing, validation, expansion into runs, store states, --dry-run, failures."""

import json
import math
import os
import socket
import subprocess
import sys
import time

import pytest
import yaml

from analysis.errors import UsageError
from analysis.store_reader import StoreReader
from analysis.store_writer import RunWriter
from trainer.cli import main
from trainer.config import parse_overrides
from trainer.sweep import last_line, plan, record_failure, train_args
from trainer.sweep_spec import load_sweep, parse_sweep_field

GRID = {
    "base": {"task": "digit_sum", "steps": 5},
    "method": "grid",
    "parameters": {"controller": ["repo_r", "entropy_bonus"], "target_entropy": [0.2, 0.4]},
    "seeds": 2,
    "metric": {"name": "reward/mean", "goal": "maximize"},
}


def write_spec(tmp_path, spec, name="spec.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return path


def test_grid_expands_every_combination_at_every_seed_with_stable_ids(tmp_path):
    sweep = load_sweep(write_spec(tmp_path, GRID))
    assert len(sweep.trials) == 8
    combos = {(t.params["controller"], t.params["target_entropy"], t.seed) for t in sweep.trials}
    assert combos == {(c, e, s) for c in ("repo_r", "entropy_bonus") for e in (0.2, 0.4) for s in (0, 1)}
    assert all(
        t.config == {"task": "digit_sum", "steps": 5, **t.params, "seed": t.seed} for t in sweep.trials
    )
    assert len({t.run_id for t in sweep.trials}) == 8
    assert all(t.run_id.startswith(sweep.id + "-") for t in sweep.trials)
    again = load_sweep(write_spec(tmp_path, GRID, "copy.yaml"))
    assert [t.run_id for t in again.trials] == [t.run_id for t in sweep.trials]
    assert sweep.trials[0].sweep_field(sweep.id) == {
        "id": sweep.id,
        "params": sweep.trials[0].params,
        "seed": sweep.trials[0].seed,
    }


def test_more_seeds_keep_the_sweep_id_and_its_runs_and_a_name_sets_the_id(tmp_path):
    two = load_sweep(write_spec(tmp_path, GRID))
    four = load_sweep(write_spec(tmp_path, {**GRID, "seeds": [0, 1, 2, 3]}, "four.yaml"))
    assert four.id == two.id and {t.run_id for t in two.trials} < {t.run_id for t in four.trials}
    other = load_sweep(write_spec(tmp_path, {**GRID, "base": {"steps": 6}}, "other.yaml"))
    assert other.id != two.id
    assert load_sweep(write_spec(tmp_path, {**GRID, "name": "setpoints"}, "named.yaml")).id == "setpoints"


def test_random_draws_in_range_deterministically_and_more_draws_extend_the_same_ones(tmp_path):
    spec = {
        "method": "random",
        "count": 6,
        "parameters": {
            "lr": {"min": 1e-4, "max": 1e-2, "log": True},
            "group_size": {"min": 2, "max": 8},
            "algo": ["grpo", "dapo"],
        },
        "seeds": [7],
    }
    sweep = load_sweep(write_spec(tmp_path, spec))
    assert len(sweep.trials) == 6
    for t in sweep.trials:
        assert 1e-4 <= t.params["lr"] <= 1e-2
        assert isinstance(t.params["group_size"], int) and 2 <= t.params["group_size"] <= 8
        assert t.params["algo"] in ("grpo", "dapo") and t.seed == 7
    assert load_sweep(write_spec(tmp_path, spec, "b.yaml")).trials == sweep.trials
    more = load_sweep(write_spec(tmp_path, {**spec, "count": 9}, "c.yaml"))
    assert more.id == sweep.id and more.trials[:6] == sweep.trials


def test_base_config_file_is_read_relative_to_the_spec(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "base.yaml").write_text("steps: 7\nlr: 0.0005\n")
    sweep = load_sweep(write_spec(tmp_path / "sub", {**GRID, "base": "base.yaml"}))
    assert sweep.base == {"steps": 7, "lr": 0.0005}
    assert sweep.trials[0].config["steps"] == 7


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"methd": "grid"}, "methd: unknown key"),
        ({"method": "tpe"}, "method:"),
        ({"parameters": {"target_entropi": [0.1]}}, "'target_entropi' is not a config key"),
        ({"base": {"stepz": 3}}, "base key 'stepz' is not a config key"),
        ({"parameters": {"seed": [1, 2]}}, "list the seeds in the spec's `seeds`"),
        ({"parameters": {"lr": [-1.0]}}, "config key 'lr'"),
        ({"parameters": {"lr": {"min": 0.1, "max": 1}}}, "grid needs a list"),
        ({"method": "random"}, "needs count"),
        ({"parameters": {"lr": []}}, "lists no values"),
        ({"parameters": {"lr": [0.1, 0.1]}}, "comes twice"),
        ({"seeds": 0}, "seeds"),
        ({"seeds": [1, 1]}, "distinct seeds"),
        ({"metric": {"name": "reward/avg"}}, "not a step metric key"),
        ({"metric": {"name": "reward/mean", "goal": "up"}}, "metric.goal"),
        ({"name": "a/b"}, "path separator"),
        ({"base": "missing.yaml"}, "does not exist"),
    ],
)
def test_bad_spec_is_one_line_exit_2_before_anything_runs(tmp_path, capsys, change, says):
    path = write_spec(tmp_path, {**GRID, **change})
    with pytest.raises(UsageError, match=None) as err:
        load_sweep(path)
    assert says in str(err.value) and "\n" not in str(err.value)
    assert main(["sweep", str(path), "--store", str(tmp_path / "runs")]) == 2
    assert capsys.readouterr().err.startswith("entropyscope: error: sweep")
    assert not (tmp_path / "runs").exists()


def test_cli_refuses_bad_flags_and_missing_spec(tmp_path, capsys):
    spec = str(write_spec(tmp_path, GRID))
    assert main(["sweep", spec, "--parallel", "0", "--store", str(tmp_path)]) == 2
    assert main(["sweep", spec, "--address", "auto", "--store", str(tmp_path / "r")]) == 2
    assert main(["sweep", str(tmp_path / "none.yaml")]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 3 and all(e.startswith("entropyscope: error:") for e in errors)


def test_dry_run_prints_every_run_and_starts_none(tmp_path, capsys):
    path = write_spec(tmp_path, GRID)
    assert main(["sweep", str(path), "--store", str(tmp_path / "runs"), "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    sweep = load_sweep(path)
    assert out[0].startswith(f"sweep {sweep.id}: 8 runs (4 configurations x seeds)") and "8 new" in out[0]
    for t, line in zip(sweep.trials, out[1:], strict=True):
        assert line.split()[:4] == [t.run_id, "new", "seed", str(t.seed)]
        assert json.loads(line.split(maxsplit=4)[4]) == t.params
    assert not (tmp_path / "runs").exists()


def test_sweep_help_shows_an_example(capsys):
    with pytest.raises(SystemExit):
        main(["sweep", "--help"])
    out = capsys.readouterr().out
    assert "example: entropyscope sweep" in out and "--dry-run" in out


def fake_run(store, trial, sweep_id, status, **info):
    writer = RunWriter(store, trial.run_id, dict(trial.config), meta={"sweep": trial.sweep_field(sweep_id)})
    writer.close(status)
    path = store / trial.run_id / "run.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **info}))


def test_store_state_decides_skip_resume_or_leave_alone(tmp_path):
    sweep = load_sweep(write_spec(tmp_path, GRID))
    store = tmp_path / "runs"
    a, b, c, d, e = sweep.trials[:5]
    fake_run(store, a, sweep.id, "finished", config={**a.config, "steps": 5})
    fake_run(store, b, sweep.id, "failed")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    fake_run(store, c, sweep.id, "running", pid=dead.pid, host=socket.gethostname(), heartbeat=time.time())
    fake_run(store, d, sweep.id, "running", pid=os.getpid(), host=socket.gethostname(), heartbeat=time.time())
    states = dict((t.run_id, s) for t, s in plan(sweep, store))
    assert [states[t.run_id] for t in (a, b, c, d, e)] == ["finished", "resume", "resume", "busy", "new"]


def test_a_finished_run_made_with_another_config_is_refused(tmp_path):
    sweep = load_sweep(write_spec(tmp_path, GRID))
    trial = sweep.trials[0]
    fake_run(tmp_path, trial, sweep.id, "finished", config={**trial.config, "steps": 99})
    with pytest.raises(UsageError, match="trained with steps=99, the spec now says 5"):
        plan(sweep, tmp_path)


def test_train_args_carry_each_value_back_unchanged(tmp_path):
    spec = {**GRID, "parameters": {"task": ["jsonl:/data/x.jsonl"], "target_entropy": [0.4], "mlflow": [""]}}
    sweep = load_sweep(write_spec(tmp_path, spec))
    trial = sweep.trials[0]
    args = train_args(tmp_path, sweep.id, trial, resume=True)
    sets = [a.removeprefix("--set=") for a in args if a.startswith("--set=")]
    assert parse_overrides(sets) == {**trial.config, "threads": 1}
    assert args[-1] == "--resume"
    assert parse_sweep_field(args[args.index("--sweep") + 1]) == trial.sweep_field(sweep.id)


@pytest.mark.parametrize("text", ["{", "[]", '{"id": "s"}', '{"id": "s", "params": {}, "seed": 0, "x": 1}'])
def test_malformed_sweep_field_is_refused(text):
    with pytest.raises(UsageError, match="--sweep"):
        parse_sweep_field(text)


def test_a_failure_before_the_run_existed_is_recorded_as_a_failed_run(tmp_path):
    sweep = load_sweep(write_spec(tmp_path, GRID))
    trial = sweep.trials[0]
    record_failure(tmp_path, sweep.id, trial, "model 'x' not found")
    info = json.loads((tmp_path / trial.run_id / "run.json").read_text())
    assert info["status"] == "failed" and info["sweep"] == trial.sweep_field(sweep.id)
    events = StoreReader(tmp_path).events(trial.run_id)
    assert events["message"].tolist() == ["model 'x' not found"]


def test_a_failure_of_a_run_marked_running_marks_it_failed_with_the_reason(tmp_path):
    sweep = load_sweep(write_spec(tmp_path, GRID))
    trial = sweep.trials[0]
    writer = RunWriter(
        tmp_path, trial.run_id, dict(trial.config), meta={"sweep": trial.sweep_field(sweep.id)}
    )
    writer.heartbeat(3, force=True)  # then killed: never closed
    record_failure(tmp_path, sweep.id, trial, "killed by signal 9")
    info = json.loads((tmp_path / trial.run_id / "run.json").read_text())
    assert info["status"] == "failed" and info["sweep"] == trial.sweep_field(sweep.id)
    events = StoreReader(tmp_path).events(trial.run_id)
    assert events[["step", "kind", "message"]].values.tolist() == [[3, "error", "killed by signal 9"]]


def test_last_line_is_the_childs_last_words_of_this_attempt(tmp_path):
    log = tmp_path / "x.log"
    log.write_text("old attempt\nentropyscope: error: old reason\n")
    since = log.stat().st_size
    assert last_line(log, since) == ""
    with log.open("a") as f:
        f.write("step 1\nentropyscope: error: task file 'a.jsonl' does not exist\n\n")
    assert last_line(log, since) == "task file 'a.jsonl' does not exist"


def test_the_runner_is_torch_free():
    code = "import sys, trainer.sweep, trainer.sweep_spec, trainer.sweep_ray; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


class InstantPool:
    """Runs a trial by writing a finished run with a made-up objective: the sweep loop without training."""

    def __init__(self, store, slots=2):
        self.store, self.slots, self.running, self.started = store, slots, [], []

    def free(self):
        return self.slots - len(self.running)

    def busy(self):
        return len(self.running)

    def start(self, trial, args, log_path):
        sweep = json.loads(args[args.index("--sweep") + 1])
        writer = RunWriter(self.store, trial.run_id, dict(trial.config), meta={"sweep": sweep})
        for step in range(1, 11):  # best near lr = 1e-3
            writer.log_scalars(step, {"reward/mean": -((math.log10(trial.params.get("lr", 1e-3)) + 3) ** 2)})
        writer.close("finished")
        self.running.append(trial)
        self.started.append(trial.run_id)

    def poll(self):
        done, self.running = [(t, 0) for t in self.running], []
        return done

    def stop(self):
        return self.poll()

    def close(self):
        pass


TPE = {
    "name": "tpe",
    "method": "tpe",
    "count": 5,
    "parameters": {"lr": {"min": 1e-5, "max": 1e-1, "log": True}, "algo": ["grpo", "dapo"]},
    "seeds": 2,
}


def test_tpe_suggests_count_configurations_tells_their_objective_and_resumes_from_the_store(
    tmp_path, monkeypatch, capsys
):
    pytest.importorskip("optuna")
    from trainer import sweep as runner

    store = tmp_path / "runs"
    pool = InstantPool(store)
    monkeypatch.setattr(runner, "make_pool", lambda *a: pool)
    path = write_spec(tmp_path, TPE)
    assert runner.run_sweep(path, store) == 0
    runs = {p.parent.name: json.loads(p.read_text()) for p in store.glob("*/run.json")}
    assert len(runs) == 10 and sorted(pool.started) == sorted(runs)  # 5 configurations x 2 seeds, once each
    configs = {json.dumps(r["sweep"]["params"], sort_keys=True) for r in runs.values()}
    assert len(configs) == 5
    assert all(
        1e-5 <= r["config"]["lr"] <= 1e-1 and r["config"]["seed"] == r["sweep"]["seed"] for r in runs.values()
    )
    assert "10/10 runs ended" in capsys.readouterr().out
    from trainer.sweep_tpe import TpeSearch, with_stored_trials

    sweep = with_stored_trials(load_sweep(path), store)
    study = TpeSearch(sweep, store, plan(sweep, store)).study  # replayed from the store
    objective = {
        json.dumps(t.params, sort_keys=True): -((math.log10(t.params["lr"]) + 3) ** 2) for t in sweep.trials
    }
    told = {json.dumps(t.params, sort_keys=True): t.value for t in study.trials}
    assert told == pytest.approx(objective)  # each configuration's mean final reward over its seeds
    pool.started.clear()
    assert runner.run_sweep(path, store) == 0  # nothing left
    assert pool.started == []
    more = write_spec(tmp_path, {**TPE, "count": 7}, "more.yaml")
    assert runner.run_sweep(more, store) == 0  # two more configurations
    assert len(pool.started) == 4 and len(list(store.glob("*/run.json"))) == 14


def test_tpe_dry_run_lists_the_runs_so_far_and_how_many_will_be_suggested(tmp_path, capsys):
    pytest.importorskip("optuna")
    assert main(["sweep", str(write_spec(tmp_path, TPE)), "--store", str(tmp_path / "r"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "0 runs" in out and "and 10 runs TPE will suggest" in out


def test_tpe_checks_each_list_value_and_range_end_up_front(tmp_path):
    bad = {**TPE, "parameters": {"lr": {"min": 1e-5, "max": 1e-1}, "eps_low": [0.2, 1.5]}}
    with pytest.raises(UsageError, match="eps_low"):
        load_sweep(write_spec(tmp_path, bad))
    with pytest.raises(UsageError, match="needs count"):
        load_sweep(write_spec(tmp_path, {**TPE, "count": None}, "b.yaml"))


def test_tpe_over_a_small_space_runs_each_combination_once_and_ends(tmp_path, monkeypatch):
    pytest.importorskip("optuna")
    from trainer import sweep as runner

    pool = InstantPool(tmp_path / "runs")
    monkeypatch.setattr(runner, "make_pool", lambda *a: pool)
    spec = {**TPE, "count": 5, "parameters": {"algo": ["grpo", "dapo"]}, "seeds": 1}
    assert runner.run_sweep(write_spec(tmp_path, spec), tmp_path / "runs") == 0
    assert len(pool.started) == 2
