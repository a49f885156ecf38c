"""Resuming from a checkpoint restores the controller state exactly, and live control changes with it."""

import pytest

from analysis import schema
from analysis.control import write_control
from analysis.store_reader import StoreReader
from trainer.checkpoint import load_trainer_state
from trainer.config import load_config
from trainer.controllers import build_controller
from trainer.loop import train

KEYS = [schema.CONTROLLER_ZETA, schema.CONTROLLER_EPS_HIGH, schema.CONTROLLER_COEF, schema.ENTROPY_TARGET]


def run(root, overrides, **kw):
    cfg = load_config(None, overrides)
    train(cfg, root, run_id="r", progress=False, **kw)
    return cfg


def series(root):
    df = StoreReader(root).scalars(["r"], KEYS)
    return {k: df[df["key"] == k].sort_values("step")["value"].tolist() for k in KEYS}


@pytest.mark.parametrize("controller", ["repo_r", "adapo", "entropy_bonus"])
def test_resume_restores_controller_state_exactly(tmp_path, tiny_overrides, controller):
    # A target far above H0 keeps every controller moving at every step.
    over = [*tiny_overrides, f"controller={controller}", "target_entropy=5.0"]
    run(tmp_path / "a", [*over, "steps=5"])
    cfg = run(tmp_path / "b", [*over, "steps=3"])
    saved = load_trainer_state(tmp_path / "b" / "r" / "checkpoints" / "step_3")["controller"]
    # The checkpoint holds the state after step 3's update, which step 4 of the uninterrupted run used.
    fresh = build_controller(cfg)
    assert saved != fresh.state_dict()
    run(tmp_path / "b", [*over, "steps=5"], resume=True)
    a, b = series(tmp_path / "a"), series(tmp_path / "b")
    assert a == b  # exact: same floats at every step, before and after the resume
    a_state = load_trainer_state(tmp_path / "a" / "r" / "checkpoints" / "step_5")["controller"]
    b_state = load_trainer_state(tmp_path / "b" / "r" / "checkpoints" / "step_5")["controller"]
    assert a_state == b_state


def test_resume_keeps_live_control_changes(tmp_path, tiny_overrides):
    over = [*tiny_overrides, "controller=repo_r", "steps=2"]
    write_control_after_first_step = tmp_path / "r"
    write_control_after_first_step.mkdir(parents=True)
    write_control(write_control_after_first_step, {"target_entropy": 0.3, "zeta_max": 0.5})
    run(tmp_path, over)
    state = load_trainer_state(tmp_path / "r" / "checkpoints" / "step_2")
    assert state["overrides"] == {"target_entropy": 0.3, "zeta_max": 0.5}
    assert state["control"]["last_version"] == 1
    run(tmp_path, [*tiny_overrides, "controller=repo_r", "steps=3"], resume=True)
    targets = series(tmp_path)[schema.ENTROPY_TARGET]
    assert targets[1:] == [pytest.approx(0.3)] * 2  # applied from step 2 on, and still after the resume
    kinds = StoreReader(tmp_path).events("r")["kind"].tolist()
    assert kinds.count("control_applied") == 1  # the same file is not applied again after the resume


def test_every_applied_setting_survives_a_resume_from_an_earlier_checkpoint(
    tmp_path, tiny_overrides, monkeypatch
):
    """Changes applied after the checkpoint a run resumes from (a kill before the next one) are all applied
    again, not only the newest request: v1 before step_1's checkpoint, v2 and v3 at step 2, v4 after the end."""
    import shutil

    import trainer.loop as loop

    run_dir = tmp_path / "r"
    run_dir.mkdir()
    write_control(run_dir, {"target_entropy": 0.3})
    poll = loop.poll_control

    def sender_at_step_2(writer, p, watcher, step):
        if step == 2:  # two senders within one step
            write_control(run_dir, {"zeta_max": 0.5})
            write_control(run_dir, {"lr": 5e-4})
        poll(writer, p, watcher, step)

    monkeypatch.setattr(loop, "poll_control", sender_at_step_2)
    run(tmp_path, [*tiny_overrides, "controller=repo_r", "steps=2"])
    monkeypatch.setattr(loop, "poll_control", poll)
    write_control(run_dir, {"eps_low": 0.15})  # v4, while the run is down
    shutil.rmtree(run_dir / "checkpoints" / "step_2")  # killed before step 2's checkpoint: resume from step_1
    assert load_trainer_state(run_dir / "checkpoints" / "step_1")["overrides"] == {"target_entropy": 0.3}
    run(tmp_path, [*tiny_overrides, "controller=repo_r", "steps=3"], resume=True)
    state = load_trainer_state(run_dir / "checkpoints" / "step_3")
    assert state["overrides"] == {"target_entropy": 0.3, "zeta_max": 0.5, "lr": 5e-4, "eps_low": 0.15}
    assert state["control"]["last_version"] == 4
    df = StoreReader(tmp_path).scalars(["r"], [schema.LR, schema.ENTROPY_TARGET])
    last = df[df["step"] == 3].set_index("key")["value"]
    assert last[schema.LR] == pytest.approx(5e-4) and last[schema.ENTROPY_TARGET] == pytest.approx(0.3)


def test_resume_without_a_checkpoint_says_so_on_the_console(tmp_path, tiny_overrides, capsys):
    from analysis.store_writer import RunWriter

    RunWriter(tmp_path, "r", {}).close("failed")  # a run killed before its first checkpoint
    run(tmp_path, [*tiny_overrides, "steps=1"], resume=True)  # nothing to resume: starts from step 0
    out = capsys.readouterr().out
    assert f"resume: run r has no checkpoint in {tmp_path / 'r' / 'checkpoints'}; starting from step 0" in out
