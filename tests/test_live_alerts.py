"""Alert rules judged live by the trainer: transitions recorded once as events, printed, and `on_critical: stop`."""

import json

import pytest

from analysis.store_reader import StoreReader
from trainer.config import load_config
from trainer.loop import train

# Entropy is always below 100 nats: the rule holds from the first step and fires once `for` is met.
ALWAYS_COLLAPSED = """
on_critical: {on_critical}
rules:
  - name: always
    kind: collapse
    severity: critical
    floor: 100
    for: 2
"""


def rules_file(tmp_path, on_critical: str):
    path = tmp_path / f"rules-{on_critical}.yaml"
    path.write_text(ALWAYS_COLLAPSED.format(on_critical=on_critical))
    return path


def events(store, run_id, kind):
    return StoreReader(store).events(run_id, [kind]).to_dict("records")


def test_critical_alert_with_stop_ends_the_run_finished_with_a_checkpoint(tmp_path, tiny_overrides, capsys):
    over = [o for o in tiny_overrides if not o.startswith(("steps", "checkpoint"))]
    cfg = load_config(
        None, [*over, "steps=10", "checkpoint_every=0", f"alerts={rules_file(tmp_path, 'stop')}"]
    )
    summary = train(cfg, tmp_path, run_id="r", progress=True)
    assert summary.steps == 3  # pending at step 1, firing at 1 + for = 3
    fired = events(tmp_path, "r", "alert_fired")
    assert [(e["step"], e["severity"], json.loads(e["payload"])["rule"]) for e in fired] == [
        (3, "critical", "always")
    ]
    assert [e["step"] for e in events(tmp_path, "r", "stopped")] == [3]
    assert [e["step"] for e in events(tmp_path, "r", "checkpoint")] == [3]
    assert StoreReader(tmp_path).runs().set_index("run_id").loc["r", "status"] == "finished"
    assert "alerts firing at the end: always [critical]" in summary.lines()
    assert "FIRED [critical] always firing" in capsys.readouterr().out


def test_continue_records_each_transition_once_and_resume_does_not_repeat_it(tmp_path, tiny_overrides):
    over = [o for o in tiny_overrides if not o.startswith("steps")]
    rules = f"alerts={rules_file(tmp_path, 'continue')}"
    train(load_config(None, [*over, "steps=4", rules]), tmp_path, run_id="r", progress=False)
    train(load_config(None, [*over, "steps=6", rules]), tmp_path, run_id="r", resume=True, progress=False)
    assert [e["step"] for e in events(tmp_path, "r", "alert_fired")] == [3]


def test_runaway_fires_live_and_the_summary_spells_it_out(tmp_path, tiny_overrides, capsys):
    """The entropy bonus without a penalty, asked to hold a target far below the entropy: its coefficient
    sits at 0 (the bound that lowers entropy hardest) while the entropy stays above the target."""
    path = tmp_path / "runaway.yaml"
    path.write_text("rules:\n  - {name: runaway, kind: runaway, margin: 0.3, alpha: 1, for: 2}\n")
    over = [o for o in tiny_overrides if not o.startswith("steps")]
    knobs = ["controller=entropy_bonus", "bonus_coef_min=0", "target_entropy=0.01", f"alerts={path}"]
    summary = train(load_config(None, [*over, "steps=5", *knobs]), tmp_path, run_id="r", progress=True)
    # Step 1 uses the initial coefficient; from step 2 on it is 0: pending at 2, firing at 2 + for = 4.
    assert [e["step"] for e in events(tmp_path, "r", "alert_fired")] == [4]
    assert "alerts firing at the end: runaway [warning]" in summary.lines()
    [line] = [x for x in summary.lines() if x.startswith("runaway: ")]
    assert "controller at the bound that lowers entropy hardest" in line
    assert "FIRED [warning] runaway firing" in capsys.readouterr().out


def test_alerts_off_records_none(tmp_path, tiny_overrides):
    train(load_config(None, [*tiny_overrides, "alerts=off"]), tmp_path, run_id="r", progress=False)
    assert events(tmp_path, "r", "alert_fired") == []


@pytest.mark.slow
def test_default_rules_fire_collapse_on_grpo_but_not_on_repo_r(tmp_path):
    """The demo setup with the default rules: GRPO's entropy halves within 70 steps, REPO-R holds it."""
    for controller in ("none", "repo_r"):
        cfg = load_config(None, ["steps=70", "checkpoint_every=0", f"controller={controller}"])
        train(cfg, tmp_path, run_id=controller, progress=False)
    fired = {
        r: {json.loads(e["payload"])["rule"] for e in events(tmp_path, r, "alert_fired")}
        for r in ("none", "repo_r")
    }
    assert "collapse" in fired["none"]
    assert "collapse" not in fired["repo_r"]
    assert "no_signal" not in fired["none"] | fired["repo_r"]  # the demo's groups always have some signal
