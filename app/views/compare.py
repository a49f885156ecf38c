"""Compare: runs side by side on one axis (step, wall time or tokens seen), any metric keys.

A first visit shows the newest runs (up to DEFAULT_RUNS), entropy and reward, smoothed by default as W&B does (EMA
weight DEFAULT_SMOOTH, the raw line faint behind; `?smooth=0` for raw). Each run keeps its colour on every page
(charts.run_color). Every control is bound to the URL (`?runs=a&runs=b&metrics=entropy/mean&x=step&smooth=0.6&norm=true`),
so a link reproduces the view. Traces longer than MAX_POINTS are bucketed in the store query; the band
shows each bucket's min/max. Above MANY_RUNS runs each trace gets fewer points and neither band nor faint
raw line (the page says so): what the browser draws, not the store, then sets the page's time. PNG: the
camera button of each chart (Plotly's own, no kaleido); CSV: the button under the charts, with the data as
plotted.

Group by (`?group=auto|sweep:KEY|config:KEY`, default none): each group of seeds as its mean curve with a 95%
bootstrap band across seeds and its runs faintly behind, then each group's final values with CIs and the
pairwise verdicts (analysis.compare, docs/statistics.md).
"""

import numpy as np
import pandas as pd
import streamlit as st

from analysis.compare import group_curves, group_table, pair_table
from analysis.groups import NONE, group_by_options, group_runs
from analysis.schema import (
    ENTROPY_MEAN,
    ENTROPY_P10,
    ENTROPY_P50,
    ENTROPY_P90,
    ENTROPY_PRED_DELTA,
    ENTROPY_SEQ_MEAN,
    ENTROPY_TARGET,
    REWARD_MEAN,
)
from app import charts, loaders, ui

MAX_POINTS = 1000
# Above MANY_RUNS runs the browser's drawing, not the store, sets the page's time (50 runs with bands and raw
# lines: 92 traces, 1.4 MB of figure JSON): each trace gets fewer points, no band and no faint raw line.
MANY_RUNS = 12
MIN_POINTS = 200
DEFAULT_RUNS = 8  # a first visit (no `runs` in the URL) shows the store's newest runs, up to this many
DEFAULT_METRICS = (ENTROPY_MEAN, REWARD_MEAN)  # those of them the runs logged; else their first key
# TensorBoard's default EMA weight (W&B smooths by default too): noise damped, a turn still shows
DEFAULT_SMOOTH = 0.6
X_AXES = ("step", "wall time", "tokens seen")
# Entropy levels (and the predicted change) are divided by the run's H0 when normalising.
NORMALISABLE = {
    ENTROPY_MEAN,
    ENTROPY_SEQ_MEAN,
    ENTROPY_P10,
    ENTROPY_P50,
    ENTROPY_P90,
    ENTROPY_TARGET,
    ENTROPY_PRED_DELTA,
}


def time_unit(seconds: float) -> tuple[str, float]:
    for unit, size in (("h", 3600.0), ("min", 60.0)):
        if seconds >= 2 * size:
            return unit, size
    return "s", 1.0


def add_x(
    df: pd.DataFrame, axis: str, store: str, run_ids: tuple[str, ...]
) -> tuple[pd.DataFrame, str, list[str]]:
    """Add column x for the chosen axis; returns (frame, axis title, runs dropped for lack of data)."""
    if axis == "wall time":
        starts = loaders.run_starts(store, run_ids, loaders.version(store, run_ids, ["steps"]))
        elapsed = df["wall_time"] - df["run_id"].map(starts)
        unit, size = time_unit(float(np.nanmax(elapsed)) if len(elapsed) else 0.0)
        return df.assign(x=elapsed / size), f"wall time since the run's first step ({unit})", []
    if axis == "tokens seen":
        seen, missing = loaders.tokens_seen(store, run_ids, loaders.version(store, run_ids, ["steps"]))
        # Bucket steps are real steps, but merge_asof also copes with a key logged on other steps.
        parts = []
        for run_id, d in df.groupby("run_id", sort=False):
            s = seen[seen["run_id"] == run_id]
            if not s.empty:
                m = pd.merge_asof(d.sort_values("step"), s[["step", "tokens_seen"]], on="step")
                parts.append(m.rename(columns={"tokens_seen": "x"}))
        out = pd.concat(parts, ignore_index=True) if parts else df.assign(x=np.nan).iloc[0:0]
        return out, "response tokens sampled (Σ response/len_mean × batch)", missing
    return df.assign(x=df["step"]), "step", []


def normalise(df: pd.DataFrame, h0: dict[str, float]) -> tuple[pd.DataFrame, list[str]]:
    """Entropy keys divided by each run's H0; returns the runs without a usable H0 (left as they are)."""
    scale = df["run_id"].map(h0).astype("float64")
    ok = df["key"].isin(NORMALISABLE) & np.isfinite(scale) & (scale != 0)
    out = df.copy()
    for col in ("value", "vmin", "vmax"):
        out.loc[ok, col] = out.loc[ok, col] / scale[ok]
    bad = sorted(set(df.loc[df["key"].isin(NORMALISABLE) & ~ok, "run_id"]))
    return out, bad


def points_per_trace(n_runs: int) -> int:
    """MAX_POINTS up to MANY_RUNS runs, then fewer as more runs share the chart's width (MIN_POINTS at least)."""
    return MAX_POINTS if n_runs <= MANY_RUNS else max(MIN_POINTS, MAX_POINTS * MANY_RUNS // n_runs)


def controls(infos: dict[str, dict], store: str) -> dict | None:
    """The view's widgets; `infos` (run.json per run) newest first, so the default selection is the newest runs."""
    run_ids = list(infos)
    ui.refuse_unknown_url_runs("runs", run_ids)
    selected = st.multiselect("Runs", run_ids, default=run_ids[:DEFAULT_RUNS], key="runs", bind="query-params",
                              placeholder="choose runs")  # fmt: skip
    if not selected:
        st.info("Choose runs above, or select rows on the Runs page and press Compare.")
        return None
    keys = loaders.metric_keys(store, tuple(selected), loaders.version(store, selected, ["steps"]))
    if not keys:
        st.info("The selected runs have logged no step metrics yet.")
        return None
    default = [m for m in DEFAULT_METRICS if m in keys] or keys[:1]
    metrics = st.multiselect("Metrics", keys, default=default, key="metrics", bind="query-params")
    c = st.columns([2, 2, 1, 1])
    axis = c[0].segmented_control("x axis", X_AXES, default="step", key="x", bind="query-params") or "step"
    weight = c[1].slider("EMA smoothing", 0.0, 0.99, DEFAULT_SMOOTH, 0.01, key="smooth", bind="query-params",
                         help="TensorBoard/W&B-style weight, the raw line faint behind; 0 = raw only")  # fmt: skip
    norm = c[2].toggle("Entropy ÷ H0", key="norm", bind="query-params",
                       help="divide entropy keys by each run's first-step entropy")  # fmt: skip
    band = c[3].toggle("min/max band", value=True, key="band", bind="query-params")
    options = group_by_options(infos, selected)
    group = st.selectbox("Group by", options, key="group", bind="query-params",
                         help="none: one line per run; auto: runs that differ only in seed; sweep:KEY a swept "
                         "value; config:KEY a config value. A group draws as its mean with a 95% CI band across "
                         "seeds, its runs faintly behind")  # fmt: skip
    return {"runs": tuple(selected), "metrics": tuple(metrics), "axis": axis, "weight": weight, "norm": norm,
            "band": band, "group": group or NONE, "infos": infos}  # fmt: skip


def grouped_chart(view: dict, df: pd.DataFrame, key: str, title: str, x_title: str, y_title: str) -> None:
    """One metric as group means with 95% CI bands across seeds, the runs faintly behind."""
    d = df[df["key"] == key].copy()
    if view["weight"] > 0:  # smooth each run, then average: the band is over smoothed curves
        for _, r in d.groupby("run_id"):
            r = r.sort_values("step")
            d.loc[r.index, "value"] = charts.smooth(r["value"], r["step"], view["weight"])
    groups = group_runs(view["infos"], view["runs"], view["group"])
    curves = group_curves(d, groups)
    members = {g.name: g.run_ids for g in groups}
    fig = charts.group_figure(curves, d, members, key, title, x_title, y_title)
    ui.show_figure(fig if not d.empty else None, f"cmp-{key}", f"{key}: no data for these runs.")


def final_values(view: dict, store: str) -> None:
    """Per metric: each group's final values with CIs, and the pairwise verdicts (docs/statistics.md)."""
    groups = group_runs(view["infos"], view["runs"], view["group"])
    spec = tuple((g.name, g.run_ids) for g in groups)
    version = loaders.version(store, view["runs"], ["steps"])
    for key in view["metrics"]:
        with ui.unavailable("Final values"):
            result = loaders.group_comparison(store, spec, key, version)
            st.markdown(
                f"**Final** {ui.literal(key)} (mean of each run's last 10% of steps; 95% bootstrap CIs)"
            )
            st.dataframe(group_table(result.groups), hide_index=True)
            if result.pairs:
                st.dataframe(pair_table(result.pairs).drop(columns=["verdict"]), hide_index=True)
            for p in result.pairs:
                st.text(p.verdict)  # plain text: group names are config values, which may hold markdown
            left = [f"{s.group.name}: {', '.join(s.left_out)}" for s in result.groups if s.left_out]
            if left or result.dropped:  # plain text, as the verdicts
                st.text("Not counted (not finished, or no value): " + "; ".join(left + list(result.dropped)))


def plot(view: dict, store: str) -> None:
    run_ids, metrics = view["runs"], view["metrics"]
    if not metrics:
        st.info("Choose at least one metric.")
        return
    with ui.unavailable("Traces"):
        version = loaders.version(store, run_ids, ["steps"])
        many, points = len(run_ids) > MANY_RUNS, points_per_trace(len(run_ids))
        df = loaders.scalars(store, run_ids, metrics, points, version)
        if view["norm"]:
            df, no_h0 = normalise(df, loaders.first_entropy(store, run_ids, version))
            if no_h0:
                st.caption(f"No H0 (first-step entropy) for {', '.join(no_h0)}: shown unnormalised.")
        df, x_title, missing = add_x(df, view["axis"], store, run_ids)
        if missing:
            st.warning(f"Tokens seen unavailable for {', '.join(missing)} (no response/len_mean or batch size in "
                       "its config): left out of this view.")  # fmt: skip
        for key in metrics:
            normalised = view["norm"] and key in NORMALISABLE
            title = f"{key} ÷ H0" if normalised else key
            y_title = charts.metric_axis_title(key, normalised)
            if view["group"] != NONE:
                grouped_chart(view, df, key, title, x_title, y_title)
                continue
            d = df[df["key"] == key]
            fig = charts.compare_figure(
                d, key, title, x_title, view["weight"], view["band"] and not many, y_title, raw=not many
            )
            ui.show_figure(fig if not d.empty else None, f"cmp-{key}", f"{key}: no data for these runs.")

        def csv() -> str:  # built on click, not sent to the browser with every (live) refresh
            return df.drop(columns=["wall_time"], errors="ignore").to_csv(index=False)

        st.download_button(
            "Download CSV (data as plotted)", csv, file_name="entropyscope-compare.csv", mime="text/csv"
        )
        if many and view["group"] == NONE:
            st.caption(f"{len(run_ids)} runs selected: each line is drawn from ≤ {points} points, without its "
                       f"min/max band or faint raw line, so the page stays quick to draw; select {MANY_RUNS} or "
                       "fewer runs to see them.")  # fmt: skip
        st.caption(f"≤ {points} points per trace: longer runs are averaged in equal step buckets and the band "
                   "shows each bucket's min/max. PNG: camera icon on each chart.")  # fmt: skip
    if view["group"] != NONE:
        final_values(view, store)


def main() -> None:
    st.title("Compare runs")
    store = ui.store()
    infos = ui.load_run_infos(store)
    if infos is None:
        return
    view = controls(infos, store)
    if view is None:
        return
    ui.live_fragment(lambda: plot(view, store), ui.any_running(infos, view["runs"]))


main()
