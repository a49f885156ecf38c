"""Unit tests of the dashboard's pure parts: token HTML escaping, chart helpers, the store argument,
the server command, and the queries in analysis/dashboard_queries.py."""

import subprocess
import sys
from contextlib import closing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import dashboard_queries as dq
from analysis.schema import ENTROPY_MEAN, ENTROPY_PRED_DELTA, RESPONSE_LEN_MEAN
from analysis.store_reader import StoreReader
from analysis.store_writer import RunWriter
from app import charts, serve, token_html
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


def test_store_path_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(STORE_ENV, raising=False)
    assert store_path(["-q", "--st", "x"]) == str(Path(DEFAULT_STORE).resolve())  # no abbreviations
    monkeypatch.setenv(STORE_ENV, str(tmp_path / "env"))
    assert store_path([]) == str(tmp_path / "env")
    assert store_path(["--store", str(tmp_path / "flag")]) == str(tmp_path / "flag")


def test_serve_command_and_lazy_import(tmp_path: Path) -> None:
    cmd = serve.command(str(tmp_path), "0.0.0.0", 9999)
    assert cmd[:4] == [sys.executable, "-m", "streamlit", "run"]
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
        assert pairs["step"].tolist() == [1, 2, 3]
        assert np.allclose(pairs["measured"], -0.1) and np.allclose(pairs["predicted"], -0.1)
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
