"""Unit tests of the dashboard's pure parts: token HTML escaping, chart helpers, the store argument,
the server command, the Control page's form model, and the queries in analysis/dashboard_queries.py."""

import ast
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import dashboard_queries as dq
from analysis.control import APPLIED, LIVE_KEYS, REJECTED, write_control
from analysis.schema import (
    CONTROLLER_AT_BOUND,
    CONTROLLER_EPS_HIGH,
    CONTROLLER_ZETA,
    ENTROPY_DELTA_BATCH,
    ENTROPY_DELTA_PRED,
    ENTROPY_MEAN,
    ENTROPY_PRED_DELTA,
    ENTROPY_TARGET,
    RESPONSE_LEN_MEAN,
    REWARD_MEAN,
)
from analysis.store_reader import StoreReader
from analysis.store_writer import RunWriter
from app import charts, controls, serve, token_html
from app.store import DEFAULT_STORE, STORE_ENV, store_path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_RUNS = ROOT / "sample_runs"


def _record(**kw: object) -> dict:
    row = {"token_id": 7, "position": 0, "logp": -0.5, "entropy": 1.0, "advantage": 0.5, "ratio": 1.0,
           "clip_side": 0, "quadrant": 1}  # fmt: skip
    return row | kw


def test_token_html_escapes_text_and_hover() -> None:
    evil = '<img src=x onerror="alert(1)">'
    records = pd.DataFrame([_record(token_id=7), _record(token_id=8, position=1, clip_side=1)])
    out = token_html.sample_row_html("#1 <b>", evil, records, {7: evil, 8: "\n"}, "entropy", 1.0)
    assert "<img" not in out and "<b>" not in out
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in out
    assert out.count('<span title="') == 2
    assert "↵" in out  # a newline token stays visible


@pytest.mark.parametrize("mode", token_html.COLOR_MODES)
def test_token_colours_cover_nan(mode: str) -> None:
    row = pd.Series(_record(entropy=float("nan"), advantage=float("nan"), clip_side=-1))
    assert token_html.background(mode, row, 1.0).startswith("rgba(")


def test_smooth_matches_ema_per_step_when_bucketed() -> None:
    steps = np.arange(0, 100, 10)  # buckets 10 steps apart
    y = np.r_[np.zeros(5), np.ones(5)]
    bucketed = charts.smooth(y, steps, 0.9)
    assert bucketed[5] == pytest.approx(1 - 0.9**10)  # the per-step time constant survives bucketing
    assert charts.smooth(y, steps, 0.0) is not None and np.array_equal(charts.smooth(y, steps, 0.0), y)


def test_run_colour_is_a_function_of_the_id_and_colliding_runs_get_a_dash() -> None:
    assert charts.run_color("grpo-fp32") == charts.run_color("grpo-fp32") in charts.RUN_PALETTE
    ids = [f"run-{i}" for i in range(40)]
    assert len({charts.run_color(r) for r in ids}) == len(charts.RUN_PALETTE)  # spread over the palette
    a = ids[0]
    b = next(r for r in ids[1:] if charts.run_color(r) == charts.run_color(a))  # 40 ids over 10 colours
    df = pd.DataFrame(
        {"run_id": [a, a, b, b], "x": [1, 2, 1, 2], "step": [1, 2, 1, 2], "value": [1.0, 2, 3, 4]}
    )
    fig = charts.compare_figure(
        df.assign(vmin=df["value"], vmax=df["value"]), "k", "k", "step", 0.0, True, "k"
    )
    assert [(t.name, t.line.color, t.line.dash) for t in fig.data] == [
        (a, charts.run_color(a), "solid"),
        (b, charts.run_color(a), "dash"),
    ]


def test_metric_axis_titles_carry_units() -> None:
    assert charts.metric_axis_title("entropy/mean") == "entropy/mean (nats)"
    assert charts.metric_axis_title("entropy/delta_batch") == "entropy/delta_batch (nats)"
    assert charts.metric_axis_title("clip/frac_high") == "clip/frac_high (fraction of tokens)"
    assert charts.metric_axis_title("time/step_s") == "time/step_s (seconds)"
    assert charts.metric_axis_title("entropy/mean", normalised=True) == "entropy/mean ÷ H0 (ratio)"
    assert charts.metric_axis_title("my/custom") == "my/custom"  # an imported key of unknown unit: its name


def test_hist_matrix_rebins_and_downsamples() -> None:
    rows = [
        {"step": s, "bin_lo": lo, "bin_hi": lo + 1.0, "count": c}
        for s in range(1, 11)
        for lo, c in ((0.0, 3), (1.0, 1))
    ]
    steps, centres, frac = charts.hist_matrix(pd.DataFrame(rows), max_cols=5)
    assert steps.tolist() == [1, 3, 5, 7, 9]
    assert centres.tolist() == [0.5, 1.5]
    assert np.allclose(frac[:, 0], [0.75, 0.25])


def test_control_figure_draws_the_controller_parameter_and_its_bound() -> None:
    w = pd.DataFrame({ENTROPY_MEAN: [1.0, 0.9, 0.8], ENTROPY_TARGET: [0.9] * 3, CONTROLLER_ZETA: [0.01, 0.02, 0.04],
                      CONTROLLER_EPS_HIGH: [0.2] * 3, CONTROLLER_AT_BOUND: [0.0, 0.0, 1.0]}, index=[1, 2, 3])  # fmt: skip
    fig = charts.control_figure(w, "repo_r", "#123456")
    assert [t.name for t in fig.data] == ["measured H", "target", CONTROLLER_ZETA, "at bound"]
    assert list(fig.data[-1].x) == [3] and fig.data[-1].yaxis == "y2"
    # The measured entropy in the run's colour (as on every page), the target dashed.
    assert fig.data[0].line.color == "#123456" and fig.data[1].line.dash == "dash"
    # No controller and no parameter moving: no right-hand axis for a constant ε_high.
    fig = charts.control_figure(w.drop(columns=[CONTROLLER_ZETA]), "none", "#123456")
    assert [t.name for t in fig.data] == ["measured H", "target"]


def test_control_figure_title_names_no_controller_for_an_imported_run() -> None:
    w = pd.DataFrame({ENTROPY_MEAN: [1.0, 0.9], ENTROPY_TARGET: [0.9, 0.9]}, index=[1, 2])
    assert charts.control_figure(w, float("nan"), "blue").layout.title.text == "Target vs measured entropy"
    assert "controller repo_r" in charts.control_figure(w, "repo_r", "blue").layout.title.text


def test_a_measured_line_equal_to_the_prediction_stays_visible() -> None:
    """ΔH measured every other step, equal to the prediction there: it draws last, with markers."""
    pred = [0.01, -0.02, 0.03, -0.01]
    w = pd.DataFrame({"pred": pred, "meas": [0.01, np.nan, 0.03, np.nan]}, index=[1, 2, 3, 4])
    fig = charts.lines_figure(w, [("meas", "measured"), ("pred", "predicted")], "T", "p", y_title="nats",
                              marked=["meas"])  # fmt: skip
    assert [(t.name, t.mode) for t in fig.data] == [("predicted", "lines"), ("measured", "lines+markers")]
    parts = pd.DataFrame({charts.DELTA_PARTS[0][0]: pred, "entropy/delta_pred": pred, "entropy/delta_batch": pred},
                         index=[1, 2, 3, 4])  # fmt: skip
    top = charts.delta_parts_figure(parts).data[-1]
    assert top.name == "measured" and top.mode == "lines+markers" and top.line.dash == "dot"


def test_lines_figure_merges_identical_lines_and_titles_both_axes() -> None:
    w = pd.DataFrame({"reward/mean": [0.1, 0.5, 0.7], "pass@1": [0.1, 0.5, 0.7], "pass@k": [0.3, 0.6, 0.9],
                      "n": [1.0, 2.0, 1.5]}, index=[1, 2, 3])  # fmt: skip
    fig = charts.lines_figure(w, [("reward/mean", "reward"), ("pass@1", "pass@1"), ("pass@k", "pass@8")],
                              "R", "r", y_title="fraction", secondary=[("n", "distinct")])  # fmt: skip
    assert [t.name for t in fig.data] == ["reward = pass@1", "pass@8", "distinct"]
    assert fig.layout.yaxis.title.text == "fraction"
    assert fig.layout.yaxis2.title.text == "distinct (dotted)"  # the right axis names what it carries
    lone = charts.lines_figure(w, [("pass@k", "pass@8")], "R", "r", y_title="fraction")
    assert lone.layout.showlegend is True  # a single trace still says what it is


def test_quadrants_share_colours_across_charts() -> None:
    keys = [f"quadrant/e{q}" for q in range(1, 5)]
    w = pd.DataFrame({k: [0.1 * q, 0.2] for q, k in enumerate(keys, start=1)}, index=[1, 2])
    lines = charts.lines_figure(
        w, [(k, k) for k in keys], "Q", "q", y_title="f", colors=charts.QUADRANT_COLORS
    )
    parts = pd.DataFrame({k: [0.01, -0.02] for k, _ in charts.DELTA_PARTS[:4]}, index=[1, 2])
    bars = charts.delta_parts_figure(parts)
    assert (
        [t.line.color for t in lines.data]
        == [t.marker.color for t in bars.data]
        == list(charts.QUADRANT_COLORS[:4])
    )


def test_delta_parts_axis_fits_the_run_not_the_warm_start_step() -> None:
    steps = np.arange(1, 41)
    e1 = np.where(steps == 1, -10.0, -0.01)  # a ±10-nat first step would flatten 39 bars of 0.01
    parts = pd.DataFrame({charts.DELTA_PARTS[0][0]: e1, charts.DELTA_PARTS[1][0]: 0.004}, index=steps)
    fig = charts.delta_parts_figure(parts)
    lo, hi = fig.layout.yaxis.range
    assert -0.05 < lo < -0.01 and 0.004 < hi < 0.05
    assert "axis fits 95% of steps" in fig.layout.annotations[0].text
    calm = charts.delta_parts_figure(parts.iloc[1:])  # no outlier: the axis is Plotly's own
    assert calm.layout.yaxis.range is None and not calm.layout.annotations


def test_store_path_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(STORE_ENV, raising=False)
    assert store_path(["-q", "--st", "x"]) == str(Path(DEFAULT_STORE).resolve())  # no abbreviations
    monkeypatch.setenv(STORE_ENV, str(tmp_path / "env"))
    assert store_path([]) == str(tmp_path / "env")
    assert store_path(["--store", str(tmp_path / "flag")]) == str(tmp_path / "flag")


def test_per_run_values_are_read_again_only_for_changed_runs(tmp_path: Path) -> None:
    """The dashboard's traces of fifty runs with one live: a refresh reads the live run's segments alone, and
    gives what one query over all of them gives."""
    from app import loaders

    def log(run_id: str, steps: range, resume: bool = False) -> None:
        with RunWriter(tmp_path, run_id, {"algo": "grpo"}, resume=resume) as w:
            for s in steps:
                w.log_scalars(s, {ENTROPY_MEAN: 1.0 / s, REWARD_MEAN: 0.1 * s})

    log("a", range(1, 30))
    log("b", range(1, 20))
    reads: list[list[str]] = []

    def read(ids: list[str]) -> dict[str, int]:
        reads.append(sorted(ids))
        return dict.fromkeys(ids, len(reads))

    store, what = str(tmp_path), ("test", tmp_path.name)
    assert loaders.per_run(store, ["a", "b"], what, read) == {"a": 1, "b": 1}
    assert loaders.per_run(store, ["b", "a"], what, read) == {"a": 1, "b": 1} and reads == [["a", "b"]]
    log("b", range(20, 25), resume=True)  # a new segment of b only
    assert loaders.per_run(store, ["a", "b"], what, read) == {"a": 1, "b": 2} and reads[1:] == [["b"]]

    keys = (ENTROPY_MEAN, REWARD_MEAN)
    got = loaders.scalars(store, ("b", "a"), keys, 10, loaders.version(store, ["a", "b"], ["steps"]))
    with closing(StoreReader(tmp_path)) as reader:
        pd.testing.assert_frame_equal(got, reader.scalars(["a", "b"], list(keys), 10))
        assert loaders.metric_keys(store, ("a", "b"), "v") == reader.keys(["a", "b"]) == sorted(keys)


def test_per_run_memory_drops_the_least_recently_used_past_its_budget() -> None:
    from app import loaders

    memo = loaders._Memo(budget=3 * 1024)
    for k in "abc":
        memo.put((k,), [k])  # a value other than a frame counts as 1 KB
    assert memo.get(("a",)) == ["a"]  # used again: b is now the oldest
    memo.put(("d",), ["d"])
    assert memo.get(("b",)) is None and [memo.get((k,)) for k in "acd"] == [["a"], ["c"], ["d"]]
    memo.put(("big",), pd.DataFrame({"x": np.zeros(1000)}))  # 8 KB: more than the whole budget
    assert memo.get(("big",)) is None and memo.get(("a",)) is None


def test_launch_warm_up_reads_the_listing_before_the_first_visitor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """app.launch's warm-up reads every run's summary once; the first page's listing then reads none."""
    from analysis import run_cache
    from app import launch

    for run_id, h in (("a", 1.0), ("b", 0.5)):
        with RunWriter(tmp_path, run_id, {"algo": "grpo"}) as w:
            w.log_scalars(1, {ENTROPY_MEAN: h})
    run_cache._memory.clear()  # a server process starts with nothing cached
    reads: list[list[str]] = []
    original = StoreReader.read_summaries
    monkeypatch.setattr(
        StoreReader, "read_summaries", lambda self, ids: reads.append(sorted(ids)) or original(self, ids)
    )
    launch.warm(launch.script_store([str(serve.MAIN), "--server.port", "1", "--", "--store", str(tmp_path)]))
    assert reads == [["a", "b"]]
    with closing(StoreReader(tmp_path)) as reader:
        assert reader.runs().set_index("run_id")["h0"].to_dict() == {"a": 1.0, "b": 0.5}
    assert reads == [["a", "b"]]


def test_serve_command_and_lazy_import(tmp_path: Path) -> None:
    cmd = serve.command(str(tmp_path), "0.0.0.0", 9999)
    assert cmd[:4] == [sys.executable, "-m", "app.launch", str(serve.MAIN)]
    assert (
        cmd[cmd.index("--server.port") + 1] == "9999" and cmd[cmd.index("--server.address") + 1] == "0.0.0.0"
    )
    assert cmd[cmd.index("--server.headless") + 1] == "true"
    assert cmd[-3:] == ["--", "--store", str(tmp_path)]
    probe = "import sys, app.serve; print('streamlit' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"


def test_wait_ready_reports_a_dead_server() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait()
    with pytest.raises(RuntimeError, match="exited with code 3"):
        serve.wait_ready("http://127.0.0.1:9", timeout=5, proc=proc)


# ---- analysis/dashboard_queries.py ------------------------------------------------------------------------


def _store(tmp_path: Path, steps: int = 4) -> Path:
    config = {"prompts_per_step": 2, "group_size": 3}
    with RunWriter(tmp_path, "r", config, flush_every_steps=1) as w:
        for s in range(1, steps + 1):
            w.log_scalars(s, {ENTROPY_MEAN: 1.0 - 0.1 * s, ENTROPY_PRED_DELTA: -0.1, RESPONSE_LEN_MEAN: 2.0})
            if s % 2 == 0:  # batch ΔH measured every other step
                w.log_scalars(s, {ENTROPY_DELTA_BATCH: -0.1 * s, ENTROPY_DELTA_PRED: -0.09 * s})
        w.log_event(2, "alert_fired", "low entropy", severity="warning", payload={"rule": "collapse"})
        w.log_event(3, "alert_fired", "spike", severity="warning", payload={"rule": "ratio"})
        w.log_event(4, "alert_resolved", "low entropy ok", payload={"rule": "collapse"})
    return tmp_path


def test_fingerprint_changes_with_new_segments(tmp_path: Path) -> None:
    _store(tmp_path)
    before = dq.fingerprint(tmp_path, ["r"], ["steps"])
    assert before == dq.fingerprint(tmp_path, None, ["steps"])
    with RunWriter(tmp_path, "r", {}, resume=True) as w:
        w.log_scalars(5, {ENTROPY_MEAN: 0.4})
    assert dq.fingerprint(tmp_path, ["r"], ["steps"]) != before
    assert dq.fingerprint(tmp_path / "missing", None, ["steps"]) == ""


def test_axes_pairs_and_alerts(tmp_path: Path) -> None:
    with closing(StoreReader(_store(tmp_path))) as r:
        seen, missing = dq.tokens_seen(r, ["r"])
        assert seen["tokens_seen"].tolist() == [12.0, 24.0, 36.0, 48.0] and missing == []
        pairs = dq.entropy_delta_pairs(r, "r")
        assert pairs["step"].tolist() == [2, 4]
        assert np.allclose(pairs["measured"], [-0.2, -0.4])
        assert np.allclose(pairs["predicted"], [-0.18, -0.36])
        assert dq.active_alerts(r) == {"r": 1}
        assert set(dq.run_starts(r, ["r"])) == {"r"}


def test_top_tokens_and_decoding() -> None:
    with closing(StoreReader(SAMPLE_RUNS)) as r:
        top = dq.top_entropy_tokens(r, "grpo-fp32", 5)
    assert len(top) == 5 and top["entropy"].is_monotonic_decreasing
    assert top["prompt_text"].notna().all()
    texts, found = dq.decode_tokens(SAMPLE_RUNS, "grpo-fp32", [1, 5])
    assert found and texts == {1: "<eos>", 5: "1"}
    texts, found = dq.decode_tokens(SAMPLE_RUNS / "nowhere", "x", [5])
    assert not found and texts == {5: "⟨5⟩"}


def test_latest_values_skip_non_finite(tmp_path: Path) -> None:
    with RunWriter(tmp_path, "r", {}) as w:
        w.log_scalars(1, {ENTROPY_MEAN: 0.9, CONTROLLER_ZETA: 0.1})
        w.log_scalars(2, {ENTROPY_MEAN: 0.8, CONTROLLER_ZETA: float("nan")})
    with closing(StoreReader(tmp_path)) as r:
        assert dq.latest_values(r, "r", [ENTROPY_MEAN, CONTROLLER_ZETA, "never/logged"]) == {
            ENTROPY_MEAN: (2, 0.8),
            CONTROLLER_ZETA: (1, 0.1),
        }


def test_control_history_settings_and_request(tmp_path: Path) -> None:
    config = {"lr": 1e-3, "eps_low": 0.2, "controller": "repo_r"}
    with RunWriter(tmp_path, "r", config) as w:
        w.log_event(3, APPLIED, "v1", payload={"version": 1, "old": {"lr": 1e-3}, "new": {"lr": 5e-4}})
        w.log_event(
            4, REJECTED, "bad json", severity="warning", payload={"version": None, "reason": "bad JSON"}
        )
        w.log_event(
            5, APPLIED, "v3", payload={"version": 3, "old": {"lr": 5e-4}, "new": {"lr": 2e-4, "eps_low": 0.3}}
        )
    with closing(StoreReader(tmp_path)) as r:
        history = dq.control_history(r, "r")
    assert history["version"].tolist() == [1, None, 3]
    assert history["reason"].tolist() == ["", "bad JSON", ""]
    current = dq.settings_in_force(config, history)
    assert set(current) == set(LIVE_KEYS) and current["lr"] == 2e-4 and current["eps_low"] == 0.3
    assert current["target_entropy"] is None
    assert controls.last_acknowledged(history) == 3
    assert dq.control_request(tmp_path, "r") is None
    write_control(tmp_path / "r", {"lr": 1e-4})
    # cumulative: the change the trainer applied (eps_low) and the new request
    assert dq.control_request(tmp_path, "r")["settings"] == {"eps_low": 0.3, "lr": 1e-4}


def test_alert_episodes_pair_fired_and_resolved(tmp_path: Path) -> None:
    with RunWriter(tmp_path, "r", {}) as w:
        w.log_event(1, "alert_resolved", "old resolved", severity="warning", payload={"rule": "clip"})
        w.log_event(2, "alert_fired", "collapse 1", severity="critical", payload={"rule": "collapse"})
        w.log_event(3, "alert_fired", "collapse again", severity="critical", payload={"rule": "collapse"})
        w.log_event(4, "alert_resolved", "collapse ok", severity="critical", payload={"rule": "collapse"})
        w.log_event(
            6, "alert_fired", "collapse 2", severity="critical", payload={"rule": "collapse", "since": 2}
        )
        w.log_event(7, "alert_fired", "no rule name", severity="info")
    with closing(StoreReader(tmp_path)) as r:
        ep = dq.alert_episodes(r)
        active = dq.active_alerts(r)
    rows = ep[["rule", "state", "held_from_step", "fired_step", "resolved_step", "message"]].astype(object)
    assert rows.where(rows.notna(), None).values.tolist() == [
        ["no rule name", "active", 7, 7, None, "no rule name"],  # active first, newest first
        ["collapse", "active", 2, 6, None, "collapse 2"],  # its condition held from step 2
        ["collapse", "resolved", 2, 2, 4, "collapse ok"],
        ["clip", "resolved", None, None, 1, "old resolved"],  # its firing predates the recorded events
    ]
    assert active == {"r": int((ep["state"] == "active").sum())}  # the Runs page count agrees


def test_control_form_sends_only_changes() -> None:
    current = {"lr": 1e-3, "target_entropy": None, "schedule": "constant", "schedule_cycles": 3}
    entries = {"lr": " 1e-3 ", "target_entropy": "", "schedule": "od", "schedule_cycles": "x"}
    assert controls.changed(entries, current) == {"schedule": "od", "schedule_cycles": "x"}
    assert controls.changed({"target_entropy": "0.7", "schedule": None}, current) == {"target_entropy": "0.7"}
    assert [controls.shown(v) for v in (None, 1e-4, 0.5, 3, "od")] == ["", "0.0001", "0.5", "3", "od"]
    knobs = {k.key for group in (controls.SETPOINT, controls.CLIPPING, *controls.CONTROLLER_KNOBS.values())
             for k in group}  # fmt: skip
    assert knobs == set(LIVE_KEYS)  # every live-tunable key has a box, and only those


def test_control_fates_follow_the_acknowledgements() -> None:
    """An acknowledgement written before `includes` existed covers its own version; one with `includes`, each."""
    history = pd.DataFrame({"version": [1, 2, 4], "kind": [APPLIED, REJECTED, APPLIED], "step": [4, 9, 12],
                            "reason": ["", "no", ""], "message": ["", "", ""], "includes": [[], [], [3, 4]],
                            "old": [{"lr": 0.1}, {}, {"eps_low": 0.2}], "new": [{"lr": 0.2}, {}, {"eps_low": 0.1}]})  # fmt: skip
    fates = controls.fates(history)
    assert sorted(fates) == [1, 2, 3, 4] and 5 not in fates  # 5: pending
    assert fates[2].outcome == "rejected" and fates[2].detail == "no"
    assert fates[1].outcome == "applied" and controls.fate_text(fates[1]) == "lr 0.1 → 0.2"
    assert (fates[3].outcome, fates[3].by, fates[3].step) == ("superseded", 4, 12)
    assert controls.requests({"version": 7, "settings": {"lr": 0.1}}) == [
        {"version": 7, "settings": {"lr": 0.1}}
    ]


def test_control_knobs_are_the_keys_that_act_under_each_controller() -> None:
    from analysis.control import CONTROLLER_KEYS, SETPOINT_KEYS, acting_keys

    assert {
        c: tuple(k.key for k in knobs) for c, knobs in controls.CONTROLLER_KNOBS.items()
    } == CONTROLLER_KEYS
    assert tuple(k.key for k in controls.SETPOINT) == SETPOINT_KEYS
    assert {k.key for k in controls.CLIPPING} == set(acting_keys("none"))


def floating_strings(path: Path) -> list[int]:
    """Lines of bare string expressions other than docstrings: Streamlit's magic prints them on the page."""
    scopes = (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        body = getattr(node, "body", None)
        for i, stmt in enumerate(body if isinstance(body, list) else []):
            docstring = i == 0 and isinstance(node, scopes)
            if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and not docstring:
                lines.append(stmt.lineno)
    return lines


@pytest.mark.parametrize("path", sorted((ROOT / "app").rglob("*.py")), ids=lambda p: p.name)
def test_no_page_prints_a_floating_string(path: Path) -> None:
    assert floating_strings(path) == []


def test_a_long_legend_grows_the_figure_not_squeezes_the_plot() -> None:
    """16 runs of 29-character ids take several legend rows: each row past the first adds to the height."""
    steps = [1, 2]
    few = pd.DataFrame({"run_id": ["r0"] * 2, "x": steps, "step": steps, "value": [1.0, 0.9],
                        "vmin": [1.0, 0.9], "vmax": [1.0, 0.9]})  # fmt: skip
    many = pd.concat([few.assign(run_id=f"q1-controllers-49533096-s50{i:02d}") for i in range(16)])
    small = charts.compare_figure(few, "k", "k", "step", 0.0, False, "nats")
    large = charts.compare_figure(many, "k", "k", "step", 0.0, False, "nats")
    assert small.layout.height == charts.HEIGHT
    rows = charts.legend_rows(large)
    assert rows >= 3 and large.layout.height == charts.HEIGHT + charts.LEGEND_ROW_PX * (rows - 1)
