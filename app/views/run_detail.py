"""Run detail: every diagnostic panel of one run (`?run=ID`), refreshed in place while the run is live.

Entropy with its percentile band and histogram heatmap; target vs measured entropy with the controller
parameter; the entropy change per step (measured on the batch, predicted from the applied update, the
covariance proxy), predicted vs measured with its correlation and the prediction stacked by quadrant;
clipping and quadrants; precision drift; reward, pass@k and diversity; optimisation health; events.
"""

import html
import json
import time

import pandas as pd
import streamlit as st

from analysis import schema as k
from analysis.liveness import heartbeat_text, status_label
from analysis.runs_table import FINAL_NOTE
from app import charts, loaders, ui

MAX_POINTS = 1000
ENTROPY_KEYS = {"mean": k.ENTROPY_MEAN, "p10": k.ENTROPY_P10, "p50": k.ENTROPY_P50, "p90": k.ENTROPY_P90}
DETAIL_KEYS = (
    *ENTROPY_KEYS.values(), *charts.CONTROLLER_KEYS,
    k.CLIP_FRAC, k.CLIP_FRAC_LOW, k.CLIP_FRAC_HIGH, k.QUADRANT_E1, k.QUADRANT_E2, k.QUADRANT_E3, k.QUADRANT_E4,
    k.RATIO_ONPOLICY_DEV, k.PRECISION_LOGP_POS_FRAC, k.PRECISION_LOGP_DIFF_MEAN, k.PRECISION_LOGP_DIFF_MAX,
    k.PRECISION_PROB_DIFF_MEAN, k.PRECISION_PROB_DIFF_MAX,
    k.REWARD_MEAN, k.PASS_AT_1, k.PASS_AT_K, k.DIVERSITY_DISTINCT_FRAC, k.DIVERSITY_DISTINCT_CORRECT,
    k.GRAD_NORM, k.KL_APPROX, k.ADV_ZERO_FRAC,
    k.ENTROPY_PRED_DELTA, k.ENTROPY_DELTA_BATCH, k.ENTROPY_DELTA_PRED, *(key for key, _ in charts.DELTA_PARTS),
)  # fmt: skip
NO_DELTA = ("No batch ΔH in this run: `entropy/delta_*` are logged by runs trained with `--set delta_every=N` "
            "(older runs predate them).")  # fmt: skip
NO_DELTA_IMPORTED = "No batch ΔH: an imported run has no per-token records to measure it from."


def swatch(run_id: str) -> None:
    """The run's colour, as its lines have on Compare and this page's entropy chart, and its name on Alerts."""
    color = charts.run_color(run_id)
    st.markdown(f'<span style="color:{color}">●</span> <code>{html.escape(run_id)}</code> · its colour on every '
                "page", unsafe_allow_html=True)  # fmt: skip


def header(run: pd.Series, info: dict) -> None:
    swatch(str(run.name))
    cols = st.columns(6)
    now = time.time()
    cols[0].metric("status", status_label(run["status"], run["heartbeat"], now))
    cols[1].metric("step", "–" if pd.isna(run["last_step"]) else int(run["last_step"]))
    cols[2].metric("H0", f"{run['h0']:.3f}" if pd.notna(run["h0"]) else "–")
    delta = f"{run['entropy_change']:+.1%} vs H0" if pd.notna(run["entropy_change"]) else None
    cols[3].metric("final entropy", f"{run['entropy']:.3f}" if pd.notna(run["entropy"]) else "–", delta,
                   help=f"mean token entropy; {FINAL_NOTE}")  # fmt: skip
    cols[4].metric(
        "final reward", f"{run['reward']:.3f}" if pd.notna(run["reward"]) else "–", help=FINAL_NOTE
    )
    cols[5].metric("heartbeat", heartbeat_text(run["status"], run["heartbeat"], now))
    config = info.get("config") if isinstance(info.get("config"), dict) else {}
    source = info.get("source") if isinstance(info.get("source"), dict) else None
    if is_imported(info):  # the tool's step metrics, no per-token records
        where = source.get("uri") or source.get("path")
        st.caption(f"Imported from {source.get('kind')} `{where}`: step metrics only, so the panels built from "
                   "per-token records (entropy histogram, ΔH by quadrant) have none.")  # fmt: skip
    with st.expander("config and versions"):
        st.code(
            json.dumps(
                {"config": config, "source": source, "versions": info.get("versions")}, indent=2, default=str
            ),
            "json",
        )


def panels(store: str, run_id: str, controller: object, info: dict) -> None:
    version = loaders.version(store, [run_id], ["steps"])
    w = charts.wide(loaders.scalars(store, (run_id,), DETAIL_KEYS, MAX_POINTS, version))
    hists = loaders.hists(store, run_id, loaders.version(store, [run_id], ["hists"]))
    pairs = loaders.delta_pairs(store, run_id, version)
    config = info.get("config") if isinstance(info.get("config"), dict) else {}
    k_samples = config.get("group_size")  # pass@k's k: one prompt's samples
    pass_k = f"pass@{k_samples}" if isinstance(k_samples, int) else "pass@k"
    color = charts.run_color(run_id)
    quadrants = [
        (k.QUADRANT_E1, "E1 A>0 likely (H↓)"),
        (k.QUADRANT_E2, "E2 A>0 unlikely (H↑)"),
        (k.QUADRANT_E3, "E3 A<0 likely (H↑)"),
        (k.QUADRANT_E4, "E4 A<0 unlikely (H↓)"),
    ]
    rows = [
        (charts.entropy_figure(w, ENTROPY_KEYS, _first(w, k.ENTROPY_MEAN), color),
         charts.hist_figure(hists)),
        (charts.control_figure(w, controller, color),
         charts.lines_figure(w, [(k.ENTROPY_DELTA_BATCH, "measured on the batch"),
                                 (k.ENTROPY_DELTA_PRED, "predicted ∇H̄·Δθ")],
                             "Entropy change per step", "entropy_change", y_title="ΔH (nats)",
                             marked=[k.ENTROPY_DELTA_BATCH],
                             secondary=[(k.ENTROPY_PRED_DELTA, "covariance proxy −lr·Cov(log π, A)")],
                             y2_title="proxy (nats, own scale)")),
        (charts.lines_figure(w, [(k.CLIP_FRAC_LOW, "low (A<0)"), (k.CLIP_FRAC_HIGH, "high (A>0)"),
                                 (k.CLIP_FRAC, "total")], "Clip fractions", "clip", y_title="fraction of tokens"),
         charts.lines_figure(w, quadrants, "Clip fraction within each token quadrant", "quadrants",
                             y_title="clipped fraction", colors=charts.QUADRANT_COLORS)),
        (charts.lines_figure(w, [(k.RATIO_ONPOLICY_DEV, "on-policy |r−1|")], "Precision: on-policy ratio deviation",
                             "precision_ratio", y_title="|r − 1|",
                             secondary=[(k.PRECISION_LOGP_POS_FRAC, "log p > 0 fraction")],
                             y2_title="fraction of tokens"),
         charts.lines_figure(w, [(k.PRECISION_LOGP_DIFF_MEAN, "|Δlog p| mean"), (k.PRECISION_LOGP_DIFF_MAX, "|Δlog p| max"),
                                 (k.PRECISION_PROB_DIFF_MEAN, "|Δp| mean"), (k.PRECISION_PROB_DIFF_MAX, "|Δp| max")],
                             "Precision: rollout vs training log-probs", "precision_diff",
                             y_title="|Δlog p| (nats), |Δp|", log_y=True)),
        (charts.lines_figure(w, [(k.REWARD_MEAN, "reward"), (k.PASS_AT_1, "pass@1"), (k.PASS_AT_K, pass_k),
                                 (k.DIVERSITY_DISTINCT_FRAC, "distinct fraction")], "Reward, pass@k, diversity",
                             "reward", y_title="reward, rate (0–1)",
                             secondary=[(k.DIVERSITY_DISTINCT_CORRECT, "distinct correct / prompt")],
                             y2_title="answers per prompt"),
         charts.lines_figure(w, [(k.GRAD_NORM, "grad norm")], "Optimisation", "optim", y_title="gradient L2 norm",
                             secondary=[(k.KL_APPROX, "approx KL"), (k.ADV_ZERO_FRAC, "zero-advantage groups")],
                             y2_title="KL (nats), fraction")),
    ]  # fmt: skip
    for i, (left, right) in enumerate(rows):
        c1, c2 = st.columns(2)
        with c1:
            ui.show_figure(left, f"detail-{i}-l", "Not logged by this run yet.")
        with c2:
            ui.show_figure(right, f"detail-{i}-r", "Not logged by this run yet.")
        if i == 1:  # the batch ΔH panels, under the entropy change per step
            delta_panels(pairs, w, imported=is_imported(info))
    events(store, run_id)


def is_imported(info: dict) -> bool:
    source = info.get("source")
    return isinstance(source, dict) and not source.get("live")


def delta_panels(pairs: pd.DataFrame, w: pd.DataFrame, imported: bool) -> None:
    """Predicted vs measured ΔH and the prediction by quadrant; one note for both when neither exists."""
    left, right = charts.delta_figure(pairs), charts.delta_parts_figure(w)
    if left is None and right is None:
        st.caption(NO_DELTA_IMPORTED if imported else NO_DELTA)
        return
    c1, c2 = st.columns(2)
    with c1:
        ui.show_figure(left, "detail-delta-l", "Fewer than two measured steps yet.")
    with c2:
        ui.show_figure(right, "detail-delta-r", "No quadrant split logged yet.")


def _first(w: pd.DataFrame, key: str) -> float | None:
    if key not in w:
        return None
    s = w[key].dropna()
    return float(s.iloc[0]) if len(s) else None


def events(store: str, run_id: str) -> None:
    ev = loaders.events(store, run_id, loaders.version(store, [run_id], ["events"]))
    ui.show_figure(
        charts.events_figure(ev), "detail-events", "No events (control changes, alerts, checkpoints) yet."
    )
    if not ev.empty:
        with st.expander(f"{len(ev)} events"):
            st.dataframe(ev[["step", "kind", "severity", "message", "payload"]], hide_index=True)


def main() -> None:
    st.title("Run detail")
    store = ui.store()
    runs = ui.load_runs(store)
    if runs is None:
        return
    run_id = ui.run_picker(runs)
    live = bool((runs.loc[runs["run_id"] == run_id, "status"] == "running").any())

    def body() -> None:  # the whole view refreshes while live: header numbers move with the charts
        latest = ui.load_runs(store)
        if latest is None or run_id not in set(latest["run_id"]):
            st.warning(f"Run {run_id} is no longer in the store.")
            return
        with ui.unavailable(f"Run {run_id}"):
            info = loaders.run_info(store, run_id, loaders.version(store, [run_id], []))
            if live and info.get("status") != "running":
                st.rerun(scope="app")  # it just ended: redraw once without the timer
            run = latest.set_index("run_id").loc[run_id]
            header(run, info)
            panels(store, run_id, run["controller"], info)

    ui.live_fragment(body, live)


main()
