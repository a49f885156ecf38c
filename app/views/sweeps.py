"""Sweeps: one sweep (`?sweep=ID`) as its settings over seeds.

For each final metric (entropy, reward, pass@k, distinct correct) against each swept key: one dot per finished
run and each setting's IQM with its 95% bootstrap CI; the best setting by the objective (the sweep's `metric`
unless `?metric=KEY&goal=maximize|minimize` says otherwise) and the settings not distinguishable from it; a
parallel-coordinates view where more than one key is swept. Live while the sweep runs (analysis.sweeps).
"""

import math

import streamlit as st

from analysis import sweeps
from analysis.schema import REWARD_MEAN
from app import charts, loaders, ui


def y_title(metric: str) -> str:
    unit = sweeps.UNITS.get(metric)
    return f"{metric} ({unit})" if unit else f"{metric} (as logged)"


def pick_sweep(ids: list[str]) -> str:
    asked = st.query_params.get("sweep")
    if asked is not None and asked not in ids:
        st.error(
            f"`?sweep=` in the address names no sweep of this store: {ui.literal(asked)}; pick one below."
        )
    return st.selectbox("Sweep", ids, key="sweep", bind="query-params")  # default: the newest


def objective(store: str, sweep_id: str, run_ids: list[str]) -> tuple[str, str]:
    """The objective widgets, defaulting to the sweep's own `metric` (sweep.json)."""
    spec = sweeps.read_manifest(store, sweep_id).get("metric") or {}
    keys = loaders.metric_keys(store, tuple(run_ids), loaders.version(store, run_ids, ["steps"])) or [
        REWARD_MEAN
    ]
    name = spec.get("name") if spec.get("name") in keys else (REWARD_MEAN if REWARD_MEAN in keys else keys[0])
    goal = spec.get("goal") if spec.get("goal") in sweeps.GOALS else sweeps.GOALS[0]
    c = st.columns([3, 1, 4])
    metric = c[0].selectbox("Best setting by", keys, index=keys.index(name), key="metric", bind="query-params",
                            help="a step metric, judged on each run's final value (mean of its last 10% of steps)")  # fmt: skip
    chosen = c[1].selectbox(
        "goal", sweeps.GOALS, index=sweeps.GOALS.index(goal), key="goal", bind="query-params"
    )
    return metric, chosen


def counts_line(sweep_id: str, store: str, run_ids: list[str]) -> bool:
    """Finished / running / failed runs of the sweep (and those not started); True while some run."""
    runs = ui.load_runs(store)
    statuses = {} if runs is None else dict(zip(runs["run_id"], runs["status"], strict=True))
    mine = {r: statuses.get(r, "unknown") for r in run_ids}
    n = sweeps.status_counts(mine, sweeps.read_manifest(store, sweep_id).get("runs") or [])
    shown = " · ".join(f"{v} {k}" for k, v in n.items() if v or k in sweeps.STATES)
    st.caption(f"Sweep {ui.literal(sweep_id)}: {shown}. Statistics count finished runs only.")
    return n["running"] > 0


def ranking_text(result: sweeps.SweepResult) -> None:
    rank = result.ranking
    if rank is None:
        st.info("No finished run of this sweep has logged the objective yet.")
        return
    best = rank.best
    lo, hi = best.stats.iqm_ci
    ci = f" [{lo:.4g}, {hi:.4g}]" if math.isfinite(lo) else ""
    word = "highest" if rank.goal == "maximize" else "lowest"
    st.markdown(f"**Best setting**: {word} final {ui.literal(rank.metric)} (IQM, 95% CI)")
    st.text(
        f"{best.group.name}: IQM {best.stats.iqm:.4g}{ci}, n = {best.stats.n}"
    )  # plain: names hold values
    if rank.ties:
        st.markdown(f"**Not distinguishable from it** ({len(rank.ties)}):")
        st.text("\n".join(line for _, line in rank.ties))
    else:
        st.markdown("**Every other setting is distinguishable from it.**")
    if rank.beaten:
        with st.expander(f"Settings it beats ({len(rank.beaten)})"):
            st.text("\n".join(line for _, line in rank.beaten))


def body(store: str, sweep_id: str, metric: str, goal: str) -> None:
    infos = loaders.run_infos(store, loaders.version(store, None, []))
    run_ids = sweeps.sweep_runs(infos, sweep_id)
    live = counts_line(sweep_id, store, run_ids)
    if not run_ids:
        st.info("This sweep has not written a run yet.")
        return
    with ui.unavailable("Sweep"):
        version = loaders.version(store, run_ids, ["steps"])
        result = loaders.sweep_result(store, sweep_id, sweeps.METRICS, metric, goal, version)
        ranking_text(result)
        colors = charts.setting_colors([g.name for g in result.groups])
        shown = [m for m in dict.fromkeys([metric, *sweeps.METRICS]) if m in result.by_metric]
        for row, m in enumerate(shown):  # the first row's legends name the colours of every row
            cols = st.columns(min(len(result.keys), 2) or 1)
            for i, key in enumerate(result.keys):
                fig = charts.sweep_figure(result.by_metric[m], key, m, y_title(m), colors, legend=row == 0)
                with cols[i % len(cols)]:
                    ui.show_figure(fig, f"sweep-{m}-{key}", f"{m}: no finished run has a value yet.")
        if len(result.keys) > 1:
            labels = {m: y_title(m) for m in shown}
            settings = result.by_metric[shown[0]] if shown else []
            fig = charts.parcoords_figure(settings, result.keys, result.finals[shown], labels, colors)
            ui.show_figure(
                fig, "sweep-parcoords", "Parallel coordinates: no finished run has every metric yet."
            )
    if live:
        st.caption(f"Live: refreshes every {ui.LIVE_REFRESH_S:g} s while a run of the sweep is running.")


def main() -> None:
    st.title("Sweeps")
    store = ui.store()
    runs = ui.load_runs(store)  # says why when the store has no run at all
    if runs is None:
        return
    infos = loaders.run_infos(store, loaders.version(store, None, []))
    ids = sweeps.sweep_ids(store, infos)
    if not ids:
        st.info(f"No sweep in `{store}` yet. Start one with `entropyscope sweep SPEC.yaml --store {store}` "
                "(docs/sweeps.md).")  # fmt: skip
        return
    sweep_id = pick_sweep(ids)
    run_ids = sweeps.sweep_runs(infos, sweep_id)
    metric, goal = objective(store, sweep_id, run_ids) if run_ids else (REWARD_MEAN, sweeps.GOALS[0])
    live = ui.is_live(runs, run_ids)
    ui.live_fragment(lambda: body(store, sweep_id, metric, goal), live)


main()
