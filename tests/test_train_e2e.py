"""End-to-end runs of the real trainer on CPU: store contents, numerics against float64, resume, lr=0."""

import math

import pytest
import torch

from analysis import schema
from analysis.schema import TABLES
from analysis.segments import live_segments, superseded, sweep_run
from analysis.store_reader import StoreReader
from trainer.config import load_config
from trainer.loop import train
from trainer.models import load_policy


def run(tmp_path, overrides, run_id="r", **kw):
    cfg = load_config(None, overrides)
    return cfg, train(cfg, tmp_path, run_id=run_id, progress=False, **kw)


def scalar(reader, run_id, key):
    df = reader.scalars([run_id], [key])
    return df.sort_values("step")["value"].tolist()


def test_run_logs_every_contract_key_and_table(tmp_path, tiny_overrides):
    run(tmp_path, [*tiny_overrides, "delta_every=2"])
    reader = StoreReader(tmp_path)
    assert set(reader.keys(["r"])) == set(schema.METRIC_KEYS)
    # The batch ΔH on the steps delta_every picks (2 of 1..3), and only there.
    assert reader.scalars(["r"], [schema.ENTROPY_DELTA_BATCH])["step"].tolist() == [2]
    assert reader.runs().set_index("run_id").loc["r", "status"] == "finished"
    samples = reader.samples("r", 2)
    assert len(samples) == 16 and samples["response_text"].notna().all()
    tokens = reader.tokens("r", 2)
    assert tokens["sample_id"].nunique() == 8
    assert set(tokens["sample_id"]) <= set(samples["sample_id"])
    hist = reader.hists("r")
    assert hist.groupby("step")["count"].sum().tolist() == scalar_counts(reader)
    kinds = reader.events("r")["kind"].tolist()
    assert kinds.count("checkpoint") == 3


def scalar_counts(reader):
    """Response tokens per step, from the samples table (every token lands in one histogram bin)."""
    out = []
    for step in (1, 2, 3):
        s = reader.samples("r", step)
        out.append(int(s["response_token_ids"].map(len).sum()))
    return out


def test_fp32_is_on_policy_to_rounding_at_every_step(tmp_path, tiny_overrides):
    run(tmp_path, [*tiny_overrides, "steps=4", "epochs_per_step=2"])
    devs = scalar(StoreReader(tmp_path), "r", schema.RATIO_ONPOLICY_DEV)
    assert len(devs) == 4 and max(devs) < 1e-6


def test_token_records_match_float64_recomputation_from_checkpoint(tmp_path, tiny_overrides):
    """Tokens of step s were sampled by the policy saved after step s-1."""
    cfg, _ = run(tmp_path, tiny_overrides)
    reader = StoreReader(tmp_path)
    model, _ = load_policy(str(tmp_path / "r" / "checkpoints" / "step_1"), seed=0)
    model = model.double().eval()
    tokens = reader.tokens("r", 2)
    samples = reader.samples("r", 2).set_index("sample_id")
    checked = 0
    for sample_id, rows in tokens.groupby("sample_id"):
        s = samples.loc[sample_id]
        prompt, response = list(s["prompt_token_ids"]), list(s["response_token_ids"])
        ids = torch.tensor([prompt + response])
        with torch.no_grad():
            logits = model(ids).logits[0, len(prompt) - 1 : -1] / cfg.temperature  # (R, V) float64
        logp_all = torch.log_softmax(logits, -1)
        rows = rows.sort_values("position")
        ref_logp = logp_all.gather(1, torch.tensor(response)[:, None]).squeeze(1)
        ref_ent = -(logp_all.exp() * logp_all).sum(-1)
        assert rows["token_id"].tolist() == response
        assert torch.allclose(torch.tensor(rows["logp"].tolist(), dtype=torch.float64), ref_logp, atol=1e-4)
        assert torch.allclose(torch.tensor(rows["entropy"].tolist(), dtype=torch.float64), ref_ent, atol=1e-4)
        checked += len(rows)
    assert checked > 0


def test_lr_zero_keeps_policy_and_logprobs_constant(tmp_path, tiny_overrides):
    run(tmp_path, [*tiny_overrides, "lr=0"])
    first, _ = load_policy(str(tmp_path / "r" / "checkpoints" / "step_1"), seed=0)
    last, _ = load_policy(str(tmp_path / "r" / "checkpoints" / "step_3"), seed=0)
    for (name, a), (_, b) in zip(first.state_dict().items(), last.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    reader = StoreReader(tmp_path)
    # Every minibatch of every epoch sees the rollout policy: ratios are exactly 1, nothing is clipped.
    assert scalar(reader, "r", schema.RATIO_MAX) == [1.0, 1.0, 1.0]
    assert scalar(reader, "r", schema.CLIP_FRAC) == [0.0, 0.0, 0.0]
    # The same prompt and response scored at two steps gets the same log-prob.
    seen = {}
    for step in (1, 2, 3):
        t = reader.tokens("r", step).merge(
            reader.samples("r", step)[["sample_id", "prompt_text"]], on="sample_id"
        )
        for (prompt, _sid), rows in t.groupby(["prompt_text", "sample_id"]):
            key = (prompt, tuple(rows.sort_values("position")["token_id"]))
            logps = tuple(rows.sort_values("position")["logp"])
            assert seen.setdefault(key, logps) == logps


def test_finished_run_is_compacted_to_one_segment_per_table(tmp_path, tiny_overrides):
    run(tmp_path, [*tiny_overrides, "steps=12", "checkpoint_every=0"])  # the writer flushes every 5 steps
    for table in TABLES:
        assert len(live_segments(tmp_path / "r" / table)) == 1, table
    assert sorted(StoreReader(tmp_path).scalars(["r"], [schema.ENTROPY_MEAN])["step"]) == list(range(1, 13))
    # The merged parts stay for readers that listed them, until a sweep after their grace period.
    steps_dir = tmp_path / "r" / "steps"
    assert len(list(steps_dir.glob("*.parquet"))) > 1 and superseded(steps_dir)
    assert sweep_run(tmp_path / "r", grace_s=0) > 0
    for table in TABLES:
        assert [p.name for p in (tmp_path / "r" / table).glob("*")] == [
            p.name for p in live_segments(tmp_path / "r" / table)
        ], table


def test_resume_continues_the_step_count(tmp_path, tiny_overrides):
    run(tmp_path, [*tiny_overrides, "steps=2"])
    _, summary = run(tmp_path, [*tiny_overrides, "steps=4"], resume=True)
    reader = StoreReader(tmp_path)
    steps = sorted(reader.scalars(["r"], [schema.ENTROPY_MEAN])["step"])
    assert steps == [1, 2, 3, 4]
    assert "resumed" in reader.events("r")["kind"].tolist()
    assert summary.steps == 4


def test_resumed_run_matches_uninterrupted_run(tmp_path, tiny_overrides):
    run(tmp_path / "a", [*tiny_overrides, "steps=4"])
    run(tmp_path / "b", [*tiny_overrides, "steps=2"])
    run(tmp_path / "b", [*tiny_overrides, "steps=4"], resume=True)
    a = scalar(StoreReader(tmp_path / "a"), "r", schema.ENTROPY_MEAN)
    b = scalar(StoreReader(tmp_path / "b"), "r", schema.ENTROPY_MEAN)
    assert a == pytest.approx(b, rel=1e-5)


def test_same_seed_same_run(tmp_path, tiny_overrides):
    run(tmp_path / "a", tiny_overrides)
    run(tmp_path / "b", tiny_overrides)
    for key in (schema.ENTROPY_MEAN, schema.REWARD_MEAN, schema.LOSS_POLICY):
        a = scalar(StoreReader(tmp_path / "a"), "r", key)
        b = scalar(StoreReader(tmp_path / "b"), "r", key)
        assert a == b and all(math.isfinite(v) for v in a)


@pytest.mark.parametrize("precision", ["bf16", "bf16_fixed"])
@pytest.mark.parametrize("preset", ["tiny-qwen2", "tiny-gpt2"])  # untied and tied head
def test_bf16_modes_run_and_log_precision_metrics(tmp_path, tiny_overrides, precision, preset):
    run(tmp_path, [*tiny_overrides, f"precision={precision}", f"model={preset}"])
    reader = StoreReader(tmp_path)
    pos = scalar(reader, "r", schema.PRECISION_LOGP_POS_FRAC)
    assert len(pos) == 3 and all(math.isfinite(v) for v in scalar(reader, "r", schema.ENTROPY_MEAN))
    if precision == "bf16_fixed":
        assert max(scalar(reader, "r", schema.RATIO_ONPOLICY_DEV)) < 1e-6


def test_threads_key_sets_torch_threads_for_the_run_only(tmp_path, tiny_overrides, monkeypatch):
    """Every step of a run with threads=1 runs on one torch thread; the process's own setting is back after."""
    import trainer.loop as loop

    seen: list[int] = []
    real_step = loop.train_step

    def counting_step(*args):
        seen.append(torch.get_num_threads())
        return real_step(*args)

    monkeypatch.setattr(loop, "train_step", counting_step)
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        run(tmp_path, [*tiny_overrides, "threads=1"])
        assert seen and set(seen) == {1}
        assert torch.get_num_threads() == 3
        seen.clear()
        run(tmp_path / "default", tiny_overrides)  # 0: torch's setting untouched
        assert set(seen) == {3}
    finally:
        torch.set_num_threads(before)


def test_torch_threads_restores_after_an_error():
    from trainer.threads import torch_threads

    before = torch.get_num_threads()
    with pytest.raises(RuntimeError), torch_threads(before + 1):
        assert torch.get_num_threads() == before + 1
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before


def test_compaction_keeps_every_segment_when_one_is_unreadable(tmp_path):
    from analysis.store_writer import RunWriter
    from trainer.loop import compact_finished

    with RunWriter(tmp_path, "r", {"algo": "grpo"}, flush_every_steps=1, flush_every_s=1e9) as w:
        for step in (1, 2, 3):
            w.log_scalars(step, {schema.ENTROPY_MEAN: 1.0 / step})
    files = sorted((tmp_path / "r" / "steps").glob("*.parquet"))
    files[1].write_bytes(files[1].read_bytes()[:20])  # truncated: no footer
    with pytest.warns(RuntimeWarning, match="kept .* segments unmerged"):
        assert compact_finished(tmp_path / "r") is False
    assert sorted((tmp_path / "r" / "steps").glob("*.parquet")) == files
    with pytest.warns(RuntimeWarning, match="skipping unreadable"):
        assert scalar(StoreReader(tmp_path), "r", schema.ENTROPY_MEAN) == [1.0, 1.0 / 3]


@pytest.mark.slow
def test_batch_delta_leaves_training_unchanged_and_tracks_the_measured_change(tmp_path, tiny_overrides):
    """Measuring ΔH adds forward and backward passes but never touches the gradients the optimizer uses."""
    base = [*tiny_overrides, "steps=6", "epochs_per_step=2", "checkpoint_every=0", "lr=5e-4"]
    run(tmp_path, base, run_id="off")
    run(tmp_path, [*base, "delta_every=1"], run_id="on")
    reader = StoreReader(tmp_path)
    for key in (schema.ENTROPY_MEAN, schema.GRAD_NORM, schema.LOSS_POLICY):
        assert scalar(reader, "on", key) == scalar(reader, "off", key)
    assert scalar(reader, "off", schema.ENTROPY_DELTA_BATCH) == []
    measured = scalar(reader, "on", schema.ENTROPY_DELTA_BATCH)
    predicted = scalar(reader, "on", schema.ENTROPY_DELTA_PRED)
    parts = [scalar(reader, "on", key) for key in (schema.ENTROPY_DELTA_PRED_E1, schema.ENTROPY_DELTA_PRED_E2,
                                                   schema.ENTROPY_DELTA_PRED_E3, schema.ENTROPY_DELTA_PRED_E4)]  # fmt: skip
    assert len(measured) == 6
    for i, (m, p) in enumerate(zip(measured, predicted, strict=True)):
        assert abs(p - m) < 0.05 * abs(m) + 1e-5, (i, m, p)
        assert sum(q[i] for q in parts) == pytest.approx(p, rel=1e-3, abs=1e-7)
