"""Groups of runs that differ only in seed, their names, and the selections `entropyscope compare` takes.

A run made by a sweep (run.json has `"sweep": {"id", "params", "seed"}`) belongs to the group of its sweep and
swept values; any other run to the group of runs with the same config minus seed, run id and store. A group's
name lists what sets it apart (`controller=repo_r, target_entropy=0.4`): a sweep group's swept values, another
group's config keys that differ between the store's non-sweep groups.

Selections: a run id, a group name (keys in any order, values matched as below), or `sweep=ID[:key=value,...]`
with values parsed as YAML scalars and matched by value, so `lr=0` selects a run with `lr: 0.0`.
"""

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from analysis.errors import UsageError

IGNORED_KEYS = ("seed", "run_id", "store")
"""Config keys that do not set a run's group apart."""
SWEEP_PREFIX = "sweep="
MAX_LISTED = 12
AUTO, NONE = "auto", "none"
SWEEP_BY, CONFIG_BY = "sweep:", "config:"
"""The Compare page's group-by choices: none, auto, `sweep:KEY` (a swept value), `config:KEY`."""


@dataclass(frozen=True)
class Group:
    """Runs that differ only in seed; `params` are the keys and values its name shows."""

    name: str
    run_ids: tuple[str, ...]
    params: dict[str, Any] = field(default_factory=dict)
    sweep: str | None = None


def show(value: Any) -> str:
    """A value as it reads in a name, and parses back from it as YAML (`0.4`, `true`, `repo_r`)."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def params_name(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={show(params[k])}" for k in sorted(params))


def _number(v: Any) -> float | None:
    """v as a number, also when spelled as one (PyYAML reads `1e-3` as text); None for bools and other text."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        return float(v)
    try:
        return float(v) if isinstance(v, str) else None
    except ValueError:
        return None


def same_value(a: Any, b: Any) -> bool:
    """Equal by value: 0 matches 0.0 and `1e-3` 0.001, but True does not match 1 (a YAML `true` is no number)."""
    x, y = _number(a), _number(b)
    if x is not None and y is not None:
        return x == y or (math.isnan(x) and math.isnan(y))
    return type(a) is type(b) and a == b


def _sweep(info: Mapping[str, Any]) -> dict[str, Any] | None:
    sweep = info.get("sweep")
    if isinstance(sweep, dict) and sweep.get("id") is not None and isinstance(sweep.get("params"), dict):
        return sweep
    return None


def _config(info: Mapping[str, Any]) -> dict[str, Any]:
    config = info.get("config")
    return {k: v for k, v in config.items() if k not in IGNORED_KEYS} if isinstance(config, dict) else {}


def _key(info: Mapping[str, Any]) -> str:
    """What a run's group is decided by, as canonical JSON."""
    sweep = _sweep(info)
    if sweep is not None:
        return json.dumps(["sweep", str(sweep["id"]), sweep["params"]], sort_keys=True, default=str)
    return json.dumps(["config", _config(info)], sort_keys=True, default=str)


def _naming_keys(configs: list[dict[str, Any]]) -> list[str]:
    """Config keys whose values differ between groups; keys that only some configs have (runs written by older
    versions) only where the others leave two groups with one name."""

    def canon(v: Any) -> str:
        return json.dumps(v, sort_keys=True, default=str)

    keys = sorted({k for c in configs for k in c})
    differ = [k for k in keys if len({canon(c.get(k)) for c in configs}) > 1]
    everywhere = [k for k in differ if all(k in c for c in configs)]
    names = [canon({k: c[k] for k in everywhere}) for c in configs]
    return everywhere if len(set(names)) == len(names) else differ


def find_groups(infos: Mapping[str, Mapping[str, Any]]) -> list[Group]:
    """Every group among `infos` ({run_id: parsed run.json}), sorted by name; each name unique."""
    members: dict[str, list[str]] = {}
    for run_id in sorted(infos):
        members.setdefault(_key(infos[run_id]), []).append(run_id)
    configs = {k: _config(infos[runs[0]]) for k, runs in members.items() if _sweep(infos[runs[0]]) is None}
    differing = _naming_keys(list(configs.values()))
    groups = []
    for key, runs in members.items():
        sweep = _sweep(infos[runs[0]])
        if sweep is not None:
            params, sweep_id = dict(sweep["params"]), str(sweep["id"])
        else:
            params, sweep_id = {k: configs[key][k] for k in differing if k in configs[key]}, None
        groups.append(Group(params_name(params) or runs[0], tuple(runs), params, sweep_id))
    return sorted(_unique(groups), key=lambda g: g.name)


def _unique(groups: list[Group]) -> list[Group]:
    """Names held by several groups get their sweep id in front, then (if still shared) their first run id."""

    def clash(gs: list[Group]) -> set[str]:
        names = [g.name for g in gs]
        return {n for n in names if names.count(n) > 1}

    shared = clash(groups)
    groups = [
        Group(f"{SWEEP_PREFIX}{g.sweep}: {g.name}", g.run_ids, g.params, g.sweep) if g.name in shared and g.sweep
        else g for g in groups
    ]  # fmt: skip
    shared = clash(groups)
    return [Group(f"{g.name} ({g.run_ids[0]})", g.run_ids, g.params, g.sweep) if g.name in shared else g
            for g in groups]  # fmt: skip


def parse_pairs(text: str, spec: str) -> dict[str, Any]:
    """`key=value[,key=value]` with values as YAML scalars; UsageError naming `spec` when malformed."""
    out: dict[str, Any] = {}
    for part in text.split(","):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise UsageError(f"selection {spec!r}: expected key=value[,key=value], got {part.strip()!r}")
        try:
            parsed = yaml.safe_load(value.strip()) if value.strip() else ""
        except yaml.YAMLError:
            parsed = value.strip()
        if isinstance(parsed, dict | list):
            parsed = value.strip()  # `a: b` or `[x]` in a value is text here, not structure
        out[key.strip()] = parsed
    return out


def params_match(params: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    return all(k in params and same_value(params[k], v) for k, v in wanted.items())


def select(spec: str, infos: Mapping[str, Mapping[str, Any]], groups: list[Group]) -> Group:
    """The runs a selection names, as a group; UsageError listing what exists when it names nothing."""
    if spec.startswith(SWEEP_PREFIX):
        return _select_sweep(spec, infos)
    if spec in infos:
        return Group(spec, (spec,))
    for g in groups:
        if g.name == spec:
            return g
    if "=" in spec:
        wanted = parse_pairs(spec, spec)
        found = [g for g in groups if g.params.keys() == wanted.keys() and params_match(g.params, wanted)]
        if len(found) == 1:
            return found[0]
        if found:
            listing = "; ".join(g.name for g in found)
            raise UsageError(
                f"selection {spec!r} names {len(found)} groups ({listing}); pick one by its full name"
            )
    names = [g.name for g in groups]
    listing = "; ".join(names[:MAX_LISTED]) + (
        f"; ... ({len(names)} in all)" if len(names) > MAX_LISTED else ""
    )
    raise UsageError(
        f"no run, group or sweep {spec!r} in the store; groups: {listing or 'none'} (run ids: `entropyscope runs`)"
    )


def _select_sweep(spec: str, infos: Mapping[str, Mapping[str, Any]]) -> Group:
    """`sweep=ID[:key=value,...]`: the sweep's runs whose swept values match (all of them without a filter)."""
    sweep_id, _, filt = spec[len(SWEEP_PREFIX) :].partition(":")
    runs = {r: s for r, info in infos.items() if (s := _sweep(info)) is not None and str(s["id"]) == sweep_id}
    if not runs:
        known = sorted({str(s["id"]) for info in infos.values() if (s := _sweep(info)) is not None})
        raise UsageError(f"no sweep {sweep_id!r} in the store; sweeps: {', '.join(known) or 'none'}")
    wanted = parse_pairs(filt, spec) if filt else {}
    chosen = tuple(sorted(r for r, s in runs.items() if params_match(s["params"], wanted)))
    if not chosen:
        values = sorted({params_name(s["params"]) for s in runs.values()})
        raise UsageError(f"no run of sweep {sweep_id!r} matches {filt!r}; its settings: {'; '.join(values)}")
    return Group(spec, chosen, wanted, sweep_id)


def group_by_options(infos: Mapping[str, Mapping[str, Any]], run_ids: Sequence[str]) -> list[str]:
    """What the Compare page can group `run_ids` by: none, auto (differ only in seed), a swept key
    (`sweep:KEY`), or a config key whose value differs between them (`config:KEY`)."""
    chosen = [infos.get(r, {}) for r in run_ids]
    swept = sorted({k for info in chosen if (s := _sweep(info)) is not None for k in s["params"]})
    configs = [_config(info) for info in chosen]
    varying = _naming_keys(configs) if len(configs) > 1 else []
    return [NONE, AUTO, *(SWEEP_BY + k for k in swept), *(CONFIG_BY + k for k in varying)]


def group_runs(infos: Mapping[str, Mapping[str, Any]], run_ids: Sequence[str], by: str) -> list[Group]:
    """`run_ids` in groups by a group_by_options() choice; auto names groups as find_groups() does."""
    if by == AUTO:
        wanted = set(run_ids)
        found = [(g, tuple(r for r in g.run_ids if r in wanted)) for g in find_groups(infos)]
        return [Group(g.name, runs, g.params, g.sweep) for g, runs in found if runs]
    if by.startswith((SWEEP_BY, CONFIG_BY)):
        key = by.partition(":")[2]
        members: dict[str, list[str]] = {}
        for r in run_ids:
            info = infos.get(r, {})
            source = (_sweep(info) or {}).get("params", {}) if by.startswith(SWEEP_BY) else _config(info)
            name = f"{key}={show(source[key])}" if key in source else f"{key}=–"
            members.setdefault(name, []).append(r)
        return [Group(name, tuple(runs)) for name, runs in sorted(members.items())]
    return [Group(r, (r,)) for r in run_ids]
