"""Queries the dashboard needs beyond StoreReader's: change fingerprints, x axes, ΔH pairs, forking tokens,
latest values, the control history and settings in force, alert episodes.

Torch-free and Streamlit-free, so they are tested like the rest of analysis/. Every function takes a
StoreReader (which the caller opens for one load and closes) and returns a fresh DataFrame or value.
SQL takes `?` parameters; run ids only ever select folders through StoreReader.segment_files.
"""

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.alerts import FIRED, RESOLVED
from analysis.control import APPLIED, LIVE_KEYS, REJECTED, control_path
from analysis.run_cache import RunCache, segments_fingerprint
from analysis.run_ids import inside_store
from analysis.schema import ENTROPY_DELTA_BATCH, ENTROPY_DELTA_PRED, RESPONSE_LEN_MEAN
from analysis.store_reader import StoreReader, read_run_json
from analysis.store_writer import RUN_JSON

TOKENIZER_FILE = "tokenizer.json"


def fingerprint(store: str | Path, run_ids: Sequence[str] | None, tables: Sequence[str]) -> str:
    """A cheap token that changes when a run's segments of `tables` (or its run.json) change.

    Cached dashboard loaders take it as an argument, so a finished run is read once and a live run is
    re-read as soon as the trainer writes a new segment, without a time-based guess.
    """
    # Strings, not Paths: on a store of a thousand runs this joins thousands of paths per call.
    root = os.fspath(store)
    if run_ids is None:
        run_ids = sorted(d.name for d in _scandir(root) if d.is_dir() and not d.name.startswith("."))
    parts = []
    for run_id in run_ids:
        run_dir = os.path.join(root, run_id)
        count, newest, size = 0, 0, 0
        for table in tables:
            for entry in _scandir(os.path.join(run_dir, table)):
                if entry.name.endswith(".parquet") and not entry.name.startswith("."):
                    st = _stat(entry)
                    count, newest, size = count + 1, max(newest, st[0]), size + st[1]
        meta = _stat_path(os.path.join(run_dir, RUN_JSON))
        parts.append(f"{run_id}:{count}:{newest}:{size}:{meta}")
    return "|".join(parts)


def _scandir(path: str) -> list[os.DirEntry]:
    try:
        with os.scandir(path) as it:
            return list(it)
    except OSError:
        return []


def _stat(entry: os.DirEntry) -> tuple[int, int]:
    try:
        st = entry.stat()
    except OSError:  # removed since the listing (compaction)
        return 0, 0
    return st.st_mtime_ns, st.st_size


def _stat_path(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0


def run_starts(reader: StoreReader, run_ids: Sequence[str]) -> dict[str, float]:
    """First logged wall time of each run (unix seconds), the origin of the dashboard's wall-time axis."""
    sql = "SELECT run_id, min(wall_time) AS t0 FROM seg_steps GROUP BY run_id"
    df = reader.query(sql, [], ["steps"], list(run_ids))
    return {str(r): float(t) for r, t in zip(df["run_id"], df["t0"], strict=True)}


def batch_size(config: dict[str, Any]) -> int | None:
    """Sequences per step (prompts_per_step × group_size), or None when the config does not say."""
    try:
        n = int(config["prompts_per_step"]) * int(config["group_size"])
    except (KeyError, TypeError, ValueError):
        return None
    return n if n > 0 else None


_TOKENS_SEEN_SQL = """
SELECT run_id, step, sum("value") OVER (PARTITION BY run_id ORDER BY step) AS len_cum
FROM steps WHERE "key" = ? AND isfinite("value")
ORDER BY run_id, step
"""


def tokens_seen(reader: StoreReader, run_ids: Sequence[str]) -> tuple[pd.DataFrame, list[str]]:
    """Cumulative response tokens sampled up to each step: Σ response/len_mean × batch size.

    Returns (frame with run_id, step, tokens_seen; run ids for which it cannot be computed because the
    run logged no response/len_mean or its config has no batch size).
    """
    df = reader.query(_TOKENS_SEEN_SQL, [RESPONSE_LEN_MEAN], ["steps"], list(run_ids))
    batches = {r: batch_size(_config_at(reader.store / r)) for r in run_ids}
    df["tokens_seen"] = df["len_cum"] * df["run_id"].map(batches).astype("float64")
    df = df.dropna(subset=["tokens_seen"])
    missing = [r for r in run_ids if r not in set(df["run_id"])]
    return df[["run_id", "step", "tokens_seen"]].reset_index(drop=True), missing


# The prediction logged at step t is for the update made at t, which shows in the next step's rollout:
_DELTA_SQL = """
SELECT step,
    max("value") FILTER (WHERE "key" = ?) AS predicted,
    max("value") FILTER (WHERE "key" = ?) AS measured
FROM steps WHERE "key" IN (?, ?) GROUP BY step
HAVING isfinite(predicted) AND isfinite(measured)
ORDER BY step
"""


def entropy_delta_pairs(reader: StoreReader, run_id: str) -> pd.DataFrame:
    """Per measured step: predicted batch ΔH (entropy/delta_pred) and measured (entropy/delta_batch).

    Empty for runs that never measured it (delta_every=0, or older than the keys).
    """
    params = [ENTROPY_DELTA_PRED, ENTROPY_DELTA_BATCH, ENTROPY_DELTA_PRED, ENTROPY_DELTA_BATCH]
    return reader.query(_DELTA_SQL, params, ["steps"], [run_id])


_TOP_TOKENS_SQL = """
SELECT t.step, t.sample_id, t.position, t.token_id, t.entropy, t.logp, t.advantage, t.clip_side,
    s.prompt_text, s.response_token_ids, s.reward
FROM tokens t LEFT JOIN samples s USING (run_id, step, sample_id)
WHERE isfinite(t.entropy)
ORDER BY t.entropy DESC, t.step, t.sample_id, t.position
LIMIT ?
"""


def top_entropy_tokens(reader: StoreReader, run_id: str, limit: int = 50) -> pd.DataFrame:
    """The highest-entropy ("forking") token records of a run across all steps, with their sample."""
    return reader.query(_TOP_TOKENS_SQL, [int(limit)], ["tokens", "samples"], [run_id])


_ALERTS_SQL = """
SELECT run_id, count(*) FILTER (WHERE kind = 'alert_fired') AS active_alerts FROM (
    SELECT run_id, kind FROM events WHERE kind IN ('alert_fired', 'alert_resolved')
    QUALIFY row_number() OVER (
        PARTITION BY run_id, coalesce(json_extract_string(payload, '$.rule'), message)
        ORDER BY wall_time DESC) = 1
) GROUP BY run_id
"""


ALERTS_CACHE = "active_alerts.json"
_ALERTS_VERSION = hashlib.sha1(_ALERTS_SQL.encode()).hexdigest()


def active_alerts(reader: StoreReader) -> dict[str, int]:
    """Alerts per run whose latest event is `alert_fired` (per payload rule, else per message); a run whose
    events segments did not change since the last call is not read again (analysis.run_cache)."""
    run_ids = [d.name for d in reader.run_dirs()]
    cache = RunCache(reader.store, ALERTS_CACHE, _ALERTS_VERSION)
    fps = {r: segments_fingerprint(reader.store / r, "events") for r in run_ids}
    counts = {r: cache.get(r, fps[r]) for r in run_ids}
    stale = [r for r, n in counts.items() if n is None]
    for r, n in alert_counts(reader, stale).items():
        counts[r] = n
        cache.put(r, fps[r], n)
    cache.save(run_ids)
    return {r: n for r, n in counts.items() if n}


def alert_counts(reader: StoreReader, run_ids: list[str]) -> dict[str, int]:
    """active_alerts of each of `run_ids`, read now from its events."""
    if not run_ids:
        return {}
    df = reader.query(_ALERTS_SQL, [], ["events"], run_ids)
    fresh = {str(r): int(n) for r, n in zip(df["run_id"], df["active_alerts"], strict=True)}
    return {r: fresh.get(r, 0) for r in run_ids}


def sealed_alert_count(reader: StoreReader, run_id: str) -> tuple[str, list[Any]]:
    """(cache name, [version, fingerprint, count]) of a run, for its per-run file (analysis.run_seal)."""
    fp = segments_fingerprint(reader.store / run_id, "events")
    return ALERTS_CACHE, [_ALERTS_VERSION, fp, alert_counts(reader, [run_id])[run_id]]


def find_tokenizer(store: str | Path, run_id: str) -> Path | None:
    """tokenizer.json of the run's newest checkpoint, of its model directory, or of a checkpoint of
    another run in the store with the same model; None when there is none."""
    root = Path(store)
    model = _config_at(root / run_id).get("model")
    candidates = [root / run_id]
    candidates += (  # other runs of the store only: a run linked out of it is none of its runs
        [d for d in sorted(root.iterdir()) if d.is_dir() and d.name != run_id and inside_store(root, d)]
        if root.is_dir()
        else []
    )
    for run_dir in candidates:
        if run_dir.name != run_id and _config_at(run_dir).get("model") != model:
            continue
        found = _newest_checkpoint_tokenizer(run_dir)
        if found:
            return found
    if isinstance(model, str) and (Path(model) / TOKENIZER_FILE).is_file():
        return Path(model) / TOKENIZER_FILE
    return None


def _config_at(run_dir: Path) -> dict[str, Any]:
    config = (read_run_json(run_dir) or {}).get("config")
    return config if isinstance(config, dict) else {}


def _newest_checkpoint_tokenizer(run_dir: Path) -> Path | None:
    def step_of(p: Path) -> int:
        tail = p.parent.name.removeprefix("step_")
        return int(tail) if tail.isdigit() else -1

    found = sorted((run_dir / "checkpoints").glob(f"step_*/{TOKENIZER_FILE}"), key=step_of)
    return found[-1] if found else None


def decode_tokens(store: str | Path, run_id: str, token_ids: Sequence[int]) -> tuple[dict[int, str], bool]:
    """({id: text} for the given ids, whether a tokenizer was found); without one a token reads ⟨id⟩."""
    ids = sorted({int(i) for i in token_ids})
    path = find_tokenizer(store, run_id)
    if path is not None:
        try:
            from tokenizers import Tokenizer  # Rust library, no torch; imported only when needed

            tok = Tokenizer.from_file(str(path))
            return {i: tok.decode([i], skip_special_tokens=False) for i in ids}, True
        except Exception:  # a damaged or foreign tokenizer file must not break the page
            pass
    return {i: f"⟨{i}⟩" for i in ids}, False


_LATEST_SQL = """
SELECT "key", max(step) AS step, arg_max("value", step) AS "value" FROM steps
WHERE list_contains(?::VARCHAR[], "key") AND isfinite("value") GROUP BY "key"
"""


def latest_values(reader: StoreReader, run_id: str, keys: Sequence[str]) -> dict[str, tuple[int, float]]:
    """key -> (step, value) of the last finite value logged of each key (keys never logged are left out)."""
    df = reader.query(_LATEST_SQL, [list(keys)], ["steps"], [run_id])
    return {str(k): (int(s), float(v)) for k, s, v in zip(df["key"], df["step"], df["value"], strict=True)}


def _payload(text: object) -> dict[str, Any]:
    try:
        payload = json.loads(text) if isinstance(text, str) else {}
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


def _list(value: object) -> list:
    return value if isinstance(value, list) else []


def control_history(reader: StoreReader, run_id: str) -> pd.DataFrame:
    """The run's control acknowledgements, oldest first: step, wall_time, kind (control_applied or
    control_rejected), version (None when the trainer could not read one), includes (the versions an applied
    acknowledgement covers), old and new (dicts, applied only), reason (rejected only), message."""
    ev = reader.events(run_id, kinds=[APPLIED, REJECTED])
    rows = []
    for step, wall, kind, message, text in zip(
        ev["step"], ev["wall_time"], ev["kind"], ev["message"], ev["payload"], strict=True
    ):
        p = _payload(text)
        version = p.get("version")
        rows.append({
            "step": int(step), "wall_time": float(wall), "kind": kind,
            "version": version if isinstance(version, int) and not isinstance(version, bool) else None,
            "includes": [v for v in _list(p.get("includes")) if isinstance(v, int) and not isinstance(v, bool)],
            "old": p.get("old") if isinstance(p.get("old"), dict) else {},
            "new": p.get("new") if isinstance(p.get("new"), dict) else {},
            "reason": p.get("reason") or "", "message": message,
        })  # fmt: skip
    columns = ["step", "wall_time", "kind", "version", "includes", "old", "new", "reason", "message"]
    df = pd.DataFrame(rows, columns=columns)
    # object, not float: versions are ints, and an unreadable one stays None rather than NaN
    df["version"] = pd.Series([r["version"] for r in rows], index=df.index, dtype=object)
    return df


def settings_in_force(config: dict[str, Any], history: pd.DataFrame) -> dict[str, Any]:
    """The live-tunable keys as the trainer holds them now: the run's config, then each applied change."""
    current = {key: config.get(key) for key in LIVE_KEYS}
    for kind, new in zip(history["kind"], history["new"], strict=True):
        if kind == APPLIED:
            current.update({k: v for k, v in new.items() if k in current})
    return current


def control_request(store: str | Path, run_id: str) -> dict[str, Any] | None:
    """The run's control.json as written (version, settings, written_at); None when absent or unreadable."""
    try:
        doc = json.loads(control_path(Path(store) / run_id).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("version"), int) else None


EPISODE_COLUMNS = ("run_id", "rule", "rule_kind", "severity", "state", "held_from_step", "fired_step",
                   "resolved_step", "fired_at", "resolved_at", "message")  # fmt: skip


def alert_episodes(reader: StoreReader) -> pd.DataFrame:
    """One row per alert episode of every run, from its alert_fired / alert_resolved events.

    state is `active` until the rule's next `alert_resolved`; a resolution whose firing predates the
    recorded events (a watch that first saw the run mid-episode) gives a resolved episode with no fired
    step. held_from_step: the step the rule's condition started to hold (its firing's `since`; the fired step
    when not recorded). message is the latest event's. Ordered active first, then newest first.
    """
    ev = reader.events(kinds=[FIRED, RESOLVED]).sort_values(["wall_time", "step"], kind="stable")
    open_: dict[tuple[str, str], dict[str, Any]] = {}
    done: list[dict[str, Any]] = []
    for run_id, step, wall, kind, severity, message, text in zip(
        ev["run_id"], ev["step"], ev["wall_time"], ev["kind"], ev["severity"], ev["message"], ev["payload"],
        strict=True,
    ):  # fmt: skip
        p = _payload(text)
        rule = str(p.get("rule") or message)  # the rule names an episode; an unnamed alert, its message
        key = (str(run_id), rule)
        if kind == FIRED:
            if key in open_:  # fired twice without a resolution in between: the first episode stays open
                continue
            since = p.get("since")
            held = since if isinstance(since, int) and not isinstance(since, bool) else int(step)
            open_[key] = {"run_id": key[0], "rule": rule, "rule_kind": p.get("rule_kind"), "severity": severity,
                          "state": "active", "held_from_step": held, "fired_step": int(step),
                          "resolved_step": None, "fired_at": float(wall), "resolved_at": None,
                          "message": message}  # fmt: skip
            continue
        episode = open_.pop(key, None) or {
            "run_id": key[0], "rule": rule, "rule_kind": p.get("rule_kind"), "severity": severity,
            "held_from_step": None, "fired_step": None, "fired_at": None,
        }  # fmt: skip
        done.append(episode | {"state": "resolved", "resolved_step": int(step), "resolved_at": float(wall),
                               "message": message})  # fmt: skip
    df = pd.DataFrame([*open_.values(), *done], columns=list(EPISODE_COLUMNS))
    df = df.astype({"held_from_step": "Int64", "fired_step": "Int64", "resolved_step": "Int64",
                    "fired_at": "float64", "resolved_at": "float64"})  # fmt: skip
    order = df.assign(_active=df["state"] == "active", _t=df["resolved_at"].fillna(df["fired_at"]))
    return df.loc[order.sort_values(["_active", "_t"], ascending=False).index].reset_index(drop=True)
