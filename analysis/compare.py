"""`entropyscope compare`: groups of runs chosen by selections, their final values of one metric, and the
statistics over seeds (analysis.stats) as a table or as JSON.

A group counts its finished runs only: a running, failed or killed run's last 10% is not its final value
(the output names the runs left out). A run chosen by its id counts whatever its status.
"""

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis import stats
from analysis.errors import UsageError
from analysis.groups import Group, find_groups, params_name, select
from analysis.metrics import FINAL_TAIL
from analysis.plots import run_series
from analysis.schema import ENTROPY_MEAN
from analysis.store_reader import StoreReader
from analysis.store_writer import read_run_json

MAX_KEYS_LISTED = 20
MAX_SETTINGS_LISTED = 6


@dataclass(frozen=True)
class Summary:
    group: Group
    runs: tuple[str, ...]  # those with a final value
    stats: stats.GroupStats
    left_out: tuple[str, ...]  # "run (why)"


@dataclass(frozen=True)
class Pair:
    a: str
    b: str
    stats: stats.PairStats
    verdict: str


@dataclass(frozen=True)
class Comparison:
    metric: str
    groups: list[Summary]
    pairs: list[Pair]
    dropped: tuple[str, ...] = ()  # groups without a usable run (only when not strict)


def run_infos(reader: StoreReader) -> dict[str, dict[str, Any]]:
    """{run_id: parsed run.json} for every run of the store ({} where run.json is missing or damaged)."""
    return {d.name: read_run_json(d) or {} for d in reader.run_dirs()}


def higher_phrase(metric: str) -> str:
    """How "A > B" reads for this metric in a verdict."""
    return "keeps more entropy" if metric == ENTROPY_MEAN else f"ends with higher {metric}"


def finals(reader: StoreReader, run_ids: list[str], metric: str) -> dict[str, float]:
    """Final value of `metric` per run (NaN where the run never logged it)."""
    series = run_series(reader.store, run_ids, [metric])
    traces = [s[metric].to_numpy() if metric in s else [] for s in series.values()]
    return dict(zip(series, stats.final_values(traces), strict=True))


def usable(
    group: Group, infos: dict[str, dict[str, Any]], values: dict[str, float], by_id: bool
) -> tuple[list[str], list[str]]:
    """(runs with a final value: finished ones unless chosen by id, the others as "run (why)")."""
    used, left = [], []
    for r in group.run_ids:
        status = infos.get(r, {}).get("status", "unknown")
        if not by_id and status != "finished":
            left.append(f"{r} ({status})")
        elif not math.isfinite(values.get(r, math.nan)):
            left.append(f"{r} (no value)")
        else:
            used.append(r)
    return used, left


def compare_groups(
    reader: StoreReader, infos: dict[str, dict[str, Any]], chosen: list[tuple[Group, bool]], metric: str,
    strict: bool = True,
) -> Comparison:  # fmt: skip
    """Final values of `metric` for each (group, chosen by run id) and every pair of groups, in order. A group
    with no usable run is a UsageError when `strict`, else left out and named in `dropped`."""
    run_ids = sorted({r for g, _ in chosen for r in g.run_ids})
    keys = reader.keys(run_ids)
    if metric not in keys:
        shown = ", ".join(keys[:MAX_KEYS_LISTED]) + (", ..." if len(keys) > MAX_KEYS_LISTED else "")
        raise UsageError(f"no run of these groups logged {metric!r}; pass --metric one of: {shown or 'none'}")
    values = finals(reader, run_ids, metric)
    summaries, dropped = [], []
    for group, by_id in chosen:
        used, left = usable(group, infos, values, by_id)
        if used:
            summaries.append(
                Summary(group, tuple(used), stats.group_stats([values[r] for r in used]), tuple(left))
            )
        elif strict:
            raise UsageError(
                f"group {group.name!r} has no finished run with a final value to compare (runs: {', '.join(left)}); "
                "wait for its runs to finish, or name run ids"
            )
        else:
            dropped.append(group.name)
    pairs = []
    for sa, sb in itertools.combinations(summaries, 2):
        ps = stats.pair_stats([values[r] for r in sa.runs], [values[r] for r in sb.runs])
        a, b = sa.group.name, sb.group.name
        pairs.append(Pair(a, b, ps, stats.verdict(a, b, ps, higher_phrase(metric))))
    return Comparison(metric, summaries, pairs, tuple(dropped))


def compare(store: str | Path, specs: list[str], metric: str) -> Comparison:
    """Resolve the selections (UsageError when one names nothing) and compare their groups."""
    reader = StoreReader(store)
    infos = run_infos(reader)
    if not infos:
        raise UsageError(f"no runs in store {str(store)!r}; pass --store DIR")
    all_groups = find_groups(infos)
    chosen = [(select(spec, infos, all_groups), spec in infos) for spec in specs]
    for group, _ in chosen:
        one_setting(group, infos)
    return compare_groups(reader, infos, chosen, metric)


def one_setting(group: Group, infos: dict[str, dict[str, Any]]) -> None:
    """UsageError when a sweep selection pools several settings: its runs would be counted as seeds of one."""
    if group.sweep is None:
        return
    spanned = sorted({params_name(infos[r]["sweep"]["params"]) for r in group.run_ids})
    if len(spanned) > 1:
        shown = "; ".join(spanned[:MAX_SETTINGS_LISTED]) + (
            "; ..." if len(spanned) > MAX_SETTINGS_LISTED else ""
        )
        raise UsageError(
            f"selection {group.name!r} pools {len(spanned)} settings of sweep {group.sweep!r} ({shown}), which "
            f"would count as seeds of one; name every swept key, e.g. sweep={group.sweep}:{spanned[0].replace(', ', ',')}"
        )


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None  # JSON has no NaN


def to_json(c: Comparison) -> dict[str, Any]:
    """The `--json` document; `ci` is the interval of the IQM, the headline statistic."""
    return {
        "metric": c.metric,
        "groups": [
            {"name": s.group.name, "runs": list(s.runs), "mean": _num(s.stats.mean), "iqm": _num(s.stats.iqm),
             "ci": [_num(v) for v in s.stats.iqm_ci]}
            for s in c.groups
        ],
        "pairs": [
            {"a": p.a, "b": p.b, "ratio": _num(p.stats.ratio), "ratio_ci": [_num(v) for v in p.stats.ratio_ci],
             "p_improvement": _num(p.stats.p), "p_ci": [_num(v) for v in p.stats.p_ci], "verdict": p.verdict}
            for p in c.pairs
        ],
    }  # fmt: skip


def _with_ci(x: float, ci: tuple[float, float], fmt: str = ".4g") -> str:
    if not math.isfinite(ci[0]):
        return f"{x:{fmt}} [–]"
    return f"{x:{fmt}} [{ci[0]:{fmt}}, {ci[1]:{fmt}}]"


def group_table(groups: list[Summary]) -> pd.DataFrame:
    """Final values per group as people read them: n, mean and IQM with 95% intervals."""
    return pd.DataFrame(
        {
            "group": [s.group.name for s in groups],
            "n": [s.stats.n for s in groups],
            "mean [95% CI]": [_with_ci(s.stats.mean, s.stats.mean_ci) for s in groups],
            "IQM [95% CI]": [_with_ci(s.stats.iqm, s.stats.iqm_ci) for s in groups],
        }
    )


def pair_table(pairs: list[Pair]) -> pd.DataFrame:
    """Each pair: ratio of IQMs and P(A > B) with 95% intervals, and the verdict."""
    return pd.DataFrame(
        {
            "A": [p.a for p in pairs],
            "B": [p.b for p in pairs],
            "IQM A / B": [_with_ci(p.stats.ratio, p.stats.ratio_ci) for p in pairs],
            "P(A > B)": [_with_ci(p.stats.p, p.stats.p_ci, ".2f") for p in pairs],
            "verdict": [p.verdict for p in pairs],
        }
    )


def to_text(c: Comparison) -> str:
    lines = [
        f"{c.metric}: final value per run = mean over its last {100 // FINAL_TAIL}% of steps; "
        "95% bootstrap confidence intervals (docs/statistics.md)",
        group_table(c.groups).to_string(index=False),
    ]
    lines += [f"left out of {s.group.name}: {', '.join(s.left_out)}" for s in c.groups if s.left_out]
    if c.pairs:
        table = pair_table(c.pairs).drop(columns=["verdict"])
        lines += ["", table.to_string(index=False), ""]
        lines += [p.verdict for p in c.pairs]
    return "\n".join(lines)


def group_curves(df: pd.DataFrame, groups: list[Group], n_resamples: int = 1000) -> pd.DataFrame:
    """Per group and step: the mean over its runs of `value` (columns run_id, step, x, value of one key), with a
    95% bootstrap band across seeds where every run of the group has the step (two runs or more). Columns:
    group, n, step, x (the runs' mean x at that step), mean, lo, hi."""
    parts = []
    for g in groups:
        d = df[df["run_id"].isin(g.run_ids)]
        if d.empty:
            continue
        y = d.pivot_table(index="step", columns="run_id", values="value", aggfunc="mean", dropna=False)
        x = d.groupby("step")["x"].mean()
        complete = y.notna().all(axis=1).to_numpy() & (y.shape[1] >= 2)
        lo, hi = np.full(len(y), np.nan), np.full(len(y), np.nan)
        if complete.any():
            lo[complete], hi[complete] = stats.interval(y.to_numpy()[complete], stats.mean, n_resamples)
        parts.append(
            pd.DataFrame(
                {
                    "group": g.name,
                    "n": y.shape[1],
                    "step": y.index,
                    "x": x.reindex(y.index).to_numpy(),
                    "mean": y.mean(axis=1).to_numpy(),
                    "lo": lo,
                    "hi": hi,
                }
            )  # fmt: skip
        )
    columns = ["group", "n", "step", "x", "mean", "lo", "hi"]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
