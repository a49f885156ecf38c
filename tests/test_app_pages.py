"""AppTest of every dashboard page over sample_runs/, an empty store, a failed run and a truncated segment.

Pages run in-process (streamlit.testing.v1.AppTest), so these are fast and need no browser; the real
browser checks are in test_browser.py.
"""

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from analysis.schema import CLIP_FRAC, ENTROPY_MEAN, ENTROPY_P10, ENTROPY_P90, REWARD_MEAN
from analysis.store_writer import RunWriter
from app.store import STORE_ENV

ROOT = Path(__file__).resolve().parents[1]
MAIN = str(ROOT / "app" / "main.py")
SAMPLE_RUNS = ROOT / "sample_runs"
PAGES = ("runs", "compare", "run_detail", "token_inspector")
TIMEOUT_S = 60


def open_page(store: Path, page: str, monkeypatch: pytest.MonkeyPatch, **params: str | list[str]) -> AppTest:
    """Run the app's entry with `page` selected and the given URL query parameters."""
    monkeypatch.setenv(STORE_ENV, str(store))
    at = AppTest.from_file(MAIN, default_timeout=TIMEOUT_S)
    for name, value in params.items():
        at.query_params[name] = value
    at.switch_page(f"pages/{page}.py")
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
    assert sorted(table["run_id"]) == ["dapo-fp32", "grpo-bf16", "grpo-fp32"]
    assert set(table["status_label"]) == {"finished"}
    assert table["entropy_change_pct"].lt(0).all()  # every sample run loses entropy: collapse is the norm
    assert [b.label for b in at.button][0].startswith("Compare selected")


def test_runs_page_filters_by_url(monkeypatch: pytest.MonkeyPatch) -> None:
    at = open_page(SAMPLE_RUNS, "runs", monkeypatch, algo="dapo")
    assert_clean(at)
    assert at.dataframe[0].value["run_id"].tolist() == ["dapo-fp32"]


def test_compare_two_runs_has_two_traces(monkeypatch: pytest.MonkeyPatch) -> None:
    at = open_page(SAMPLE_RUNS, "compare", monkeypatch, runs=["grpo-fp32", "grpo-bf16"])
    assert_clean(at)
    assert not at.warning
    (fig,) = figures(at)
    assert fig["layout"]["meta"]["panel"] == f"compare:{ENTROPY_MEAN}"
    assert sorted(legend_traces(fig)) == ["grpo-bf16", "grpo-fp32"]
    assert at.get("download_button"), "CSV download missing"


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


def test_compare_without_selection_explains(monkeypatch: pytest.MonkeyPatch) -> None:
    at = open_page(SAMPLE_RUNS, "compare", monkeypatch)
    assert_clean(at)
    assert at.info and "Choose runs" in at.info[0].value


def test_run_detail_has_every_panel(monkeypatch: pytest.MonkeyPatch) -> None:
    at = open_page(SAMPLE_RUNS, "run_detail", monkeypatch, run="grpo-fp32")
    assert_clean(at)
    assert not at.warning
    panels = {f["layout"]["meta"]["panel"] for f in figures(at)}
    expected = {"entropy", "entropy_hist", "control", "entropy_delta", "clip", "quadrants", "precision_ratio",
                "precision_diff", "reward", "optim", "events"}  # fmt: skip
    assert expected <= panels
    entropy = next(f for f in figures(at) if f["layout"]["meta"]["panel"] == "entropy")
    assert {"mean", "p10–p90", "median"} <= {t["name"] for t in entropy["data"]}
    assert at.selectbox(key="run").value == "grpo-fp32"


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
    params = {"runs": runs} if page == "compare" and runs else {}
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
