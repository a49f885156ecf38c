"""The `no_signal` rule: every group's completions scored alike, so no advantage and no gradient."""

import json
from pathlib import Path

import numpy as np

from analysis.alerts import FIRED, RESOLVED, evaluate, load_rules, parse_rules
from analysis.schema import ADV_ZERO_FRAC, REWARD_MEAN
from analysis.store_reader import StoreReader
from trainer.config import load_config
from trainer.loop import train

NO_SIGNAL = [r for r in load_rules().rules if r.kind == "no_signal"]


def test_default_rule_needs_ten_steps_without_any_signal():
    (rule,) = NO_SIGNAL
    ruleset = parse_rules({"rules": [rule.model_dump(by_alias=True)]})
    zero = [1.0] * 10 + [0.75] + [1.0] * 11 + [0.9]
    steps = np.arange(1, len(zero) + 1)
    ev = evaluate(
        {ADV_ZERO_FRAC: (steps, np.array(zero)), REWARD_MEAN: (steps, np.zeros(len(zero)))}, ruleset
    )
    # Ten steps of 1.0 then one group with a reward difference: never fires; the next eleven do (pending at 12,
    # firing at 12 + 10), and the first step with any signal resolves it.
    assert [(t.kind, t.step) for t in ev.transitions] == [(FIRED, 22), (RESOLVED, 23)]
    message = ev.transitions[0].message
    assert "100% of groups" in message and "reward/mean 0.000" in message
    assert "always returns 0" in message and "warm-up or a base model" in message


def test_fires_on_a_zero_reward_run_and_says_so_above_the_progress(tmp_path, capsys):
    """A task nobody can solve (answers the tiny model never writes): reward 0 at every step."""
    task = tmp_path / "impossible.jsonl"
    task.write_text("".join(json.dumps({"prompt": f"q{i}", "answer": "never" * 8}) + "\n" for i in range(4)))
    over = ["steps=12", "prompts_per_step=4", "group_size=4", "warmup_steps=0", "checkpoint_every=0"]
    cfg = load_config(None, [*over, f"task=jsonl:{task}", "max_new_tokens=4"])
    summary = train(cfg, tmp_path, run_id="r", progress=True)
    fired = StoreReader(tmp_path).events("r", ["alert_fired"]).to_dict("records")
    assert [(e["step"], json.loads(e["payload"])["rule"]) for e in fired] == [(11, "no_signal")]
    assert "FIRED [warning] no_signal" in capsys.readouterr().out
    assert "no_signal [warning]" in summary.lines()[-1]


def test_silent_on_the_sample_runs():
    """The six sample runs (the demo's configuration, 200 steps each) always had a group with signal."""
    reader = StoreReader(Path(__file__).resolve().parents[1] / "sample_runs")
    (rule,) = NO_SIGNAL
    ruleset = parse_rules({"rules": [rule.model_dump(by_alias=True)]})
    df = reader.scalars(reader.runs()["run_id"].tolist(), [ADV_ZERO_FRAC], max_points=100_000)
    assert df["run_id"].nunique() == 6
    for _, g in df.groupby("run_id"):
        ev = evaluate({ADV_ZERO_FRAC: (g["step"].to_numpy(), g["value"].to_numpy())}, ruleset)
        assert ev.transitions == []
