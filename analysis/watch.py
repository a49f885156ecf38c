"""`entropyscope watch`: alert rules over every run of a store; each transition recorded once, printed, POSTed.

Run `entropyscope watch --store runs --once` from cron or CI (exit 1 while a critical alert fires), or without
--once to poll every `interval_s` seconds. A cycle reads, for all runs in one DuckDB query, only the recent
window of the keys the rules read (segments entirely before it are skipped by their Parquet step statistics)
plus each run's H0, starts every rule from its last recorded alert event, and appends new transitions to the
run's `events/` as a new immutable segment (never run.json, which the trainer owns). So a restarted watch, or
a trainer that records the same transitions itself, repeats nothing.

An ended run (not `running`) that no trainer judged live (imported, or trained with `alerts: off`) is read
once over every step, so each alert carries the step where it first fired, however long before the end; the
runs evaluated so, with a digest of the segments read, are kept in `<store>/.watch_full.json` (a cache: lost,
it costs one more full read, and recorded transitions are never repeated). The firing alerts of every ended
run, once judged and its transitions recorded, are kept in `<store>/.cache/watch_ended.json` under a
fingerprint of its steps and events segments and run.json: a later cycle reads only the runs whose files
changed and the running ones (so `watch --once` over a store of a thousand mostly finished runs stays cheap).

Simplifications: on a running run first seen with more than a window of steps, transitions older than the
window are not reconstructed (the states at its end are), nor on an ended run a trainer judged live with rules
other than the watch's; a transition is POSTed after it is recorded, and retried with backoff while the
endpoint is down (analysis.webhook); H0 is the first finite value in the run's first segment.
"""

import contextlib
import dataclasses
import functools
import hashlib
import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from analysis.alerts import FIRED, RESOLVED, AlertState, RuleSet, Transition, evaluate, load_rules
from analysis.atomic import write_json_atomic
from analysis.errors import UsageError
from analysis.run_cache import Fingerprint, RunCache, segments_fingerprint
from analysis.run_ids import inside_store
from analysis.segments import live_segments
from analysis.store_reader import StoreReader, read_run_json
from analysis.store_writer import RUN_JSON, write_events
from analysis.webhook import Webhook

FULL_CACHE = ".watch_full.json"
ENDED_CACHE = "watch_ended.json"
"""In <store>/.cache/ (analysis.run_cache): the firing alerts of each ended run, with its files' fingerprint."""
ENDED_VERSION = 1
"""Raised when evaluation changes in a way that outdates the cached states."""
WINDOW_STEPS = 200
"""Steps of each run read per cycle (at least twice the rules' lookback); a transition that starts and ends
within one cycle is still seen when a run makes fewer steps than this between two cycles."""


@dataclass
class RunAlerts:
    """One run after a cycle: the transitions new this cycle and the alerts firing at its end."""

    run_id: str
    transitions: list[Transition]
    active: list[AlertState]


# ---- reading ----------------------------------------------------------------------------------------------


class _StepRanges:
    """(first, last) step of each `steps` segment, from its Parquet footer; cached while the file is unchanged."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[int, int, int, int]] = {}  # path -> size, mtime_ns, lo, hi

    def get(self, path: Path) -> tuple[int, int] | None:
        try:
            st = path.stat()
            hit = self._cache.get(str(path))
            if hit and hit[:2] == (st.st_size, st.st_mtime_ns):
                return hit[2], hit[3]
            meta = pq.read_metadata(path)
            col = meta.schema.names.index("step")
            stats = [meta.row_group(i).column(col).statistics for i in range(meta.num_row_groups)]
        except FileNotFoundError:
            return None  # removed since the listing (compaction): not an error
        except (OSError, ValueError, pa.ArrowException) as err:
            warnings.warn(
                f"watch: skipping unreadable run-store segment {path}: {err}", RuntimeWarning, stacklevel=2
            )
            return None
        if not stats or any(s is None or not s.has_min_max for s in stats):
            return None
        lo, hi = min(int(s.min) for s in stats), max(int(s.max) for s in stats)
        self._cache[str(path)] = (st.st_size, st.st_mtime_ns, lo, hi)
        return lo, hi


@dataclass
class _Window:
    """What a cycle reads: segments holding each run's recent steps, segments holding its first step (H0),
    and per run (index, last step, window start); the start is None when the window reaches the first step.
    `full`: the runs read over every step, with the digest of their segments."""

    tail_files: list[str]
    head_files: list[str]
    bounds: dict[str, tuple[int, int, int | None]]
    full: dict[str, str] = field(default_factory=dict)


def _window_files(
    run_dirs: list[Path], ranges: _StepRanges, window: int, read_all: Callable[[str, str], bool] | None = None
) -> _Window:
    """What to read of `run_dirs`; `read_all(run_id, digest of its segments)`: whether over every step."""
    tail, head, bounds, full = [], [], {}, {}
    for run_dir in run_dirs:
        seen = [(str(p), r) for p in live_segments(run_dir / "steps") if (r := ranges.get(p))]
        if not seen:
            continue
        first, last = min(r[0] for _, r in seen), max(r[1] for _, r in seen)
        start = last - window + 1
        digest = hashlib.sha1("".join(f"{Path(p).name}:{hi};" for p, (_, hi) in seen).encode()).hexdigest()
        if read_all is not None and read_all(run_dir.name, digest):
            start, full[run_dir.name] = first, digest
        tail += [p for p, (lo, hi) in seen if hi >= start]
        head += [p for p, (lo, hi) in seen if lo == first]
        bounds[run_dir.name] = (len(bounds), last, start if start > first else None)
    return _Window(tail, head, bounds, full)


# Params: rule keys twice. The window's rows as numbers (run index, key index, step, value, and the order
# StoreReader resolves repeated steps by: wall time, segment name rank, row in segment).
_TAIL_SQL = """
SELECT b.idx AS run, list_position(?::VARCHAR[], s."key") - 1 AS k, s.step, s."value", s.wall_time,
    f.rank AS file_rank, s.file_row_number
FROM tail s JOIN bounds b USING (run_id) JOIN files f USING (filename)
WHERE list_contains(?::VARCHAR[], s."key") AND s.step >= b.start
"""
# Params: baseline keys. H0: the first finite value of each key in each run's first segment.
_H0_SQL = """
SELECT run_id, "key", arg_min("value", step) AS h0 FROM head
WHERE list_contains(?::VARCHAR[], "key") AND isfinite("value") GROUP BY run_id, "key"
"""


def _view(con: duckdb.DuckDBPyConnection, name: str, files: list[str]) -> None:
    """A view over segments; without union_by_name (slow: it opens every file at bind time) unless the
    segments' schemas differ."""
    try:
        rel = con.read_parquet(files, filename=True, file_row_number=True)
    except duckdb.Error:
        rel = con.read_parquet(files, filename=True, file_row_number=True, union_by_name=True)
    rel.create_view(name, replace=True)


def _read_windows(w: _Window, rules: RuleSet) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(window rows, numeric: see _TAIL_SQL) and (H0 rows: run_id, key, h0)."""
    if not w.tail_files:
        tail_columns = ["run", "k", "step", "value", "wall_time", "file_rank", "file_row_number"]
        return pd.DataFrame(columns=tail_columns), pd.DataFrame(columns=["run_id", "key", "h0"])
    con = duckdb.connect()
    try:
        _view(con, "tail", w.tail_files)
        _view(con, "head", w.head_files)
        starts = [s if s is not None else -(2**62) for _, _, s in w.bounds.values()]
        idx = [i for i, _, _ in w.bounds.values()]
        con.register("bounds", pd.DataFrame({"run_id": list(w.bounds), "idx": idx, "start": starts}))
        names = sorted(w.tail_files)
        con.register("files", pd.DataFrame({"filename": names, "rank": np.arange(len(names))}))
        tail = con.execute(_TAIL_SQL, [rules.keys(), rules.keys()]).df()
        h0 = con.execute(_H0_SQL, [rules.baseline_keys()]).df()
    finally:
        con.close()
    return tail, h0


def _recorded(reader: StoreReader, run_ids: list[str]) -> dict[str, dict[str, tuple[bool, int]]]:
    """run -> rule -> (firing, step) from each rule's latest alert event (whoever recorded it)."""
    if not run_ids:  # every run came from a cache: no query, and no DuckDB to start
        return {}
    # A cycle records its transitions with increasing wall times; the step breaks any remaining tie.
    events = reader.events(run_ids, kinds=[FIRED, RESOLVED]).sort_values(["wall_time", "step"], kind="stable")
    out: dict[str, dict[str, tuple[bool, int]]] = {}
    for run_id, kind, step, payload in zip(events["run_id"], events["kind"], events["step"], events["payload"],
                                           strict=True):  # fmt: skip
        try:
            rule = json.loads(payload).get("rule")
        except (TypeError, ValueError, AttributeError):
            continue  # not ours: an alert event without a rule name cannot be matched to a rule
        if rule:  # events come oldest first: the last one per rule wins
            out.setdefault(run_id, {})[rule] = (kind == FIRED, int(step))
    return out


@dataclass(frozen=True)
class _RunInfo:
    """What run.json says about a run's liveness, and whether a trainer judged its alerts live at every step."""

    status: str | None = None
    heartbeat: float | None = None
    last_step: int | None = None
    judged_live: bool = False


def _liveness(run_dir: Path) -> _RunInfo:
    """run.json's liveness; Nones when it cannot be read."""
    info = read_run_json(run_dir)
    if info is None:
        return _RunInfo()
    hb, last = info.get("heartbeat"), info.get("last_step")
    source, config = info.get("source"), info.get("config")
    imported = isinstance(source, dict) and not source.get("live")
    alerts = config.get("alerts", "off") if isinstance(config, dict) else "off"
    return _RunInfo(
        info.get("status"),
        float(hb) if isinstance(hb, int | float) else None,
        int(last) if isinstance(last, int) else None,
        judged_live=not imported and alerts not in ("off", False),
    )


def _split(
    tail: pd.DataFrame, w: _Window, keys: list[str]
) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Window rows as run -> key -> (steps, values), a repeated step resolved as StoreReader does (the row
    with the latest wall time, then the later segment, then the later row, wins)."""
    if tail.empty:  # every run's states came from the ended-run cache
        return {}
    cols = [tail[c].to_numpy(np.int64) for c in ("run", "k", "step")]
    wall, rank, row = (
        tail["wall_time"].to_numpy(),
        tail["file_rank"].to_numpy(),
        tail["file_row_number"].to_numpy(),
    )
    order = np.lexsort((row, rank, wall, cols[2], cols[1], cols[0]))
    run, k, step = (c[order] for c in cols)
    value = tail["value"].to_numpy(np.float64)[order]
    same = (run[1:] == run[:-1]) & (k[1:] == k[:-1])
    last_of_step = np.r_[~same | (step[1:] != step[:-1]), True]
    run, k, step, value = run[last_of_step], k[last_of_step], step[last_of_step], value[last_of_step]
    cuts = np.flatnonzero((run[1:] != run[:-1]) | (k[1:] != k[:-1])) + 1
    run_ids = {i: r for r, (i, _, _) in w.bounds.items()}
    out: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(run)], strict=True):
        if b > a:
            out.setdefault(run_ids[int(run[a])], {})[keys[int(k[a])]] = (step[a:b], value[a:b])
    return out


# ---- one cycle --------------------------------------------------------------------------------------------


class Watcher:
    """Evaluates a store's runs once per `cycle()`; keeps only caches between cycles (state lives in events)."""

    def __init__(self, store: str | Path, rules: RuleSet, window: int = WINDOW_STEPS) -> None:
        self.reader = StoreReader(store)
        self.rules = rules
        self.window = max(window, 2 * rules.lookback())
        self._ranges = _StepRanges()
        self._cache = Path(store) / FULL_CACHE
        self._full = _load_full(self._cache)
        self._pending_full: dict[str, str] = {}
        version = hashlib.sha1(
            f"{ENDED_VERSION}:{self.window}:{rules.model_dump_json()}".encode()
        ).hexdigest()
        self.ended_version = version
        self._ended = RunCache(Path(store), ENDED_CACHE, version)
        self._pending_ended: dict[str, tuple[Fingerprint | None, RunAlerts]] = {}
        self._run_ids: list[str] = []

    def cycle(self, now: float | None = None, run_ids: list[str] | None = None) -> list[RunAlerts]:
        """New transitions and firing alerts of every run (of `run_ids` only, when given); records nothing
        (see `notify`)."""
        now = time.time() if now is None else now
        store = self.reader.store
        dirs = (
            self.reader.run_dirs()
            if run_ids is None  # else no scan of the whole store: a sweep seals its runs one by one
            else [d for d in (store / r for r in run_ids) if d.is_dir() and inside_store(store, d)]
        )
        infos = {d.name: _liveness(d) for d in dirs}
        # An ended run judged before, whose files did not change since, has the same states: not read again.
        ended = {d.name: _ended_fingerprint(d) for d in dirs if _ended(infos[d.name])}
        cached = {r: states for r, fp in ended.items() if (states := self._ended.get(r, fp)) is not None}

        def read_all(run_id: str, digest: str) -> bool:  # an ended run nobody judged live, not yet read whole
            info = infos.get(run_id, _RunInfo())
            return info.status != "running" and not info.judged_live and self._full.get(run_id) != digest

        judged = [d for d in dirs if d.name not in cached]
        window = _window_files(judged, self._ranges, self.window, read_all)
        tail, h0 = _read_windows(window, self.rules)
        series = _split(tail, window, self.rules.keys())
        baselines: dict[str, dict[str, float]] = {}
        for run_id, key, value in zip(h0["run_id"], h0["key"], h0["h0"], strict=True):
            baselines.setdefault(run_id, {})[key] = float(value)
        recorded = _recorded(self.reader, [r for r in infos if r not in cached])
        out = []
        for run_id, info in infos.items():
            if run_id in cached:
                out.append(RunAlerts(run_id, [], [AlertState(**s) for s in cached[run_id]]))
                continue
            _, last, start = window.bounds.get(run_id, (None, None, None))
            ev = evaluate(
                series.get(run_id, {}),
                self.rules,
                baseline=baselines.get(run_id),
                prior=recorded.get(run_id),
                window_start=start,
                status=info.status,
                heartbeat=info.heartbeat,
                now=now,
                last_step=max((s for s in (last, info.last_step) if s is not None), default=None),
            )
            out.append(RunAlerts(run_id, ev.transitions, [s for s in ev.states if s.state == "firing"]))
        self._pending_full = window.full
        self._pending_ended = {r: (ended[r], a) for a in out if (r := a.run_id) in ended and r not in cached}
        self._run_ids = list(infos)
        return out

    def mark_read(self, unrecorded: set[str] = frozenset()) -> None:
        """After the cycle's transitions are recorded: the runs it read over every step need no second read
        (except those whose transitions could not be recorded), nor the ended runs it judged."""
        self._keep_ended(unrecorded)
        done = {r: d for r, d in self._pending_full.items() if r not in unrecorded}
        self._pending_full = {}
        if not done:
            return
        store = self._cache.parent
        self._full = {r: d for r, d in {**self._full, **done}.items() if (store / r).is_dir()}
        with contextlib.suppress(
            OSError
        ):  # a read-only store: the next watch reads them again, repeats nothing
            write_json_atomic(self._cache, {"runs": self._full})

    def _keep_ended(self, unrecorded: set[str]) -> None:
        """Cache the states of the ended runs judged this cycle, under the fingerprint their files have now
        that its transitions are recorded (new events of ours; anything else changed: judged again)."""
        store = self._cache.parent
        for run_id, (before, result) in self._pending_ended.items():
            if run_id in unrecorded or before is None:
                continue
            after = _ended_fingerprint(store / run_id) if result.transitions else before
            if after is not None and after[:2] == before[:2]:  # steps and run.json as judged
                self._ended.put(run_id, after, [dataclasses.asdict(s) for s in result.active])
        self._pending_ended = {}
        self._ended.save(self._run_ids)


def _ended(info: _RunInfo) -> bool:
    """run.json says the run is over: its alert states depend on its files only, not on the time."""
    return isinstance(info.status, str) and info.status != "running"


def _ended_fingerprint(run_dir: Path) -> Fingerprint | None:
    """What an ended run's alert states are computed from: its steps, its events and its run.json."""
    steps, events = segments_fingerprint(run_dir, "steps"), segments_fingerprint(run_dir, "events")
    try:
        st = (run_dir / RUN_JSON).stat()
    except OSError:
        return None
    return None if steps is None or events is None else [steps, [st.st_size, st.st_mtime_ns], events]


@functools.cache
def _default_rules() -> RuleSet:
    """The shipped rules, parsed once per process (a sweep or an import seals many runs)."""
    return load_rules(None)


def sealed_state(store: Path, run_id: str) -> tuple[str, list[Any]] | None:
    """(cache name, [version, fingerprint, firing states]) of an ended run under the default rules, for its
    per-run file (analysis.run_seal); None when the watch would record transitions for it (it then judges
    the run itself, recording them) or the run is not over."""
    run_dir = store / run_id
    fp = _ended_fingerprint(run_dir)  # before reading, as a cycle does
    if fp is None or not _ended(_liveness(run_dir)):
        return None
    watcher = Watcher(store, _default_rules())
    try:
        results = watcher.cycle(run_ids=[run_id])
    finally:
        watcher.reader.close()
    if len(results) != 1 or results[0].transitions:
        return None
    return ENDED_CACHE, [watcher.ended_version, fp, [dataclasses.asdict(s) for s in results[0].active]]


def _load_full(path: Path) -> dict[str, str]:
    """run -> digest of the segments a watch read over every step (see FULL_CACHE); {} when absent or damaged."""
    try:
        runs = json.loads(path.read_text()).get("runs")
    except (OSError, ValueError, AttributeError):
        return {}
    return {str(k): v for k, v in runs.items() if isinstance(v, str)} if isinstance(runs, dict) else {}


# ---- recording and notifying ------------------------------------------------------------------------------


def record_events(run_dir: Path, transitions: list[Transition]) -> Path:
    """Append transitions to the run's events as one new segment (unique name: safe beside its writer)."""
    return write_events(run_dir, [(t.step, t.kind, t.severity, t.message, t.payload) for t in transitions])


def transition_line(run_id: str, t: Transition) -> str:
    return f"{run_id} {t.line()}"


def notify(
    store: Path, results: list[RunAlerts], webhook: Webhook | None, out: Callable[[str], Any]
) -> set[str]:
    """Record each run's new transitions, then print them and POST one webhook message per transition (and
    whatever an outage of the endpoint left queued, once its backoff has passed). Returns the runs whose
    transitions could not be recorded."""
    unrecorded: set[str] = set()
    for res in results:
        if not res.transitions:
            continue
        try:
            record_events(store / res.run_id, res.transitions)  # recorded first: a failed POST loses nothing
            recorded = True
        except OSError as err:
            out(f"cannot record alert events of run {res.run_id} (they will be reported again): {err}")
            recorded = False
            unrecorded.add(res.run_id)
        for t in res.transitions:
            line = transition_line(res.run_id, t)
            out(line)
            if webhook and recorded:  # an unrecorded transition comes back next cycle: POST it then
                body = {"text": line, "run_id": res.run_id, "rule": t.rule, "kind": t.kind, "step": t.step,
                        "severity": t.severity, "message": t.message, "payload": t.payload}  # fmt: skip
                webhook.send(body)
    if webhook:
        webhook.deliver()
    return unrecorded


def firing_text(run_id: str, a: AlertState) -> str:
    """`run/rule [severity] since step N`, with the step its condition first held when this cycle saw it."""
    held = f" (condition held from step {a.onset})" if a.onset is not None and a.onset != a.since else ""
    return f"{run_id}/{a.rule} [{a.severity}] since step {a.since}{held}"


def summary_line(results: list[RunAlerts]) -> str:
    firing = [firing_text(r.run_id, a) for r in results for a in r.active]
    return f"{len(results)} runs checked; " + (
        f"firing: {', '.join(firing)}" if firing else "no alert firing"
    )


def watch(
    store: str | Path,
    *,
    once: bool = False,
    webhook: str | None = None,
    rules_path: str | Path | None = None,
    interval_s: float = 30.0,
    out: Callable[[str], Any] = print,
    max_cycles: int | None = None,
) -> int:
    """Watch every run in `store`: each cycle records, prints and POSTs new transitions, then sleeps
    `interval_s`. once: one cycle and a summary line. Returns 1 while a critical alert fires, else 0."""
    store = Path(store)
    if not store.is_dir():
        raise UsageError(f"no run store at {store}: pass --store DIR (a directory holding runs)")
    if interval_s <= 0 or not math.isfinite(interval_s):
        raise UsageError(f"interval must be a positive number of seconds, got {interval_s}")
    watcher = Watcher(store, load_rules(rules_path))
    hook = Webhook(webhook, out) if webhook else None
    cycles, code = 0, 0
    try:
        while True:
            results = watcher.cycle()
            watcher.mark_read(notify(store, results, hook, out))
            code = int(any(a.severity == "critical" for r in results for a in r.active))
            cycles += 1
            if once:
                out(summary_line(results))
            if once or (max_cycles is not None and cycles >= max_cycles):
                return code
            time.sleep(interval_s)
    except KeyboardInterrupt:
        return code
    finally:
        if hook:
            hook.close()
        watcher.reader.close()
