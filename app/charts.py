"""Plotly figures: pure functions of DataFrames (no Streamlit, no store), so they are easy to test alone.

Every figure carries `layout.meta.panel`, a stable name the browser tests and the benchmark use to find
a chart in the page, independent of its title.
"""

import zlib
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import hex_to_rgb, qualitative
from plotly.subplots import make_subplots

from analysis.groups import show
from analysis.metrics import agreement, ema
from analysis.schema import (
    CONTROLLER_AT_BOUND,
    CONTROLLER_COEF,
    CONTROLLER_EPS_HIGH,
    CONTROLLER_ZETA,
    ENTROPY_DELTA_BATCH,
    ENTROPY_DELTA_PRED,
    ENTROPY_DELTA_PRED_E1,
    ENTROPY_DELTA_PRED_E2,
    ENTROPY_DELTA_PRED_E3,
    ENTROPY_DELTA_PRED_E4,
    ENTROPY_DELTA_PRED_OTHER,
    ENTROPY_MEAN,
    ENTROPY_TARGET,
)
from analysis.sweeps import Setting, key_values

HEIGHT = 330
LEGEND_ROW_PX = 22
# A legend entry's width: its line sample and gap, plus its label; a full-width chart at a 1,600 px window.
LEGEND_ENTRY_PX, LEGEND_CHAR_PX, LEGEND_WIDTH_PX = 40, 7, 1000
SWEEP_HEIGHT = 300  # a sweep chart's plot, title and x-axis, without its legend
PALETTE = qualitative.Plotly + qualitative.D3
# Runs: ten clearly distinct hues (D3's category10); hashing ids into Plotly + D3's twenty gave neighbouring
# runs near-identical pinks and blues. Two runs of one chart on the same colour differ by dash instead.
RUN_PALETTE = qualitative.D3
# Which controller parameter to draw against the entropy target; others fall back to the first that moves.
CONTROLLER_PARAM = {
    "repo_r": CONTROLLER_ZETA,
    "repo_d": CONTROLLER_ZETA,
    "adapo": CONTROLLER_EPS_HIGH,
    "entropy_bonus": CONTROLLER_COEF,
    "clip_cov": CONTROLLER_COEF,
    "kl_cov": CONTROLLER_COEF,
}
PARAM_KEYS = (CONTROLLER_ZETA, CONTROLLER_EPS_HIGH, CONTROLLER_COEF)
CONTROLLER_KEYS = (ENTROPY_TARGET, *PARAM_KEYS, CONTROLLER_AT_BOUND)  # control_figure's, besides H
DELTA_PARTS = (
    (ENTROPY_DELTA_PRED_E1, "E1 A>0 likely"),
    (ENTROPY_DELTA_PRED_E2, "E2 A>0 unlikely"),
    (ENTROPY_DELTA_PRED_E3, "E3 A<0 likely"),
    (ENTROPY_DELTA_PRED_E4, "E4 A<0 unlikely"),
    (ENTROPY_DELTA_PRED_OTHER, "other (A=0, momentum)"),
)
QUADRANT_COLORS = ("#d62728", "#2ca02c", "#1f77b4", "#ff7f0e", "#7f7f7f")  # E1..E4, other: on every chart
ROBUST_Q = 0.95
SEVERITY_COLORS = {"info": "#1f77b4", "warning": "#ff7f0e", "critical": "#d62728"}
# Modebar: keep Plotly's own "download as PNG" (kaleido is not needed for it), drop the logo.
PLOTLY_CONFIG = {"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}}


# Two runs of one chart that hash to the same colour are told apart by the dash of the later one.
DASHES = ("solid", "dash", "dot", "dashdot", "longdash")
# y-axis titles of Compare's charts: the unit of each metric key, by exact key first, then by prefix.
UNITS = {
    "entropy/cov_logp_adv": "Cov(log π, A)",
    "ratio/onpolicy_dev": "|r − 1|",
    "precision/logp_pos_frac": "fraction of tokens",
    "precision/prob_diff_mean": "|Δp|",
    "precision/prob_diff_max": "|Δp|",
    "precision/pearson": "Pearson r",
    "diversity/distinct_correct": "answers per prompt",
    "adv/zero_frac": "fraction of groups",
    "lr": "learning rate",
    "throughput/tokens_per_s": "tokens/s",
}
UNIT_PREFIXES = (
    ("entropy/", "nats"),
    ("clip/", "fraction of tokens"),
    ("quadrant/", "clipped fraction"),
    ("ratio/", "π / π_old"),
    ("precision/logp_diff", "|Δlog p| (nats)"),
    ("precision/kl", "nats"),
    ("reward/", "per completion"),
    ("pass@", "rate (0–1)"),
    ("diversity/", "fraction of answers"),
    ("kl/", "nats"),
    ("grad/", "L2 norm"),
    ("loss/", "loss"),
    ("response/", "tokens"),
    ("time/", "seconds"),
)


def run_color(run_id: str) -> str:
    """The run's colour on every page: a hash of its id into the palette, so adding runs to the store or
    choosing others never changes it (CRC32: Python's own str hash differs between processes)."""
    return RUN_PALETTE[zlib.crc32(str(run_id).encode()) % len(RUN_PALETTE)]


def setting_colors(names: Sequence[str]) -> dict[str, str]:
    """Distinct colours for a sweep's settings, by position: a handful of names that must not share a colour
    (hashing, as run_color does, would make two of them collide)."""
    return {name: RUN_PALETTE[i % len(RUN_PALETTE)] for i, name in enumerate(names)}


def metric_axis_title(key: str, normalised: bool = False) -> str:
    """A y-axis title for metric `key`: the key with its unit where known, e.g. "entropy/mean (nats)"."""
    if normalised:
        return f"{key} ÷ H0 (ratio)"
    unit = UNITS.get(key) or next((u for prefix, u in UNIT_PREFIXES if key.startswith(prefix)), None)
    return f"{key} ({unit})" if unit else key


def rgba(color: str, alpha: float) -> str:
    r, g, b = hex_to_rgb(color)
    return f"rgba({r},{g},{b},{alpha})"


def legend_rows(fig: go.Figure, width_px: int = LEGEND_WIDTH_PX) -> int:
    """Rows a horizontal legend of the figure's named traces takes at `width_px` (estimated from label length)."""
    labels = [str(t.name) for t in fig.data if t.name and t.showlegend is not False]
    if not labels:
        return 0
    per_row = max(1, width_px // (LEGEND_ENTRY_PX + LEGEND_CHAR_PX * max(map(len, labels))))
    return -(-len(labels) // per_row)


def layout(fig: go.Figure, title: str, panel: str, *, y_title: str | None = None, x_title: str = "step",
           height: int = HEIGHT, legend_width_px: int | None = LEGEND_WIDTH_PX) -> go.Figure:  # fmt: skip
    """Title, panel tag, legend below the x-axis title, axis titles. The figure grows by a row for each legend
    row past the first at `legend_width_px` (None: `height` already holds the legend), so a long legend
    (Compare's many runs) does not squeeze the plot under its title."""
    extra = 0 if legend_width_px is None else LEGEND_ROW_PX * max(0, legend_rows(fig, legend_width_px) - 1)
    fig.update_layout(
        title={"text": title},
        meta={"panel": panel},
        height=height + extra,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        # Below the x-axis title, not on it: anchored to the figure's bottom edge, which grows to hold it.
        legend={"orientation": "h", "yref": "container", "yanchor": "bottom", "y": 0},
        hovermode="x unified",
        colorway=PALETTE,  # Plotly's distinct colours: the Streamlit theme's blues and reds look alike
    )
    fig.update_xaxes(title_text=x_title)
    if y_title:
        fig.layout.yaxis.title.text = y_title  # the primary axis, with or without a secondary one
    return fig


def smooth(values: Sequence[float], steps: Sequence[float], weight: float) -> np.ndarray:
    """TensorBoard-style smoothing with weight w in [0, 1): an EMA with alpha = 1 - w per logged step.

    Points that are buckets g steps apart get alpha = 1 - w**g, so the smoothing time constant is the
    same in steps whether or not a trace was downsampled.
    """
    y = np.asarray(values, dtype=np.float64)
    if weight <= 0 or len(y) < 2:
        return y
    gap = float(np.median(np.diff(np.asarray(steps, dtype=np.float64))))
    return ema(y, 1.0 - weight ** max(gap, 1.0))


def compare_figure(
    df: pd.DataFrame, key: str, title: str, x_title: str, weight: float, band: bool, y_title: str,
    raw: bool = True,
) -> go.Figure:  # fmt: skip
    """One trace per run of `key` (columns run_id, x, step, value, vmin, vmax) in the run's colour, with its
    min/max band; with `weight` > 0 the smoothed line over the raw one, drawn faintly (unless not `raw`)."""
    fig = go.Figure()
    seen: dict[str, int] = {}  # runs drawn so far per colour
    for run_id, d in df.groupby("run_id", sort=False):
        d = d.sort_values("x")
        color = run_color(str(run_id))
        dash = DASHES[seen.get(color, 0) % len(DASHES)]
        seen[color] = seen.get(color, 0) + 1
        bucketed = bool((d["vmin"] != d["vmax"]).any())
        if band and bucketed:  # a trace downsampled into buckets keeps its spikes visible as a band
            common = {"x": d["x"], "mode": "lines", "line": {"width": 0}, "legendgroup": str(run_id),
                      "showlegend": False, "hoverinfo": "skip"}  # fmt: skip
            fig.add_trace(go.Scatter(y=d["vmax"], name=f"{run_id} max", **common))
            fig.add_trace(go.Scatter(y=d["vmin"], name=f"{run_id} min", fill="tonexty",
                                     fillcolor=rgba(color, 0.18), **common))  # fmt: skip
        if weight > 0 and raw:  # the raw trace stays visible, faintly, under the smoothed one
            fig.add_trace(go.Scatter(x=d["x"], y=d["value"], mode="lines", opacity=0.3, showlegend=False,
                                     line={"color": color, "width": 1}, legendgroup=str(run_id),
                                     hoverinfo="skip", name=f"{run_id} raw"))  # fmt: skip
        fig.add_trace(
            go.Scatter(
                x=d["x"], y=smooth(d["value"], d["step"], weight), mode="lines", name=str(run_id),
                legendgroup=str(run_id), line={"color": color, "width": 2, "dash": dash},
                customdata=d["step"], hovertemplate="%{y:.4g} (step %{customdata})",
            )
        )  # fmt: skip
    return layout(fig, title, f"compare:{key}", x_title=x_title, y_title=y_title)


def group_figure(
    curves: pd.DataFrame, runs: pd.DataFrame, members: dict[str, tuple[str, ...]], key: str, title: str,
    x_title: str, y_title: str,
) -> go.Figure:  # fmt: skip
    """Per group (analysis.compare.group_curves): its runs faintly behind (runs: run_id, x, value), the shaded
    95% CI band of the mean across seeds, and the mean curve named with its n."""
    fig = go.Figure()
    for name, d in curves.groupby("group", sort=False):
        color, n = run_color(str(name)), int(d["n"].iloc[0])  # a group's colour: a hash of its name
        for run_id in members.get(str(name), ()):
            r = runs[runs["run_id"] == run_id].sort_values("x")
            fig.add_trace(go.Scatter(x=r["x"], y=r["value"], mode="lines", opacity=0.25, showlegend=False,
                                     line={"color": color, "width": 1}, legendgroup=str(name), hoverinfo="skip",
                                     name=f"{run_id} run"))  # fmt: skip
        band = d.dropna(subset=["lo", "hi"])
        if not band.empty:
            common = {"x": band["x"], "mode": "lines", "line": {"width": 0}, "legendgroup": str(name),
                      "showlegend": False, "hoverinfo": "skip"}  # fmt: skip
            fig.add_trace(go.Scatter(y=band["hi"], name=f"{name} ci hi", **common))
            fig.add_trace(go.Scatter(y=band["lo"], name=f"{name} ci lo", fill="tonexty",
                                     fillcolor=rgba(color, 0.25), **common))  # fmt: skip
        fig.add_trace(go.Scatter(x=d["x"], y=d["mean"], mode="lines", name=f"{name} (n={n})", legendgroup=str(name),
                                 line={"color": color, "width": 2.5}, customdata=d["step"],
                                 hovertemplate="%{y:.4g} (step %{customdata})"))  # fmt: skip
    return layout(fig, title, f"compare:{key}", x_title=x_title, y_title=y_title)


def wide(scalars: pd.DataFrame) -> pd.DataFrame:
    """Scalar rows of one run as a step-indexed frame with one column per key (bucket means)."""
    if scalars.empty:
        return pd.DataFrame()
    return scalars.pivot_table(index="step", columns="key", values="value", aggfunc="mean").sort_index()


def _finite(w: pd.DataFrame, key: str) -> bool:
    return key in w and bool(np.isfinite(w[key].to_numpy(dtype=np.float64)).any())


def _same(a: pd.Series, b: pd.Series) -> bool:
    return bool(np.allclose(a.to_numpy(dtype=np.float64), b.to_numpy(dtype=np.float64), equal_nan=True))


def _merge_identical(w: pd.DataFrame, series: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """Drop a series equal to an earlier one at every step and name both in the kept label, so no line
    hides under its twin (reward equals pass@1 on a 0/1 reward)."""
    kept: list[tuple[str, str]] = []
    for key, label in series:
        twin = next((i for i, (k2, _) in enumerate(kept) if _same(w[key], w[k2])), None)
        if twin is None:
            kept.append((key, label))
        else:
            kept[twin] = (kept[twin][0], f"{kept[twin][1]} = {label}")
    return kept


def lines_figure(w: pd.DataFrame, series: Sequence[tuple[str, str]], title: str, panel: str, *,
                 y_title: str, secondary: Sequence[tuple[str, str]] = (), y2_title: str | None = None,
                 log_y: bool = False, colors: Sequence[str] = (), dashed: Sequence[str] = (),
                 marked: Sequence[str] = ()) -> go.Figure | None:  # fmt: skip
    """Lines of (key, label) over step; `secondary` on a right-hand axis, titled `y2_title` or, by
    default, by the labels it carries. `colors` pins the primary lines' colours in order; keys in `dashed`
    draw dashed, keys in `marked` draw on top with a marker at each logged step, so a line that follows
    another closely stays visible. None when nothing is logged."""
    primary = _merge_identical(w, [(k, label) for k, label in series if _finite(w, k)])
    primary.sort(key=lambda kl: kl[0] in marked)  # stable: the marked ones last, on top
    right = [(k, label) for k, label in secondary if _finite(w, k)]
    if not primary and not right:
        return None
    fig = make_subplots(specs=[[{"secondary_y": True}]]) if right else go.Figure()
    color_of = dict(zip((k for k, _ in series), colors, strict=False))
    for k, label in primary:
        trace = go.Scatter(
            x=w.index,
            y=w[k],
            mode="lines+markers" if k in marked else "lines",
            name=label,
            line={"color": color_of.get(k), "dash": "dash" if k in dashed else None},
            marker={"size": 5},
            connectgaps=True,
        )  # a key measured every Nth step (delta_every) is a line too
        fig.add_trace(trace, secondary_y=False) if right else fig.add_trace(trace)
    for k, label in right:
        fig.add_trace(go.Scatter(x=w.index, y=w[k], mode="lines", name=label, line={"dash": "dot"},
                                 connectgaps=True), secondary_y=True)  # fmt: skip
    layout(fig, title, panel, y_title=y_title)
    fig.update_layout(showlegend=True)  # a lone trace gets a legend too, or nobody knows what it is
    if right:
        right_title = y2_title or ", ".join(label for _, label in right)
        # Its own round ticks: "sync" would put them on the left axis's grid at values like 22.2µ.
        fig.update_yaxes(
            title_text=f"{right_title} (dotted)", showgrid=False, tickmode="auto", secondary_y=True
        )
    if log_y:
        fig.layout.yaxis.type = "log"
    return fig


def controller_param(w: pd.DataFrame, controller: object) -> str | None:
    """The controller's parameter; for another controller the first that moves, None when none does
    (a constant ε_high on its own axis would only add noise)."""
    key = CONTROLLER_PARAM.get(str(controller))
    if key:
        return key
    moving = [p for p in PARAM_KEYS if p in w and w[p].dropna().nunique() > 1]
    return moving[0] if moving else None


def control_figure(w: pd.DataFrame, controller: object, color: str) -> go.Figure | None:
    """Target vs measured entropy (in the run's `color`, the target dashed grey), the controller's parameter
    on the right axis, × where it is pinned."""
    param = controller_param(w, controller)
    named = isinstance(controller, str) and controller != ""  # an imported run has none: NaN
    title = "Target vs measured entropy" + (f" · controller {controller}" if named else "")
    fig = lines_figure(
        w, [(ENTROPY_MEAN, "measured H"), (ENTROPY_TARGET, "target")], title, "control",
        secondary=[(param, param)] if param else [], y_title="nats", y2_title=param,
        colors=[color, "grey"], dashed=[ENTROPY_TARGET],
    )  # fmt: skip
    if fig is not None and param and _finite(w, param) and CONTROLLER_AT_BOUND in w:  # the right axis exists
        pinned = w[w[CONTROLLER_AT_BOUND] > 0]
        if not pinned.empty:
            fig.add_trace(go.Scatter(x=pinned.index, y=pinned[param], mode="markers", name="at bound",
                                     marker={"symbol": "x", "size": 8, "color": "#d62728"}), secondary_y=True)  # fmt: skip
    return fig


def entropy_figure(w: pd.DataFrame, keys: dict[str, str], h0: float | None, color: str) -> go.Figure | None:
    """Mean entropy with its p10–p90 band across tokens, the median, and H0 as a reference line, in `color`
    (the run's, as on Compare).

    `keys` maps roles mean, p10, p50, p90 to metric keys.
    """
    if not _finite(w, keys["mean"]):
        return None
    fig = go.Figure()
    if _finite(w, keys["p10"]) and _finite(w, keys["p90"]):
        band = {"x": w.index, "mode": "lines", "line": {"width": 0}, "showlegend": False, "hoverinfo": "skip"}
        fig.add_trace(go.Scatter(y=w[keys["p90"]], name="p90", **band))
        fig.add_trace(go.Scatter(y=w[keys["p10"]], name="p10–p90", fill="tonexty",
                                 fillcolor=rgba(color, 0.18), **{**band, "showlegend": True}))  # fmt: skip
    if _finite(w, keys["p50"]):
        fig.add_trace(go.Scatter(x=w.index, y=w[keys["p50"]], mode="lines", name="median",
                                 line={"dash": "dot", "color": color, "width": 1}))  # fmt: skip
    fig.add_trace(go.Scatter(x=w.index, y=w[keys["mean"]], mode="lines", name="mean",
                             line={"color": color, "width": 2}))  # fmt: skip
    if h0 is not None and np.isfinite(h0):
        fig.add_hline(y=h0, line={"dash": "dash", "color": "gray"}, annotation_text="H0")
    return layout(fig, "Entropy (nats): mean, p10–p90 band over tokens", "entropy", y_title="nats")


def hist_matrix(hists: pd.DataFrame, max_cols: int = 400) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(step of each column, bin centres, token fraction per bin × column) on one common bin grid.

    Histograms whose edges differ between steps are re-binned by bin centre; more than `max_cols` steps
    are merged into equal groups of consecutive steps (counts summed) so the heatmap stays light.
    """
    lo, hi = float(hists["bin_lo"].min()), float(hists["bin_hi"].max())
    n_bins = int(hists.groupby("step").size().max())
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, n_bins + 1)
    centre = (hists["bin_lo"].to_numpy() + hists["bin_hi"].to_numpy()) / 2
    rows = np.clip(np.searchsorted(edges, centre, side="right") - 1, 0, n_bins - 1)
    steps = np.sort(hists["step"].unique())
    group = np.arange(len(steps)) * min(max_cols, len(steps)) // len(steps)
    col_of_step = dict(zip(steps.tolist(), group.tolist(), strict=True))
    cols = hists["step"].map(col_of_step).to_numpy()
    matrix = np.zeros((n_bins, int(group.max()) + 1))
    np.add.at(matrix, (rows, cols), hists["count"].to_numpy(dtype=np.float64))
    totals = matrix.sum(axis=0, keepdims=True)
    frac = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    first_step = pd.Series(steps).groupby(group).min().to_numpy()
    return first_step, (edges[:-1] + edges[1:]) / 2, frac


def hist_figure(hists: pd.DataFrame) -> go.Figure | None:
    """Heatmap of the token fraction per entropy bin and step, on a log colour scale: most tokens sit
    near zero entropy, and a linear scale would hide the high-entropy tail that matters."""
    if hists.empty:
        return None
    steps, centres, frac = hist_matrix(hists)
    used = np.flatnonzero(frac.sum(axis=1) > 0)
    top = int(used.max()) + 2 if len(used) else len(centres)  # drop empty bins above the highest entropy seen
    frac, centres = frac[:top], centres[:top]
    with np.errstate(divide="ignore"):
        z = np.where(frac > 0, np.log10(np.maximum(frac, 1e-12)), np.nan)
    ticks = [-4, -3, -2, -1, 0]
    fig = go.Figure(
        go.Heatmap(x=steps, y=centres, z=z, customdata=frac, colorscale="Viridis", zmin=-4, zmax=0,
                   colorbar={"title": "tokens", "tickvals": ticks, "ticktext": ["0.01%", "0.1%", "1%", "10%", "100%"]},
                   hovertemplate="step %{x}<br>H ≈ %{y:.3f}<br>%{customdata:.2%} of tokens<extra></extra>")
    )  # fmt: skip
    return layout(fig, "Token entropy histogram over time", "entropy_hist", y_title="entropy (nats)")


def delta_figure(pairs: pd.DataFrame) -> go.Figure | None:
    """Predicted vs measured batch ΔH per measured step, the y = x line, and their Pearson r and slope."""
    if len(pairs) < 2:
        return None
    r, slope = agreement(pairs["predicted"], pairs["measured"])
    lo = float(min(pairs["predicted"].min(), pairs["measured"].min()))
    hi = float(max(pairs["predicted"].max(), pairs["measured"].max()))
    fig = go.Figure([
        go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="y = x", line={"dash": "dot", "color": "grey"},
                   hoverinfo="skip"),
        go.Scatter(x=pairs["predicted"], y=pairs["measured"], mode="markers", name="steps",
                   marker={"size": 5, "color": pairs["step"], "colorscale": "Viridis", "showscale": True,
                           "colorbar": {"title": "step"}},
                   customdata=pairs["step"], hovertemplate="step %{customdata}<br>pred %{x:.3g}<br>meas %{y:.3g}"),
    ])  # fmt: skip
    fit = f"r = {r:.2f}, slope {slope:.2f}" if np.isfinite(r) else "r undefined"
    layout(fig, f"Predicted vs measured ΔH on the batch ({fit}, n = {len(pairs)})", "entropy_delta",
           y_title="measured ΔH (nats, after − before)", x_title="predicted ΔH = ∇H̄ · Δθ (applied update)")  # fmt: skip
    fig.update_layout(hovermode="closest")
    return fig


def delta_parts_figure(w: pd.DataFrame) -> go.Figure | None:
    """Predicted batch ΔH per step stacked by where its gradient came from (quadrants E1-E4, other), with
    the predicted total and the measured change as lines. None when the run logged no parts."""
    parts = [(key, label) for key, label in DELTA_PARTS if _finite(w, key)]
    if not parts:
        return None
    steps = w[DELTA_PARTS[0][0]].dropna().index  # measured steps only (delta_every may skip some)
    fig = go.Figure(
        [go.Bar(x=steps, y=w.loc[steps, key], name=label, marker_color=color)
         for (key, label), color in zip(parts, QUADRANT_COLORS, strict=False)]
        # measured last, dotted with markers: where it equals the prediction, the prediction shows beneath
        + [go.Scatter(x=steps, y=w.loc[steps, key], mode=mode, name=label, line={"color": color, "dash": dash},
                      marker={"size": 6})
           for key, label, color, mode, dash in (
               (ENTROPY_DELTA_PRED, "predicted total", "black", "lines", None),
               (ENTROPY_DELTA_BATCH, "measured", "#17becf", "lines+markers", "dot")) if key in w]
    )  # fmt: skip
    title = "Predicted ΔH by quadrant of the tokens behind it"
    layout(fig, title, "entropy_delta_parts", y_title="ΔH (nats)")
    fig.update_layout(barmode="relative", bargap=0)
    span = robust_range(w.loc[steps, [key for key, _ in parts]])
    if span is not None:
        fig.update_yaxes(range=list(span))
        fig.add_annotation(text=f"axis fits {ROBUST_Q:.0%} of steps; taller bars run off it", showarrow=False,
                           xref="paper", yref="paper", x=1, y=1, xanchor="right", yanchor="bottom",
                           font={"size": 11, "color": "grey"})  # fmt: skip
    return fig


def robust_range(parts: pd.DataFrame) -> tuple[float, float] | None:
    """A y range holding the stacked bars (up and down) of ROBUST_Q of the steps, or None when the tallest
    bar is within twice that anyway. The first steps after a warm start can move H by ±10 nats and
    would flatten every later bar on a full-range axis."""
    up = parts.clip(lower=0).sum(axis=1).to_numpy()
    down = (-parts.clip(upper=0)).sum(axis=1).to_numpy()
    if len(up) < 5:
        return None
    hi, lo = (float(np.nanquantile(x, ROBUST_Q)) * 1.1 for x in (up, down))
    if max(hi, lo) <= 0 or float(np.nanmax(np.maximum(up, down))) <= 2 * max(hi, lo):
        return None
    return -lo, hi


def events_figure(events: pd.DataFrame) -> go.Figure | None:
    """Events as markers on a step axis, one row per kind, coloured by severity."""
    if events.empty:
        return None
    fig = go.Figure()
    for severity, d in events.groupby("severity", sort=False):
        fig.add_trace(
            go.Scatter(x=d["step"], y=d["kind"], mode="markers", name=str(severity),
                       marker={"size": 11, "symbol": "diamond", "color": SEVERITY_COLORS.get(str(severity), "gray")},
                       text=d["message"], hovertemplate="step %{x}: %{text}<extra>%{y}</extra>")
        )  # fmt: skip
    layout(fig, "Events", "events", y_title="event kind", height=220)
    fig.update_layout(hovermode="closest")
    return fig


def _positions(settings: Sequence[Setting], key: str) -> tuple[dict[str, float], list[float], list[str]]:
    """x of each setting on a chart against `key`: the key's values as evenly spaced categories (numbers in
    order), settings sharing a value side by side around it. Returns (x per setting, tick values, tick texts)."""
    values = key_values([s.group for s in settings], key)
    labels = [show(v) for v in values]
    at: dict[str, list[str]] = {}
    for s in settings:
        if key in s.group.params:
            at.setdefault(show(s.group.params[key]), []).append(s.group.name)
    x = {}
    for label, names in at.items():
        width = min(0.6 / len(names), 0.15)
        for j, name in enumerate(names):
            x[name] = labels.index(label) + (j - (len(names) - 1) / 2) * width
    return x, list(range(len(labels))), labels


def sweep_figure(settings: Sequence[Setting], key: str, metric: str, y_title: str, colors: dict[str, str],
                 legend: bool = True) -> go.Figure | None:  # fmt: skip
    """Final `metric` against swept `key`: one dot per counted run, each setting's IQM with its 95% CI as an
    error bar, coloured per setting (`legend`: name the colours under the plot). None when no run counts yet."""
    shown = [s for s in settings if s.stats is not None and key in s.group.params]
    if not shown:
        return None
    x, ticks, labels = _positions(shown, key)
    fig = go.Figure()
    for s in shown:
        name, color, n = s.group.name, colors.get(s.group.name, PALETTE[0]), s.stats.n
        runs, vals = list(s.values), list(s.values.values())
        fig.add_trace(go.Scatter(x=[x[name]] * len(vals), y=vals, mode="markers", name=f"{name} runs",
                                 legendgroup=name, showlegend=False, customdata=runs, opacity=0.6,
                                 marker={"color": color, "size": 7},
                                 hovertemplate="%{customdata}: %{y:.4g}<extra></extra>"))  # fmt: skip
        lo, hi = s.stats.iqm_ci
        # Rounding leaves ~1e-16 of "interval" around equal values, which the axis would zoom in on.
        up, down = (0.0 if abs(d) <= 1e-9 * max(1.0, abs(s.stats.iqm)) else d
                    for d in (hi - s.stats.iqm, s.stats.iqm - lo))  # fmt: skip
        bar = {"type": "data", "symmetric": False, "array": [up], "arrayminus": [down], "color": color,
               "thickness": 2, "width": 8} if np.isfinite(lo) else {"visible": False}  # fmt: skip
        fig.add_trace(go.Scatter(x=[x[name]], y=[s.stats.iqm], mode="markers", name=f"{name} (n={n})",
                                 legendgroup=name, error_y=bar,
                                 marker={"color": color, "size": 16, "symbol": "line-ew",
                                         "line": {"color": color, "width": 3}},
                                 hovertemplate=f"IQM %{{y:.4g}} [{lo:.4g}, {hi:.4g}], n={n}<extra>{name}</extra>"))  # fmt: skip
    # The legend sits below the plot, one setting a row (names are long): the figure grows with it.
    layout(fig, f"final {metric} vs {key}: runs, IQM, 95% CI", f"sweep:{metric}:{key}", y_title=y_title,
           x_title=key, height=SWEEP_HEIGHT + (LEGEND_ROW_PX * len(shown) if legend else 0),
           legend_width_px=None)  # fmt: skip
    fig.update_layout(showlegend=legend)
    fig.update_xaxes(tickvals=ticks, ticktext=labels, range=[-0.5, len(labels) - 0.5])
    fig.update_yaxes(tickformat=".4~g")  # equal values would otherwise tick as 0.9000000000000000222
    fig.update_layout(hovermode="closest")
    return fig


def parcoords_figure(settings: Sequence[Setting], keys: Sequence[str], finals: pd.DataFrame,
                     labels: dict[str, str], colors: dict[str, str]) -> go.Figure | None:  # fmt: skip
    """One line per counted run across the swept keys and the final metrics (`finals`: index run_id, a column
    per metric, `labels` their axis titles with units), coloured by its setting as on the other charts."""
    runs = [(r, i) for i, s in enumerate(settings) for r in s.values if r in finals.index]
    metrics = [m for m in finals.columns if finals.loc[[r for r, _ in runs], m].notna().all()] if runs else []
    if not runs or not metrics:
        return None
    dims = []
    for key in keys:
        values = key_values([s.group for s in settings], key)
        texts = [show(v) for v in values]
        at = [texts.index(show(settings[i].group.params[key])) if key in settings[i].group.params else -1
              for _, i in runs]  # fmt: skip
        dims.append({"label": key, "values": at, "tickvals": list(range(len(texts))), "ticktext": texts,
                     "range": [-0.25, len(texts) - 0.75]})  # fmt: skip
    dims += [
        {"label": labels.get(m, m), "values": finals.loc[[r for r, _ in runs], m].tolist()} for m in metrics
    ]
    scale = [colors.get(s.group.name, PALETTE[0]) for s in settings]
    stops = (
        [[i / max(len(scale) - 1, 1), c] for i, c in enumerate(scale)]
        if len(scale) > 1
        else [[0, scale[0]], [1, scale[0]]]
    )
    line = {"color": [i for _, i in runs], "colorscale": stops, "cmin": 0, "cmax": max(len(scale) - 1, 1)}
    fig = go.Figure(go.Parcoords(dimensions=dims, line=line))
    fig.update_layout(title={"text": f"Every finished run across the swept keys and final metrics ({len(runs)} runs; "
                             "colour: its setting, as above)"}, meta={"panel": "sweep:parcoords"}, height=400,
                      margin={"l": 120, "r": 140, "t": 90, "b": 30})  # fmt: skip
    return fig
