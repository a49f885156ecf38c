"""AppTest of every dashboard page over sample_runs/, an empty store, a failed run and a truncated segment;
the Control page over a run that is still open (status running), the Alerts page over recorded alerts.

Pages run in-process (streamlit.testing.v1.AppTest), so these are fast and need no browser; the real
browser checks are in test_browser.py.
"""

import base64
import errno
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

import analysis.atomic
import analysis.control
from analysis.control import APPLIED, REJECTED, read_version, write_control
from analysis.schema import (
    CLIP_FRAC,
    CONTROLLER_AT_BOUND,
    CONTROLLER_ZETA,
    ENTROPY_DELTA_BATCH,
    ENTROPY_DELTA_PRED,
    ENTROPY_DELTA_PRED_E1,
    ENTROPY_DELTA_PRED_E2,
    ENTROPY_DELTA_PRED_E3,
    ENTROPY_DELTA_PRED_E4,
    ENTROPY_DELTA_PRED_OTHER,
    ENTROPY_MEAN,
    ENTROPY_P10,
    ENTROPY_P90,
    ENTROPY_TARGET,
    REWARD_MEAN,
)
from analysis.store_reader import StoreReader
from analysis.store_writer import RunWriter
from app import loaders
from app.store import STORE_ENV

ROOT = Path(__file__).resolve().parents[1]
MAIN = str(ROOT / "app" / "main.py")
SAMPLE_RUNS = ROOT / "sample_runs"
PAGES = ("runs", "compare", "sweeps", "run_detail", "token_inspector", "control", "alerts")
TIMEOUT_S = 60


def open_page(store: Path, page: str, monkeypatch: pytest.MonkeyPatch, **params: str | list[str]) -> AppTest:
    """Run the app's entry with `page` selected and the given URL query parameters."""
    monkeypatch.setenv(STORE_ENV, str(store))
    at = AppTest.from_file(MAIN, default_timeout=TIMEOUT_S)
    for name, value in params.items():
        at.query_params[name] = value
    at.run()  # the default page; it registers st.navigation's pages, which switch_page looks the file up in
    at.switch_page(f"views/{page}.py")
    return at.run()


def figures(at: AppTest) -> list[dict]:
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def values(array: list | dict) -> np.ndarray:
    """A trace's x or y as sent to the browser: a list, or Plotly's base64 typed-array form."""
    if isinstance(array, dict):
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"])
    return np.asarray(array, dtype=np.float64)


def legend_traces(fig: dict) -> list[str]:
    return [t.get("name") for t in fig["data"] if t.get("showlegend", True)]


def assert_clean(at: AppTest) -> None:
    """No traceback on the page; the message says which one, with its text."""
    assert not at.exception, [e.message for e in at.exception]


# ---- sample_runs: the content a new user sees ------------------------------------------------------------


def test_runs_page_lists_sample_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    at = open_page(SAMPLE_RUNS, "runs", monkeypatch)
    assert_clean(at)
    assert not at.warning
    table = at.dataframe[0].value
    on_disk = sorted(d.name for d in Path(SAMPLE_RUNS).iterdir() if (d / "run.json").is_file())
    assert len(on_disk) >= 3 and sorted(table["run_id"]) == on_disk
    assert set(table["status_label"]) == {"finished"}
    assert table["entropy_change_pct"].lt(0).all()  # every sample run loses entropy: collapse is the norm
    assert [b.label for b in at.button][0].startswith("Compare selected")


def test_runs_page_filters_by_url(monkeypatch: pytest.MonkeyPatch) -> None:
    at = open_page(SAMPLE_RUNS, "runs", monkeypatch, algo="dapo")
    assert_clean(at)
    assert at.dataframe[0].value["run_id"].tolist() == ["dapo-fp32"]


def test_compare_defaults_to_entropy_and_reward_smoothed(monkeypatch: pytest.MonkeyPatch) -> None:
    """As W&B opens: several metrics, each smoothed (weight 0.6) over its raw line drawn faintly, y axes titled."""
    at = open_page(SAMPLE_RUNS, "compare", monkeypatch, runs=["grpo-fp32", "grpo-bf16"])
    assert_clean(at)
    assert not at.warning
    assert at.slider(key="smooth").value == pytest.approx(0.6)
    figs = figures(at)
    assert [f["layout"]["meta"]["panel"] for f in figs] == [
        f"compare:{ENTROPY_MEAN}",
        f"compare:{REWARD_MEAN}",
    ]
    assert [f["layout"]["yaxis"]["title"]["text"] for f in figs] == [
        "entropy/mean (nats)",
        "reward/mean (per completion)",
    ]
    for fig in figs:
        assert sorted(legend_traces(fig)) == ["grpo-bf16", "grpo-fp32"]
        raw = [t for t in fig["data"] if t["name"].endswith(" raw")]
        assert len(raw) == 2 and all(t["opacity"] < 0.5 for t in raw)
    assert at.get("download_button"), "CSV download missing"


def test_compare_smooth_0_in_the_url_draws_raw_lines_only(monkeypatch: pytest.MonkeyPatch) -> None:
    at = open_page(SAMPLE_RUNS, "compare", monkeypatch, runs=["grpo-fp32"], metrics=ENTROPY_MEAN, smooth="0")
    assert_clean(at)
    assert at.slider(key="smooth").value == 0
    (fig,) = figures(at)
    assert [t["name"] for t in fig["data"] if t.get("fill") != "tonexty" and "max" not in t["name"]] == [
        "grpo-fp32"
    ]


def test_a_run_keeps_its_colour_across_pages_and_run_lists(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Compare with different selections and a store that gains runs, Run detail and Alerts: one colour."""

    def compare_colour(store: Path, runs: list[str], run_id: str) -> str:
        at = open_page(store, "compare", monkeypatch, runs=runs, metrics=ENTROPY_MEAN)
        assert_clean(at)
        (fig,) = figures(at)
        return next(t["line"]["color"] for t in fig["data"] if t["name"] == run_id)

    colour = compare_colour(SAMPLE_RUNS, ["grpo-fp32", "dapo-fp32"], "grpo-fp32")
    assert compare_colour(SAMPLE_RUNS, ["adapo", "repo-r", "grpo-fp32"], "grpo-fp32") == colour
    store = tmp_path / "store"  # the store gains runs whose ids sort before it
    shutil.copytree(SAMPLE_RUNS / "grpo-fp32", store / "grpo-fp32")
    for run_id in ("aaa", "grpo-a", "b"):
        with RunWriter(store, run_id, {"algo": "grpo"}) as w:
            w.log_scalars(1, {ENTROPY_MEAN: 1.0})
            w.log_event(1, "alert_fired", "firing", severity="critical", payload={"rule": "collapse"})
    assert compare_colour(store, ["aaa", "b", "grpo-a", "grpo-fp32"], "grpo-fp32") == colour
    at = open_page(store, "run_detail", monkeypatch, run="grpo-fp32")
    assert_clean(at)
    entropy = next(f for f in figures(at) if f["layout"]["meta"]["panel"] == "entropy")
    assert next(t["line"]["color"] for t in entropy["data"] if t["name"] == "mean") == colour
    assert any(colour in m.value and "grpo-fp32" in m.value for m in at.markdown)
    other = compare_colour(store, ["aaa", "grpo-fp32"], "aaa")
    assert compare_colour(store, ["b", "aaa"], "aaa") == other
    at = open_page(store, "alerts", monkeypatch)
    assert_clean(at)
    assert f"color: {other}" in at.dataframe[0].proto.arrow_data.styler.styles


def test_compare_view_comes_from_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    params = {"runs": ["grpo-fp32", "dapo-fp32"], "metrics": [ENTROPY_MEAN, CLIP_FRAC], "x": "tokens seen",
              "smooth": "0.8", "norm": "true"}  # fmt: skip
    at = open_page(SAMPLE_RUNS, "compare", monkeypatch, **params)
    assert_clean(at)
    figs = figures(at)
    assert [f["layout"]["meta"]["panel"] for f in figs] == [f"compare:{ENTROPY_MEAN}", f"compare:{CLIP_FRAC}"]
    assert "tokens" in figs[0]["layout"]["xaxis"]["title"]["text"]
    assert at.slider(key="smooth").value == pytest.approx(0.8)
    assert at.toggle(key="norm").value is True
    # Normalised by H0, the first raw point of each run is exactly 1 (H0 is the first step's entropy).
    raw = [t for t in figs[0]["data"] if t["name"].endswith(" raw")]
    assert [values(t["y"])[0] for t in raw] == [pytest.approx(1.0), pytest.approx(1.0)]
    assert all(np.all(np.diff(values(t["x"])) > 0) for t in raw)  # tokens seen only grows


def test_compare_draws_without_the_runs_listing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Compare reads run.json files and the chosen runs only: on a store of a thousand runs with live ones, the
    listing of every run's summary (what the Runs page shows) is read again at every segment a trainer writes."""
    monkeypatch.setenv(STORE_ENV, str(SAMPLE_RUNS))
    at = AppTest.from_file(MAIN, default_timeout=TIMEOUT_S)
    at.query_params["runs"] = ["grpo-fp32", "dapo-fp32"]
    at.query_params["norm"] = "true"
    at.run()
    listings: list[str] = []
    monkeypatch.setattr(loaders, "runs_table", lambda store, version: listings.append(store))
    at.switch_page("views/compare.py")
    at.run()
    assert_clean(at)
    assert listings == [] and len(figures(at)) == 2


def test_compare_opens_on_the_newest_runs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A first visit (no runs in the URL) shows curves: the store's newest runs, up to eight."""
    at = open_page(SAMPLE_RUNS, "compare", monkeypatch)
    assert_clean(at)
    on_disk = sorted(d.name for d in SAMPLE_RUNS.iterdir() if (d / "run.json").is_file())
    assert all(sorted(legend_traces(fig)) == on_disk for fig in figures(at))
    for i in range(10):  # r9 is the newest
        with RunWriter(tmp_path, f"r{i}", {"algo": "grpo"}) as w:
            w.log_scalars(1, {ENTROPY_MEAN: 1.0})
        info = json.loads((tmp_path / f"r{i}" / "run.json").read_text())
        (tmp_path / f"r{i}" / "run.json").write_text(json.dumps(info | {"created": 1e9 + i}))
    at = open_page(tmp_path, "compare", monkeypatch)
    assert_clean(at)
    assert at.multiselect(key="runs").value == [f"r{i}" for i in range(9, 1, -1)]
    assert sorted(legend_traces(figures(at)[0])) == sorted(f"r{i}" for i in range(2, 10))


def test_compare_of_many_runs_draws_one_thinner_line_each_and_says_what_is_hidden(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Above MANY_RUNS runs: no band, no faint raw line, fewer points per line, and a caption saying so."""
    from app.views.compare import MANY_RUNS, MAX_POINTS, points_per_trace

    n = MANY_RUNS + 1
    points = points_per_trace(n)
    assert points < MAX_POINTS
    for i in range(n):
        with RunWriter(tmp_path, f"r{i:02d}", {"algo": "grpo"}) as w:
            # more steps than the fewer points (bucketed); the first two more than MAX_POINTS too
            for step in range(1, (MAX_POINTS if i < 2 else points) + 50):
                w.log_scalars(step, {ENTROPY_MEAN: 1.0 + (step % 7) / 10})
    ids = [f"r{i:02d}" for i in range(n)]
    at = open_page(tmp_path, "compare", monkeypatch, runs=ids, metrics=ENTROPY_MEAN)
    assert_clean(at)
    (fig,) = figures(at)
    assert sorted(t["name"] for t in fig["data"]) == ids  # one smoothed line per run, nothing else
    assert all(len(values(t["x"])) <= points for t in fig["data"])
    assert any(f"{n} runs selected" in c.value and "min/max band" in c.value for c in at.caption)

    at = open_page(tmp_path, "compare", monkeypatch, runs=ids[:2], metrics=ENTROPY_MEAN)  # a few runs: all
    (fig,) = figures(at)
    names = [t["name"] for t in fig["data"]]
    assert {f"{r} {part}" for r in ids[:2] for part in ("raw", "max", "min")} <= set(names)
    assert not any("runs selected" in c.value for c in at.caption)


def test_compare_with_nothing_selected_explains(monkeypatch: pytest.MonkeyPatch) -> None:
    at = open_page(SAMPLE_RUNS, "compare", monkeypatch)
    at = at.multiselect(key="runs").set_value([]).run()
    assert_clean(at)
    assert at.info and "Choose runs" in at.info[0].value


def test_run_detail_has_every_panel(monkeypatch: pytest.MonkeyPatch) -> None:
    at = open_page(SAMPLE_RUNS, "run_detail", monkeypatch, run="grpo-fp32")
    assert_clean(at)
    assert not at.warning
    panels = {f["layout"]["meta"]["panel"] for f in figures(at)}
    expected = {"entropy", "entropy_hist", "control", "entropy_change", "clip", "quadrants", "precision_ratio",
                "precision_diff", "reward", "optim", "events", "entropy_delta", "entropy_delta_parts"}  # fmt: skip
    assert expected <= panels  # grpo-fp32 measures ΔH every 10th step (sample_runs.py)
    by_panel = {f["layout"]["meta"]["panel"]: f for f in figures(at)}
    untitled = [
        p for p, f in by_panel.items() if not f["layout"].get("yaxis", {}).get("title", {}).get("text")
    ]
    assert not untitled
    quadrant_lines = [t["line"]["color"] for t in by_panel["quadrants"]["data"]]
    quadrant_bars = [
        t["marker"]["color"] for t in by_panel["entropy_delta_parts"]["data"] if t["type"] == "bar"
    ]
    assert quadrant_lines == quadrant_bars[:4]  # E1..E4 keep one colour each across the charts
    assert "pass@8" in {t["name"] for t in by_panel["reward"]["data"]}  # k stated: the config's group_size
    entropy = by_panel["entropy"]
    assert {"mean", "p10–p90", "median"} <= {t["name"] for t in entropy["data"]}
    assert at.selectbox(key="run").value == "grpo-fp32"


def test_run_detail_without_batch_delta_says_so_once(monkeypatch: pytest.MonkeyPatch) -> None:
    at = open_page(SAMPLE_RUNS, "run_detail", monkeypatch, run="dapo-fp32")
    assert_clean(at)
    assert not {f["layout"]["meta"]["panel"] for f in figures(at)} & {"entropy_delta", "entropy_delta_parts"}
    assert sum("No batch ΔH" in c.value for c in at.caption) == 1


def test_run_detail_draws_batch_delta_and_its_quadrant_parts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    parts = (ENTROPY_DELTA_PRED_E1, ENTROPY_DELTA_PRED_E2, ENTROPY_DELTA_PRED_E3, ENTROPY_DELTA_PRED_E4)
    with RunWriter(tmp_path, "d", {"algo": "grpo", "controller": "none", "delta_every": 2}) as w:
        for s in range(1, 11):
            w.log_scalars(s, {ENTROPY_MEAN: 1.0 - 0.01 * s})
            if s % 2 == 0:  # measured every other step
                pred = 0.01 * (-1) ** (s // 2) * s
                w.log_scalars(s, {ENTROPY_DELTA_PRED: pred, ENTROPY_DELTA_BATCH: 2 * pred,
                                  ENTROPY_DELTA_PRED_OTHER: 0.0} | dict.fromkeys(parts, pred / 4))  # fmt: skip
    at = open_page(tmp_path, "run_detail", monkeypatch, run="d")
    assert_clean(at)
    by_panel = {f["layout"]["meta"]["panel"]: f for f in figures(at)}
    scatter = by_panel["entropy_delta"]
    assert "r = 1.00, slope 2.00, n = 5" in scatter["layout"]["title"]["text"]
    bars = [t for t in by_panel["entropy_delta_parts"]["data"] if t["type"] == "bar"]
    assert [t["name"][:2] for t in bars] == ["E1", "E2", "E3", "E4", "ot"]
    assert all(values(t["x"]).tolist() == [2, 4, 6, 8, 10] for t in bars)
    assert not any("No batch ΔH" in c.value for c in at.caption)


def test_token_inspector_colours_escaped_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    at = open_page(SAMPLE_RUNS, "token_inspector", monkeypatch, run="grpo-fp32", step="37", color="advantage")
    assert_clean(at)
    assert not at.warning
    html = next(m.value for m in at.markdown if "entropyscope-tokens" in m.value)
    assert html.count("<span title=") >= 8  # the trainer records tokens of 8 sequences per step
    assert "&lt;eos&gt;" in html and "<eos>" not in html  # token text is escaped, not markup
    assert at.select_slider(key="step").value == 37
    assert len(at.dataframe) == 2  # all completions + forking tokens


# ---- damaged and empty stores: no page may show a traceback ----------------------------------------------


def _failed_store(root: Path, with_data: bool) -> Path:
    store = root / "failed"
    with (
        pytest.raises(RuntimeError),
        RunWriter(store, "crashed", {"algo": "grpo", "controller": "none"}) as w,
    ):
        if with_data:
            w.log_scalars(1, {ENTROPY_MEAN: 0.8, ENTROPY_P10: 0.1, ENTROPY_P90: 1.5, REWARD_MEAN: 0.2})
            w.log_hist(1, [0.0, 1.0, 2.0], [3, 1])
        raise RuntimeError("out of memory")
    return store


def _truncated_store(root: Path) -> Path:
    """A copy of two sample runs where one run's steps and tokens segments lost their second half."""
    store = root / "truncated"
    for run in ("grpo-fp32", "dapo-fp32"):
        shutil.copytree(SAMPLE_RUNS / run, store / run, ignore=shutil.ignore_patterns("checkpoints"))
    for table in ("steps", "tokens"):
        for seg in (store / "grpo-fp32" / table).glob("*.parquet"):
            data = seg.read_bytes()
            seg.write_bytes(data[: len(data) // 2])
    return store


STORES = {
    "empty": lambda root: (root / "empty").mkdir() or root / "empty",
    "missing": lambda root: root / "does-not-exist",
    "failed-run": lambda root: _failed_store(root, with_data=True),
    "failed-before-step-1": lambda root: _failed_store(root, with_data=False),
    "truncated-segment": _truncated_store,
}


@pytest.mark.filterwarnings("ignore:skipping unreadable run-store segment:RuntimeWarning")
@pytest.mark.parametrize("kind", list(STORES))
@pytest.mark.parametrize("page", PAGES)
def test_no_page_shows_a_traceback(
    kind: str, page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = STORES[kind](tmp_path)
    runs = sorted(p.name for p in store.iterdir()) if store.is_dir() else []
    params = {"runs": runs} if page in ("compare", "alerts") and runs else {}
    at = open_page(store, page, monkeypatch, **params)
    assert_clean(at)
    assert at.title, "page did not render"
    if not runs:
        assert any("No runs" in i.value for i in at.info)


@pytest.mark.filterwarnings("ignore:skipping unreadable run-store segment:RuntimeWarning")
def test_truncated_run_keeps_its_intact_tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Losing the steps segment empties the charts of that run only; hists and the other run still show."""
    store = _truncated_store(tmp_path)
    at = open_page(store, "run_detail", monkeypatch, run="grpo-fp32")
    assert_clean(at)
    assert {f["layout"]["meta"]["panel"] for f in figures(at)} >= {"entropy_hist", "events"}
    at = open_page(store, "compare", monkeypatch, runs=["grpo-fp32", "dapo-fp32"])
    assert legend_traces(figures(at)[0]) == ["dapo-fp32"]


def test_failed_run_is_shown_failed_with_its_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = _failed_store(tmp_path, with_data=True)
    at = open_page(store, "runs", monkeypatch)
    assert at.dataframe[0].value["status_label"].tolist() == ["failed"]
    at = open_page(store, "run_detail", monkeypatch)
    events = next(f for f in figures(at) if f["layout"]["meta"]["panel"] == "events")
    assert events["data"][0]["y"] == ["error"]


# ---- Control -----------------------------------------------------------------------------------------------


@pytest.fixture
def open_run(tmp_path: Path) -> Iterator[tuple[Path, RunWriter]]:
    """A repo_r run left open (status running) with 3 steps, one applied and one rejected control change."""
    store = tmp_path / "store"
    config = {"controller": "repo_r", "lr": 0.001, "target_entropy": None, "eps_low": 0.2, "zeta_max": None}
    with RunWriter(store, "open", config) as w:
        for s in (1, 2, 3):
            w.log_scalars(s, {ENTROPY_MEAN: 1.0 - 0.1 * s, ENTROPY_TARGET: 0.9, CONTROLLER_ZETA: 0.01 * s,
                              CONTROLLER_AT_BOUND: float(s == 3)})  # fmt: skip
        w.flush()
        run_dir = store / "open"
        write_control(run_dir, {"lr": 5e-4})
        w.log_event(2, APPLIED, "control v1 applied", payload={"version": 1, "old": {"lr": 0.001},
                                                                "new": {"lr": 5e-4}})  # fmt: skip
        write_control(run_dir, {"eps_low": 0.9})
        w.log_event(3, REJECTED, "control rejected", severity="warning",
                    payload={"version": 2, "reason": "eps_low 0.9 exceeds eps_high"})  # fmt: skip
        yield store, w


def text_box(at: AppTest, label: str):  # noqa: ANN201 - AppTest's element type is private
    return next(t for t in at.text_input if t.label == label)


def apply_button(at: AppTest):  # noqa: ANN201
    return next(b for b in at.button if b.label == "Apply")


def test_control_shows_state_history_and_settings_in_force(
    open_run: tuple[Path, RunWriter], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, _ = open_run
    at = open_page(store, "control", monkeypatch, run="open")
    assert_clean(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["entropy"] == "0.700" and metrics["ζ"] == "0.03" and metrics["at a bound"] == "yes"
    assert at.error and "Version 2 rejected at step 3: eps_low 0.9 exceeds eps_high" in at.error[0].value
    history = at.dataframe[0].value
    assert history["version"].tolist() == [2, 1] and history["result"].tolist() == ["rejected", "applied"]
    assert history["change"].tolist()[1] == "lr 0.001 → 0.0005"
    assert text_box(at, "learning rate").value == "0.0005"  # the applied change, not the config's 0.001
    assert text_box(at, "ζ max").value == ""  # None in the config: the trainer's own default
    assert not apply_button(at).disabled
    panels = [json.loads(el.proto.spec)["layout"]["meta"]["panel"] for el in at.get("plotly_chart")]
    assert panels == ["control"]


def test_control_apply_sends_only_changed_keys(
    open_run: tuple[Path, RunWriter], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, _ = open_run
    at = open_page(store, "control", monkeypatch, run="open")
    text_box(at, "learning rate").input("5e-4")  # the value in force, written differently: not a change
    text_box(at, "target entropy (nats)").input("0.8")
    text_box(at, "ζ max").input("0.5")
    apply_button(at).click().run()
    assert_clean(at)
    doc = json.loads((store / "open" / "control.json").read_text())
    assert doc["version"] == 3 and doc["requests"][-1]["settings"] == {"target_entropy": 0.8, "zeta_max": 0.5}
    assert doc["settings"] == {"lr": 5e-4, "target_entropy": 0.8, "zeta_max": 0.5}  # cumulative: v1 stays
    assert at.info and at.info[0].value.startswith("Version 3 pending (target_entropy=0.8, zeta_max=0.5)")


def test_control_rejects_bad_input_in_one_line(
    open_run: tuple[Path, RunWriter], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, _ = open_run
    at = open_page(store, "control", monkeypatch, run="open")
    apply_button(at).click().run()
    assert [i.value for i in at.info] == ["Nothing changed: edit a value, then Apply."]
    text_box(at, "ε low").input("1.5")
    apply_button(at).click().run()
    assert_clean(at)
    (message,) = [e.value for e in at.error if e.value.startswith("Not sent")]
    assert "eps_low" in message and "\n" not in message
    assert read_version(store / "open") == 2  # nothing written


def test_control_on_a_read_only_store_says_so_in_one_line(
    open_run: tuple[Path, RunWriter], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, _ = open_run

    def read_only(path: Path, obj: object) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(analysis.atomic, "write_json_atomic", read_only)
    at = open_page(store, "control", monkeypatch, run="open")
    text_box(at, "target entropy (nats)").input("0.8")
    apply_button(at).click().run()
    assert not at.exception
    (message,) = [e.value for e in at.error if e.value.startswith("Not sent")]
    assert message == f"Not sent: cannot write {store / 'open' / 'control.json'} (Read-only file system)"


def test_control_history_shows_every_version_and_its_fate(
    open_run: tuple[Path, RunWriter], monkeypatch: pytest.MonkeyPatch
) -> None:
    """v3 and v4 written within one step (one acknowledgement covers both), v5 still pending: all listed."""
    store, w = open_run
    write_control(store / "open", {"zeta_max": 0.5})
    write_control(store / "open", {"target_entropy": 0.8})
    w.log_event(4, APPLIED, "control v4 (includes v3) applied", payload={
        "version": 4, "includes": [3, 4], "old": {"zeta_max": None, "target_entropy": None},
        "new": {"zeta_max": 0.5, "target_entropy": 0.8}})  # fmt: skip
    w.flush()
    write_control(store / "open", {"lr": 2e-4})
    at = open_page(store, "control", monkeypatch, run="open")
    assert_clean(at)
    history = at.dataframe[0].value
    assert history["version"].tolist() == [5, 4, 3, 2, 1]
    assert history["result"].tolist() == [
        "pending",
        "applied",
        "superseded: included in v4",
        "rejected",
        "applied",
    ]
    assert history["change"].tolist()[0] == "lr=0.0002"
    assert history["change"].tolist()[2] == "zeta_max default → 0.5, target_entropy default → 0.8"
    assert at.info and at.info[0].value.startswith("Version 5 pending (lr=0.0002)")


def test_control_offers_only_keys_that_act_on_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with RunWriter(tmp_path, "plain", {"controller": "none", "lr": 0.001}) as w:
        w.log_scalars(1, {ENTROPY_MEAN: 1.0})
        w.flush()
        at = open_page(tmp_path, "control", monkeypatch, run="plain")
        assert_clean(at)
        labels = {t.label for t in at.text_input}
        assert labels == {"ε low", "ε high", "learning rate"}, labels
        assert any("steers toward no entropy target" in c.value for c in at.caption)


def test_control_of_a_finished_run_is_read_only(monkeypatch: pytest.MonkeyPatch) -> None:
    at = open_page(SAMPLE_RUNS, "control", monkeypatch, run="grpo-bf16")
    assert_clean(at)
    assert "only running runs can be tuned" in at.info[0].value
    assert apply_button(at).disabled and all(t.disabled for t in at.text_input)
    last = StoreReader(SAMPLE_RUNS).runs().set_index("run_id").loc["grpo-bf16", "entropy_last"]
    assert {m.label: m.value for m in at.metric}["entropy"] == f"{last:.3f}"  # the runs table's last entropy


def test_control_lists_running_runs_first(
    open_run: tuple[Path, RunWriter], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, _ = open_run
    with RunWriter(store, "zz-newer-finished", {}) as w:
        w.log_scalars(1, {ENTROPY_MEAN: 1.0})
    at = open_page(store, "control", monkeypatch)
    assert at.selectbox(key="run").options == ["open", "zz-newer-finished"]
    assert at.selectbox(key="run").value == "open"


# ---- Alerts ------------------------------------------------------------------------------------------------


def test_alerts_lists_active_and_resolved_by_severity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "store"
    with RunWriter(store, "a", {}) as w:
        w.log_event(5, "alert_fired", "collapse firing", severity="critical", payload={"rule": "collapse"})
        w.log_event(6, "alert_fired", "clip firing", severity="warning", payload={"rule": "clip_spike"})
        w.log_event(9, "alert_resolved", "clip resolved", severity="warning", payload={"rule": "clip_spike"})
    at = open_page(store, "alerts", monkeypatch)
    assert_clean(at)
    assert {m.label: m.value for m in at.metric} == {
        "active critical": "1",
        "active warning": "0",
        "resolved": "1",
    }
    active, resolved = (d.value for d in at.dataframe)
    assert active[["rule", "fired_step"]].values.tolist() == [["collapse", 5]]
    assert resolved[["rule", "fired_step", "resolved_step", "message"]].values.tolist() == [
        ["clip_spike", 6, 9, "clip resolved"]
    ]
    at = open_page(store, "alerts", monkeypatch, severity="warning")
    assert [m.value for m in at.metric] == ["0", "0", "1"]


def collapse_firing_at_the_end(store: Path) -> list[str]:
    """Runs whose last recorded `collapse` transition is a firing."""
    reader = StoreReader(store)
    out = []
    for run_id in reader.runs()["run_id"]:
        ev = reader.events(run_id, ["alert_fired", "alert_resolved"])
        kinds = [
            k for k, p in zip(ev["kind"], ev["payload"], strict=True) if json.loads(p)["rule"] == "collapse"
        ]
        if kinds and kinds[-1] == "alert_fired":
            out.append(run_id)
    return sorted(out)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_alerts_evaluate_now_records_the_sample_runs_collapse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "store"
    # Without their events the runs look like ones trained with alerts=off: nothing recorded yet.
    shutil.copytree(SAMPLE_RUNS, store, ignore=shutil.ignore_patterns("checkpoints", "events"))
    at = open_page(store, "alerts", monkeypatch)
    assert any("No alert events recorded" in i.value for i in at.info)
    next(b for b in at.button if b.label == "Evaluate rules now").click().run()
    assert_clean(at)
    active = at.dataframe[0].value
    collapsed = collapse_firing_at_the_end(SAMPLE_RUNS)  # as the trainers recorded it, live
    assert collapsed and sorted(active.loc[active["rule"] == "collapse", "run_id"]) == collapsed
    assert f"{len(StoreReader(store).runs())} runs checked" in at.code[0].value
    at = open_page(store, "runs", monkeypatch)
    table = at.dataframe[0].value.set_index("run_id")
    assert table.loc[collapsed, "active_alerts"].ge(1).all()
