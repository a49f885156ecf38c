"""TRL's GRPOTrainer with the entropyscope integration, offline on CPU: the store holds TRL's own numbers (entropy,
clip fractions) for the same steps, the per-token tables, and every dashboard page renders the run."""

import json
from pathlib import Path

import pytest
from test_app_pages import PAGES, assert_clean, open_page
from trl_setup import make_trainer, trl_logs

import trainer.integrations.trl as es_trl
from analysis import schema
from analysis.errors import UsageError
from analysis.store_reader import StoreReader

RUN = "trl-run"


@pytest.fixture(scope="module")
def trl_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, dict], dict[int, dict]]:
    """4 steps, each rollout trained twice (num_iterations=2, so steps 2 and 4 clip); (store, ours, TRL's)."""
    root = tmp_path_factory.mktemp("trl")
    trainer = make_trainer(root / "store", RUN, root / "out", num_iterations=2)
    trainer.train()
    reader = StoreReader(root / "store")
    try:
        rows = reader.query("SELECT step, key, value FROM steps", [], ["steps"], [RUN])
    finally:
        reader.close()
    ours: dict[int, dict] = {}
    for step, key, value in rows.itertuples(index=False):
        ours.setdefault(int(step), {})[key] = value
    return root / "store", ours, trl_logs(trainer)


def test_entropy_is_what_trl_logged(trl_run) -> None:
    _, ours, theirs = trl_run
    assert sorted(ours) == sorted(theirs) == [1, 2, 3, 4]
    for step in theirs:
        assert ours[step][schema.ENTROPY_MEAN] == pytest.approx(theirs[step]["entropy"], abs=1e-4)
        p10, p50, p90 = (ours[step][k] for k in (schema.ENTROPY_P10, schema.ENTROPY_P50, schema.ENTROPY_P90))
        assert p10 <= p50 <= p90


def test_clip_fractions_are_what_trl_logged(trl_run) -> None:
    _, ours, theirs = trl_run
    pairs = {schema.CLIP_FRAC: "clip_ratio/region_mean", schema.CLIP_FRAC_LOW: "clip_ratio/low_mean",
             schema.CLIP_FRAC_HIGH: "clip_ratio/high_mean"}  # fmt: skip
    for step in theirs:
        for key, trl_key in pairs.items():
            assert ours[step][key] == pytest.approx(theirs[step][trl_key], abs=1e-6), (step, key)
    assert ours[2][schema.CLIP_FRAC] > 0 and ours[4][schema.CLIP_FRAC] > 0  # the comparison bites
    # the quadrant split adds up to the clipped tokens of A>0 (E1, E2) and A<0 (E3, E4)
    assert any(ours[s][schema.QUADRANT_E1] + ours[s][schema.QUADRANT_E2] > 0 for s in (2, 4))


def test_rollout_metrics_and_onpolicy_ratio(trl_run) -> None:
    _, ours, theirs = trl_run
    for step in (1, 3):  # a fresh rollout: reward, pass@k, and the ratio of the unmoved policy
        assert ours[step][schema.REWARD_MEAN] == pytest.approx(theirs[step]["reward"], abs=1e-6)
        assert ours[step][schema.ADV_ZERO_FRAC] == pytest.approx(theirs[step]["frac_reward_zero_std"])
        assert ours[step][schema.PASS_AT_1] == pytest.approx(ours[step][schema.REWARD_MEAN])  # 0/1 reward
        assert ours[step][schema.PASS_AT_1] <= ours[step][schema.PASS_AT_K] <= 1
        assert ours[step][schema.RATIO_ONPOLICY_DEV] < 1e-6
    for step in (2, 4):  # the same rollout again, policy moved: no rollout rows, no on-policy reading
        assert schema.REWARD_MEAN not in ours[step] and schema.RATIO_ONPOLICY_DEV not in ours[step]
        assert ours[step][schema.RATIO_MAX] > 1


def test_run_tables_and_run_json(trl_run) -> None:
    store, ours, _ = trl_run
    info = json.loads((store / RUN / "run.json").read_text())
    assert info["status"] == "finished"
    assert info["source"]["kind"] == "trl" and info["source"]["live"] is True
    assert info["source"]["config"]["num_generations"] == 4  # TRL's own GRPOConfig
    assert info["config"]["group_size"] == 4 and info["config"]["controller"] == "none"
    reader = StoreReader(store)
    try:
        samples, tokens, first = reader.samples(RUN, 1), reader.tokens(RUN, 2), reader.tokens(RUN, 1)
        hists = reader.hists(RUN)
        assert reader.runs().set_index("run_id").loc[RUN, "source"] == "trl (GRPOTrainer)"
    finally:
        reader.close()
    assert len(samples) == 8 and samples["sample_id"].is_unique
    assert set(samples["correct"]) <= {True, False} and samples["response_text"].map(len).gt(0).any()
    # step 2 trains step 1's rollout again: its token records are of samples 0..7
    assert tokens["sample_id"].nunique() == 8 and set(tokens["sample_id"]) <= set(range(8))
    assert tokens["clip_side"].ne(0).any() and set(tokens["quadrant"]) <= {0, 1, 2, 3, 4}
    assert sorted(hists["step"].unique()) == [1, 2, 3, 4]
    # step 1 trains each of its 8 sequences once, and all 8 are in `tokens`: the means recomputed from them
    assert first["entropy"].mean() == pytest.approx(ours[1][schema.ENTROPY_MEAN], abs=1e-5)
    per_sequence = first.groupby("sample_id")["entropy"].mean()
    assert per_sequence.mean() == pytest.approx(ours[1][schema.ENTROPY_SEQ_MEAN], abs=1e-5)
    assert per_sequence.mean() != pytest.approx(first["entropy"].mean(), abs=1e-7)  # lengths differ


@pytest.mark.parametrize("page", PAGES)
def test_pages_render_the_trl_run(trl_run, page: str, monkeypatch: pytest.MonkeyPatch) -> None:
    store, _, _ = trl_run
    params = {"run": RUN, "runs": [RUN]} | ({"step": "2"} if page == "token_inspector" else {})
    at = open_page(store, page, monkeypatch, **params)
    assert_clean(at)
    if page == "token_inspector":
        html = next(m.value for m in at.markdown if "entropyscope-tokens" in m.value)
        assert html.count("<span title=") >= 8


def test_unsupported_trl_version_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(es_trl.trl, "__version__", "1.15.2")
    with pytest.raises(UsageError, match=r"TRL 1\.15\.2 is not supported.*trl>=1\.16,<1\.17"):
        make_trainer(tmp_path / "store", "r", tmp_path / "out")
    es_trl.check_trl_version("1.16.0")
    with pytest.raises(UsageError):
        es_trl.check_trl_version("1.17.0")


@pytest.mark.parametrize(
    ("scope", "message"),
    [
        ({"controler": "repo_r"}, "unknown scope key 'controler'"),
        ({"controller": "clip_cov"}, "'clip_cov' is not available inside TRL"),
        ({"target_entropy": -1}, "config key 'target_entropy'"),
    ],
)
def test_bad_scope_is_one_line(scope: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message) as err:
        es_trl.check_scope(scope)
    assert "\n" not in str(err.value)


def test_a_live_trl_run_takes_control(trl_run) -> None:
    """`entropyscope control` and the Control page refuse imported runs, not a TRL run writing live."""
    import time

    from analysis.liveness import control_refusal

    store, _, _ = trl_run
    info = json.loads((store / RUN / "run.json").read_text())
    running = info | {"status": "running", "heartbeat": time.time()}
    assert control_refusal(RUN, running, time.time()) is None
    imported = running | {"source": {k: v for k, v in info["source"].items() if k != "live"}}
    assert "imported" in control_refusal(RUN, imported, time.time())


def test_source_trainer_names_trls_class_under_a_users_subclass() -> None:
    """run.json's source.trainer is TRL's class, also when the user subclasses ours (docs/trl.md promises it)."""

    class MyTrainer(es_trl.EntropyScopeGRPOTrainer):
        pass

    class Deeper(MyTrainer):
        pass

    assert es_trl.trl_class(es_trl.EntropyScopeGRPOTrainer) == "GRPOTrainer"
    assert es_trl.trl_class(MyTrainer) == es_trl.trl_class(Deeper) == "GRPOTrainer"
