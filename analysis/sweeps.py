"""One sweep as the Sweeps page shows it: its settings (groups of seeds), each setting's final values of a few
metrics with IQM and 95% CI (analysis.stats), the best setting by an objective and those not distinguishable
from it (stats.verdict's rule), and how many of its runs have finished, run or failed.

A sweep's runs are found by run.json's `"sweep": {"id", "params", "seed"}`; its manifest
`<store>/.sweeps/<id>/sweep.json` (written by `entropyscope sweep`) adds the objective and the runs not started.
"""

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from analysis import stats
from analysis.compare import higher_phrase, usable
from analysis.groups import AUTO, Group, group_runs
from analysis.plots import run_series
from analysis.schema import DIVERSITY_DISTINCT_CORRECT, ENTROPY_MEAN, PASS_AT_K, REWARD_MEAN
from analysis.store_reader import StoreReader

SWEEPS_DIR = ".sweeps"
MANIFEST = "sweep.json"
METRICS = (ENTROPY_MEAN, REWARD_MEAN, PASS_AT_K, DIVERSITY_DISTINCT_CORRECT)
"""The final metrics the Sweeps page plots against each swept key (those the runs logged)."""
UNITS = {
    ENTROPY_MEAN: "nats",
    REWARD_MEAN: "reward",
    PASS_AT_K: "fraction of prompts",
    DIVERSITY_DISTINCT_CORRECT: "per prompt",
}
GOALS = ("maximize", "minimize")
STATES = ("finished", "running", "failed")
"""Run states counted on their own; any other (killed, unknown) counts as `other`, a manifest run with no
folder yet as `not started`."""


def sweep_dir(store: str | Path, sweep_id: str) -> Path:
    """`<store>/.sweeps/<id>/`: hidden from the store's run listing (a leading '.')."""
    return Path(store) / SWEEPS_DIR / sweep_id


def read_manifest(store: str | Path, sweep_id: str) -> dict[str, Any]:
    """The sweep's sweep.json; {} when it is missing or unreadable (runs made by hand, an older version)."""
    try:
        doc = json.loads((sweep_dir(store, sweep_id) / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def sweep_of(info: Mapping[str, Any]) -> str | None:
    """The id of the sweep that made a run (from its run.json), or None; as analysis.groups reads it, a sweep
    field without its params dict makes no sweep run."""
    sweep = info.get("sweep")
    if isinstance(sweep, dict) and sweep.get("id") is not None and isinstance(sweep.get("params"), dict):
        return str(sweep["id"])
    return None


def sweep_ids(store: str | Path, infos: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Every sweep of the store, newest first (by its newest run's creation): those with runs, then those with
    only a manifest (started, no run written yet)."""
    newest: dict[str, float] = {}
    for info in infos.values():
        sid = sweep_of(info)
        if sid is not None:
            created = info.get("created")
            t = float(created) if isinstance(created, int | float) else -math.inf
            newest[sid] = max(newest.get(sid, -math.inf), t)
    root = Path(store) / SWEEPS_DIR
    listed = sorted(p.parent.name for p in root.glob(f"*/{MANIFEST}")) if root.is_dir() else []
    with_runs = sorted(newest, key=lambda s: (-newest[s], s))
    return with_runs + [s for s in listed if s not in newest]


def sweep_runs(infos: Mapping[str, Mapping[str, Any]], sweep_id: str) -> list[str]:
    return sorted(r for r, info in infos.items() if sweep_of(info) == sweep_id)


def swept_keys(infos: Mapping[str, Mapping[str, Any]], run_ids: Sequence[str]) -> list[str]:
    return sorted({k for r in run_ids for k in infos[r]["sweep"]["params"]})


def status_counts(statuses: Mapping[str, str], expected: Sequence[str] = ()) -> dict[str, int]:
    """{finished, running, failed, other, not started}: `statuses` per run of the sweep (the runs table's, where
    a dead trainer's run reads `killed`), `expected` the manifest's run ids."""
    counts = dict.fromkeys((*STATES, "other", "not started"), 0)
    for status in statuses.values():
        counts[status if status in STATES else "other"] += 1
    counts["not started"] = len(set(expected) - set(statuses))
    return counts


def key_values(groups: Sequence[Group], key: str) -> list[Any]:
    """The values `key` takes over the groups, in order: numbers by value, then the rest by their text."""
    values = [g.params[key] for g in groups if key in g.params]
    unique = list({json.dumps(v, sort_keys=True, default=str): v for v in values}.values())
    numeric = [v for v in unique if isinstance(v, int | float) and not isinstance(v, bool)]
    rest = [v for v in unique if v not in numeric or isinstance(v, bool)]
    return sorted(numeric) + sorted(rest, key=lambda v: json.dumps(v, sort_keys=True, default=str))


@dataclass(frozen=True)
class Setting:
    """One setting (group of seeds) and one metric: the counted runs' final values and their statistics."""

    group: Group
    values: dict[str, float]  # run id -> final value: finished runs that logged the metric
    left_out: tuple[str, ...]  # "run (why)"
    stats: stats.GroupStats | None  # None while no run counts


@dataclass(frozen=True)
class Ranking:
    """The best setting by an objective, and every other setting with its verdict against the best."""

    metric: str
    goal: str
    best: Setting
    ties: list[tuple[Setting, str]]  # not distinguishable from the best
    beaten: list[tuple[Setting, str]]


def settings(groups: Sequence[Group], infos: Mapping[str, Mapping[str, Any]], values: Mapping[str, float]
             ) -> list[Setting]:  # fmt: skip
    """Each group's counted runs (finished, with a value: compare.usable) and their statistics."""
    out = []
    for g in groups:
        used, left = usable(g, dict(infos), dict(values), by_id=False)
        vals = {r: float(values[r]) for r in used}
        out.append(Setting(g, vals, tuple(left), stats.group_stats(list(vals.values())) if vals else None))
    return out


def rank(found: Sequence[Setting], metric: str, goal: str) -> Ranking | None:
    """Best by IQM (`goal` maximize or minimize); each other setting judged against it by stats.verdict's rule."""
    if goal not in GOALS:
        raise ValueError(f"goal {goal!r}: use one of {', '.join(GOALS)}")
    scored = [s for s in found if s.stats is not None and math.isfinite(s.stats.iqm)]
    if not scored:
        return None
    sign = 1 if goal == "maximize" else -1
    best = max(scored, key=lambda s: (sign * s.stats.iqm, s.stats.n))
    ties, beaten = [], []
    for s in scored:
        if s is best:
            continue
        pair = stats.pair_stats(list(best.values.values()), list(s.values.values()))
        line = stats.verdict(best.group.name, s.group.name, pair, higher_phrase(metric))
        (beaten if stats.distinguishable(pair.p_ci, pair.p_value) else ties).append((s, line))
    return Ranking(metric, goal, best, ties, beaten)


@dataclass(frozen=True)
class SweepResult:
    """What the Sweeps page draws for one sweep: settings per metric and the ranking by the objective."""

    sweep_id: str
    keys: list[str]
    groups: list[Group]
    finals: pd.DataFrame  # index run_id, one column per metric: each run's final value (NaN: none)
    by_metric: dict[str, list[Setting]]
    ranking: Ranking | None


def analyse(reader: StoreReader, infos: Mapping[str, Mapping[str, Any]], sweep_id: str,
            metrics: Sequence[str], objective: str, goal: str) -> SweepResult:  # fmt: skip
    """Final values of `metrics` (and `objective`) for the sweep's runs, their settings and the ranking."""
    run_ids = sweep_runs(infos, sweep_id)
    groups = group_runs(infos, run_ids, AUTO)
    wanted = list(dict.fromkeys([*metrics, objective]))
    series = run_series(reader.store, run_ids, wanted) if run_ids else {}  # one store query for every metric
    logged = {m for s in series.values() for m in s}
    table = pd.DataFrame(index=pd.Index(run_ids, name="run_id"))
    for m in wanted:
        table[m] = stats.final_values([series[r][m].to_numpy() if m in series[r] else [] for r in run_ids])
    by_metric = {m: settings(groups, infos, table[m].to_dict()) for m in wanted if m in logged}
    ranking = rank(by_metric[objective], objective, goal) if objective in by_metric else None
    return SweepResult(sweep_id, swept_keys(infos, run_ids), groups, table, by_metric, ranking)
