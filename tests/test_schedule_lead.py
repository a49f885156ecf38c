"""The controller aims `schedule_lead` steps ahead on the schedule; the logged target stays the step's own."""

import pytest

from analysis.schedules import scheduled_target
from analysis.schema import ENTROPY_TARGET
from analysis.store_reader import StoreReader
from trainer.config import load_config
from trainer.controllers.repo import RepoR
from trainer.loop import train

STEPS, BASE = 6, 1.0


def test_controller_sees_the_target_lead_steps_ahead(tmp_path, monkeypatch, tiny_overrides):
    lead = 3
    seen: dict[int, float] = {}
    update = RepoR.update

    def recording(self, measured, target, step):
        seen[step] = target
        update(self, measured, target, step)

    monkeypatch.setattr(RepoR, "update", recording)
    over = [
        "controller=repo_r",
        "schedule=id",
        f"target_entropy={BASE}",
        f"steps={STEPS}",
        f"schedule_lead={lead}",
    ]
    train(load_config(None, [*tiny_overrides, *over]), tmp_path, run_id="r", progress=False)

    assert seen == pytest.approx(
        {s: scheduled_target("id", s + lead, STEPS, BASE) for s in range(1, STEPS + 1)}
    )
    logged = StoreReader(tmp_path).scalars(["r"], [ENTROPY_TARGET]).sort_values("step")
    assert logged["value"].tolist() == pytest.approx(
        [scheduled_target("id", s, STEPS, BASE) for s in range(1, STEPS + 1)]
    )


def test_target_fraction_scales_each_runs_own_h0(tmp_path, tiny_overrides):
    over = ["controller=entropy_bonus", "target_fraction=0.5", "steps=2"]
    train(load_config(None, [*tiny_overrides, *over]), tmp_path, run_id="r", progress=False)

    reader = StoreReader(tmp_path)
    h0 = reader.scalars(["r"], ["entropy/mean"]).sort_values("step")["value"].iloc[0]
    logged = reader.scalars(["r"], [ENTROPY_TARGET])["value"]
    assert logged.tolist() == pytest.approx([0.5 * h0] * 2, rel=1e-6)
