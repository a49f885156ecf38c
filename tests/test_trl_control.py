"""Live control of a TRL GRPO run: control.json applied and acknowledged as in our loop, REPO-R shaping TRL's
advantages, ADAPO driving TRL's epsilon_high, the bonus driving TRL's entropy_coef, and an alert stopping TRL."""

import json
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback
from trl_setup import make_trainer, trl_logs

from analysis import schema
from analysis.control import APPLIED, REJECTED
from analysis.store_reader import StoreReader


class WriteControl(TrainerCallback):
    """Writes control.json as TRL starts a step, as the dashboard would: {step: (version, settings)}, unvalidated
    (the trainer must judge it)."""

    def __init__(self, run_dir: Path, plan: dict[int, tuple[int, dict]]) -> None:
        self.run_dir, self.plan = run_dir, plan

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step + 1 in self.plan:
            version, settings = self.plan[state.global_step + 1]
            (self.run_dir / "control.json").write_text(json.dumps({"version": version, "settings": settings}))


def steps_and_events(store: Path, run_id: str) -> tuple[dict[int, dict], list[dict]]:
    reader = StoreReader(store)
    try:
        rows = reader.query("SELECT step, key, value FROM steps", [], ["steps"], [run_id])
        events = reader.events(run_id).to_dict("records")
    finally:
        reader.close()
    steps: dict[int, dict] = {}
    for step, key, value in rows.itertuples(index=False):
        steps.setdefault(int(step), {})[key] = value
    return steps, events


def test_control_file_applies_from_the_next_step(tmp_path: Path) -> None:
    """A bad control file written during step 1 is rejected with its reason; a good one written during step 2
    is read at its end and in force from step 3, acknowledged with control_applied as in our loop."""
    store = tmp_path / "store"
    trainer = make_trainer(store, "ctl", tmp_path / "out", max_steps=4, scope={"controller": "repo_r"})
    good = {"target_entropy": 1.5, "zeta_max": 0.5}
    trainer.add_callback(WriteControl(store / "ctl", {1: (1, {"zeta": 1}), 2: (2, good)}))
    trainer.train()
    steps, events = steps_and_events(store, "ctl")
    h0 = steps[1][schema.ENTROPY_MEAN]
    assert steps[1][schema.ENTROPY_TARGET] == steps[2][schema.ENTROPY_TARGET] == pytest.approx(h0)
    assert steps[3][schema.ENTROPY_TARGET] == steps[4][schema.ENTROPY_TARGET] == 1.5
    (rejected,) = [e for e in events if e["kind"] == REJECTED]
    assert rejected["step"] == 1 and "unknown key 'zeta'" in rejected["message"]
    (applied,) = [e for e in events if e["kind"] == APPLIED]
    assert applied["step"] == 2 and json.loads(applied["payload"])["new"] == good
    assert trainer._es.cfg.zeta_max == 0.5 and trainer._es.controller.zmax == 0.5


def test_repo_r_shapes_the_advantages_trl_trains_on(tmp_path: Path) -> None:
    """Same seed, same first rollout: REPO-R's A' = A - ζ|A|log π changes TRL's first loss, plain GRPO's not."""
    runs = {}
    for controller in ("none", "repo_r"):
        trainer = make_trainer(tmp_path / "store", controller, tmp_path / controller, max_steps=1,
                               scope={"controller": controller})  # fmt: skip
        trainer.train()
        runs[controller] = trl_logs(trainer)[1]
    assert runs["none"]["reward"] == runs["repo_r"]["reward"]  # the same rollout
    assert runs["none"]["loss"] != pytest.approx(runs["repo_r"]["loss"], abs=1e-6)
    steps, _ = steps_and_events(tmp_path / "store", "repo_r")
    assert steps[1][schema.CONTROLLER_ZETA] == pytest.approx(0.05)  # ζ_min, the value step 1 used


@pytest.mark.parametrize("controller", ["adapo", "entropy_bonus"])
def test_controllers_drive_trls_knobs(tmp_path: Path, controller: str) -> None:
    """With the target far above the entropy, ADAPO widens TRL's epsilon_high and the bonus raises TRL's
    entropy_coef step by step (TRL's own adaptive controller off); what TRL used is what the store says."""
    trainer = make_trainer(tmp_path / "store", "c", tmp_path / "out", max_steps=3,
                           use_adaptive_entropy=True, entropy_target=0.1,
                           scope={"controller": controller, "target_entropy": 20.0})  # fmt: skip
    trainer.train()
    steps, _ = steps_and_events(tmp_path / "store", "c")
    if controller == "adapo":
        used = [steps[s][schema.CONTROLLER_EPS_HIGH] for s in (1, 2, 3)]
        assert used[0] == pytest.approx(0.2) and used[0] < used[1] < used[2]
        assert (
            trainer.epsilon_high == pytest.approx(trainer._es.controller.value)
            and trainer.epsilon_high > used[2]
        )
    else:
        used = [steps[s][schema.CONTROLLER_COEF] for s in (1, 2, 3)]
        assert used[0] < used[1] <= used[2]  # up to bonus_coef_max
        assert trainer.use_adaptive_entropy is False
        logged = [trl_logs(trainer)[s]["entropy_coef"] for s in (1, 2, 3)]
        assert logged == pytest.approx(used)  # TRL logs the coefficient it applied


def test_trls_own_adaptive_controller_is_what_the_store_shows(tmp_path: Path) -> None:
    """With our controller off, TRL's use_adaptive_entropy steers: the store carries its entropy_target and the
    entropy_coef TRL logged, which climbs while the entropy is below the target."""
    trainer = make_trainer(tmp_path / "store", "c", tmp_path / "out", max_steps=3,
                           use_adaptive_entropy=True, entropy_target=20.0, scope={"controller": "none"})  # fmt: skip
    trainer.train()
    steps, _ = steps_and_events(tmp_path / "store", "c")
    assert [steps[s][schema.ENTROPY_TARGET] for s in (1, 2, 3)] == [20.0] * 3
    used = [steps[s][schema.CONTROLLER_COEF] for s in (1, 2, 3)]
    assert used == pytest.approx([trl_logs(trainer)[s]["entropy_coef"] for s in (1, 2, 3)])
    assert used == pytest.approx([0.005, 0.010, 0.015])


def same_reward(prompts: list[str], completions: list[str], **kwargs) -> list[float]:
    return [1.0] * len(completions)


@pytest.mark.parametrize("cap", [1.0, 100.0])
def test_bonus_token_cap_inside_trl(tmp_path: Path, cap: float) -> None:
    """Every advantage is 0, so TRL's entropy bonus is the only gradient. The random init's tokens all carry
    about 4.4 nats: under a 1-nat cap none earns the bonus and the weights stay put; under 100 they move. The
    entropy TRL logs is the tokens' own either way."""
    trainer = make_trainer(tmp_path / "store", "b", tmp_path / "out", reward=same_reward, max_steps=1,
                           scope={"controller": "entropy_bonus", "bonus_coef_init": 0.1, "bonus_token_cap": cap})  # fmt: skip
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train()
    moved = any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(), strict=True))
    assert moved == (cap == 100.0)
    steps, _ = steps_and_events(tmp_path / "store", "b")
    assert steps[1][schema.CONTROLLER_COEF] == pytest.approx(0.1)
    assert steps[1][schema.ENTROPY_MEAN] == pytest.approx(trl_logs(trainer)[1]["entropy"], abs=1e-4)
    assert steps[1][schema.ENTROPY_MEAN] > 4.0


def test_critical_alert_stops_trl_cleanly(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "on_critical: stop\nrules:\n  - name: always\n    kind: clip_spike\n    severity: critical\n"
        "    thresholds: {entropy/mean: 0.0}\n"
    )
    trainer = make_trainer(tmp_path / "store", "stop", tmp_path / "out", max_steps=6,
                           scope={"alerts": str(rules)})  # fmt: skip
    trainer.train()
    steps, events = steps_and_events(tmp_path / "store", "stop")
    assert trainer.state.global_step == 1 and sorted(steps) == [1]
    kinds = [e["kind"] for e in events]
    assert "alert_fired" in kinds and "stopped" in kinds
    info = json.loads((tmp_path / "store" / "stop" / "run.json").read_text())
    assert info["status"] == "finished"
