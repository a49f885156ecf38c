"""Property-based fuzzing of every file or value a user hands entropyscope (issue 17): config files, `--set`
values, control files (parsed, polled and applied by the trainer), alert rule files and import sources
(JSONL, CSV, verl console lines, TRL trainer_state.json).

For each target, 1,000 generated inputs (a mix of near-valid documents, with known keys and hostile values,
and raw garbage): the input is accepted, or refused with the one error type the CLI turns into a one-line
message, and that message names what is wrong (the key, rule, field, file or line). Any other exception, a
multi-line message or a message naming nothing fails the test. Each test prints its tally.
"""

import json
import math
import os
import types
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analysis.alerts import RULE_KINDS, Rule, load_rules, parse_rules
from analysis.control import LIVE_KEYS, REJECTED, ControlError, ControlWatcher, parse_control
from analysis.errors import UsageError
from analysis.importers import importer
from analysis.importers.importer import plan
from analysis.importers.tabular import STEP_KEYS
from trainer.config import TrainConfig, load_config

CASES = 1000  # per target; about 3 minutes for all on two busy cores, so each is marked slow (CI runs them)
# CI sees the same 1,000 cases every run; FUZZ_EXPLORE=1 draws new ones
FUZZ = settings(max_examples=CASES, deadline=None, database=None, derandomize=not os.environ.get("FUZZ_EXPLORE"),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip

# ---- values -----------------------------------------------------------------------------------------------

WEIRD_TEXT = st.sampled_from(["", " ", "\n", "\x00", "nan", "inf", "-1", "1e400", "0x1F", "~", "null", "{", "]",
                              "'", '"', "\\", "<script>", "../x", "é", "\u2028", "1_000", "True", "[1, 2]"])  # fmt: skip
TEXT = st.one_of(WEIRD_TEXT, st.text(max_size=24))
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), TEXT,
)  # fmt: skip
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)
CONFIG_KEYS = tuple(TrainConfig.model_fields)
RULE_FIELDS = sorted({f for model in get_args(get_args(Rule)[0]) for f in model.model_fields})


def keys_from(known: tuple[str, ...] | list[str]) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(list(known)), TEXT)


def one_line(message: str) -> bool:
    return bool(message.strip()) and "\n" not in message and "\r" not in message


class Tally:
    """Counts of one target's cases: accepted, refused (each with a reason naming what is wrong)."""

    def __init__(self, target: str) -> None:
        self.target, self.counts = target, Counter()

    def run(self, call: Callable[[], Any], names: Callable[[str], bool], errors: tuple[type, ...]) -> None:
        self.counts["cases"] += 1
        try:
            call()
        except errors as err:
            message = str(err)
            assert one_line(message), f"{self.target}: message on several lines: {message!r}"
            assert names(message), f"{self.target}: message names no field: {message!r}"
            self.counts["refused"] += 1
            return
        self.counts["accepted"] += 1

    def report(self) -> None:
        c = self.counts
        print(f"\n{self.target}: {c['cases']} cases, {c['accepted']} accepted, {c['refused']} refused "
              "(each naming its field), 0 tracebacks")  # fmt: skip
        assert c["cases"] >= CASES


def mentions(message: str, names: list[str]) -> bool:
    """The message quotes one of `names` (as repr or plain text)."""
    return any(repr(n) in message or (n.strip() and n in message) for n in names)


# ---- config files and --set ---------------------------------------------------------------------------------


def yaml_text(data: Any) -> str:
    try:
        return yaml.safe_dump(data, allow_unicode=True)
    except yaml.YAMLError:
        return str(data)


CONFIG_FILES = st.one_of(
    st.dictionaries(keys_from(CONFIG_KEYS), VALUES, max_size=6).map(yaml_text),
    st.dictionaries(st.sampled_from(CONFIG_KEYS), SCALARS, min_size=1, max_size=4).map(yaml_text),
    st.text(max_size=200),
    st.lists(st.sampled_from(["a: [", "key: value", "- 1", "  x:", "\t", "&a [*a]", "!!python/object:os.system"]),
             max_size=5).map("\n".join),
)  # fmt: skip


@pytest.mark.slow
def test_fuzz_config_files(tmp_path: Path) -> None:
    tally, path = Tally("config files"), tmp_path / "config.yaml"

    @FUZZ
    @given(CONFIG_FILES)
    def check(text: str) -> None:
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError:
            data = None
        names = [str(k) for k in data] if isinstance(data, dict) else []
        tally.run(lambda: load_config(path), lambda m: mentions(m, [*names, str(path)]), (UsageError,))

    check()
    tally.report()


SET_PAIRS = st.lists(
    st.one_of(
        st.tuples(keys_from(CONFIG_KEYS), TEXT).map("=".join),
        st.tuples(st.sampled_from(CONFIG_KEYS), SCALARS.map(lambda v: json.dumps(v) if not isinstance(v, str) else v))
        .map("=".join),
        TEXT,
    ),
    min_size=1,
    max_size=4,
)  # fmt: skip


@pytest.mark.slow
def test_fuzz_set_values() -> None:
    tally = Tally("--set values")

    @FUZZ
    @given(SET_PAIRS)
    def check(pairs: list[str]) -> None:
        names = [p.partition("=")[0].strip() for p in pairs] + pairs
        tally.run(lambda: load_config(None, pairs), lambda m: mentions(m, names), (UsageError,))

    check()
    tally.report()


# ---- control files -------------------------------------------------------------------------------------------

CONTROL_DOCS = st.one_of(
    st.fixed_dictionaries(
        {"version": st.one_of(st.integers(-2, 10**20), SCALARS),
         "settings": st.one_of(st.dictionaries(keys_from(LIVE_KEYS), VALUES, max_size=4), VALUES)},
        optional={"written_at": SCALARS, "extra": VALUES},
    ).map(lambda d: json.dumps(d, allow_nan=True)),
    st.fixed_dictionaries(
        {"version": st.integers(1, 5), "settings": st.dictionaries(st.sampled_from(LIVE_KEYS), SCALARS, max_size=3)}
    ).map(json.dumps),
    VALUES.map(lambda v: json.dumps(v, allow_nan=True)),
    st.text(max_size=120),
)  # fmt: skip
CONTROL_FIELDS = ["version", "settings", "written_at", "JSON", "control file", *LIVE_KEYS]


def control_names(text: str) -> list[str]:
    try:
        doc = json.loads(text)
    except ValueError:
        return CONTROL_FIELDS
    keys = list(doc) if isinstance(doc, dict) else []
    if isinstance(doc, dict) and isinstance(doc.get("settings"), dict):
        keys += list(doc["settings"])
    return CONTROL_FIELDS + [str(k) for k in keys]


@pytest.mark.slow
def test_fuzz_control_files() -> None:
    tally = Tally("control files")

    @FUZZ
    @given(CONTROL_DOCS, st.integers(0, 3))
    def check(text: str, last_version: int) -> None:
        tally.run(lambda: parse_control(text, last_version), lambda m: mentions(m, control_names(text)),
                  (ControlError,))  # fmt: skip

    check()
    tally.report()


@pytest.mark.slow
def test_fuzz_control_files_through_the_trainer(tmp_path: Path) -> None:
    """The trainer's path: the watcher polls the bytes, the step applies or records a rejection, never raises;
    the live config stays valid and training would go on."""
    import torch

    from trainer.controllers import build_controller
    from trainer.loop import poll_control

    cfg = TrainConfig(controller="repo_r")
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    p = types.SimpleNamespace(cfg=cfg, controller=build_controller(cfg), optimizer=optimizer, overrides={})
    events: list[tuple] = []
    writer = types.SimpleNamespace(log_event=lambda step, kind, message, **kw: events.append((kind, message)))
    watcher = ControlWatcher(tmp_path)
    counts = Counter()

    @FUZZ
    @given(st.one_of(CONTROL_DOCS.map(str.encode), st.binary(max_size=80)))
    def check(data: bytes) -> None:
        (tmp_path / "control.json").write_bytes(data)
        before = len(events)
        poll_control(writer, p, watcher, step=counts["cases"])
        counts["cases"] += 1
        new = events[before:]
        assert len(new) <= 1
        for kind, message in new:
            counts[kind] += 1
            assert one_line(message), message
        TrainConfig(**p.cfg.model_dump())  # still a valid config
        assert all(math.isfinite(g["lr"]) for g in optimizer.param_groups)

    check()
    print(f"\ncontrol files through the trainer: {counts['cases']} cases, {counts['control_applied']} applied, "
          f"{counts[REJECTED]} rejected with a reason, 0 exceptions")  # fmt: skip
    assert counts["cases"] >= CASES and counts[REJECTED] > 0


# ---- alert rule files ------------------------------------------------------------------------------------------

RULES = st.fixed_dictionaries(
    {"kind": st.one_of(st.sampled_from(RULE_KINDS), SCALARS)},
    optional={"name": TEXT, **{f: st.one_of(SCALARS, VALUES) for f in RULE_FIELDS[:6]}},
).flatmap(
    lambda rule: st.dictionaries(st.one_of(st.sampled_from(RULE_FIELDS), TEXT), SCALARS, max_size=3).map(
        lambda extra: {**extra, **rule}
    )
)
RULE_FILES = st.one_of(
    st.fixed_dictionaries({"rules": st.one_of(st.lists(st.one_of(RULES, VALUES), max_size=3), VALUES)},
                          optional={"on_critical": SCALARS, "extra": VALUES}),
    VALUES,
)  # fmt: skip
RULE_WORDS = ["rules", "on_critical", "kind", "name", "expected a mapping", "not valid YAML", *RULE_FIELDS]


def rule_names(data: Any) -> list[str]:
    names = list(RULE_WORDS)
    if isinstance(data, dict):
        names += [str(k) for k in data]
        rules = data.get("rules") if isinstance(data.get("rules"), list) else []
        names += [str(k) for rule in rules if isinstance(rule, dict) for k in rule]
    return names


@pytest.mark.slow
def test_fuzz_alert_rule_files(tmp_path: Path) -> None:
    tally, path = Tally("alert rule files"), tmp_path / "rules.yaml"

    @FUZZ
    @given(st.one_of(RULE_FILES.map(yaml_text), st.text(max_size=150)))
    def check(text: str) -> None:
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError:
            data = None
        tally.run(lambda: load_rules(path), lambda m: mentions(m, rule_names(data)), (UsageError,))

    check()
    tally.report()
    # The parsed form too (a caller holding YAML already): same contract.
    parsed = Tally("alert rules (parsed)")

    @FUZZ
    @given(RULE_FILES)
    def check_parsed(data: Any) -> None:
        parsed.run(lambda: parse_rules(data), lambda m: mentions(m, rule_names(data)), (UsageError,))

    check_parsed()
    parsed.report()


# ---- import sources ---------------------------------------------------------------------------------------------

METRICS = ["entropy", "actor/entropy", "reward", "loss", "eval_loss", "critic/score/mean"]
STEPS = st.one_of(st.integers(-5, 10**6), st.integers(), SCALARS)
JSONL = st.lists(
    st.one_of(
        st.fixed_dictionaries(
            {"step": STEPS, "data": st.dictionaries(keys_from(METRICS), VALUES, max_size=3)}
        ),
        st.dictionaries(st.one_of(st.sampled_from([*STEP_KEYS, *METRICS]), TEXT), VALUES, max_size=4),
        VALUES,
    ).map(lambda obj: json.dumps(obj, allow_nan=True))
    | TEXT,
    max_size=5,
).map("\n".join)
CSV = st.lists(st.lists(st.one_of(SCALARS.map(str), st.sampled_from([*STEP_KEYS, *METRICS])), max_size=4)
               .map(",".join), max_size=5).map("\n".join)  # fmt: skip
CONSOLE = st.lists(
    st.one_of(
        st.tuples(STEPS.map(str), st.lists(st.tuples(keys_from(METRICS), SCALARS.map(str)).map(":".join), max_size=3))
        .map(lambda t: f"step:{t[0]} - " + " - ".join(t[1])),
        TEXT,
    ),
    max_size=5,
).map("\n".join)  # fmt: skip
TRL = st.one_of(
    st.fixed_dictionaries({"log_history": st.lists(st.dictionaries(st.one_of(st.sampled_from(["step", "epoch",
        *METRICS]), TEXT), VALUES, max_size=4), max_size=4)}),
    VALUES,
).map(lambda v: json.dumps(v, allow_nan=True))  # fmt: skip
SOURCES = {"jsonl": ("log.jsonl", JSONL), "csv": ("log.csv", CSV), "verl": ("console.log", CONSOLE),
           "trl": ("trainer_state.json", TRL)}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("fmt", list(SOURCES))
def test_fuzz_import_sources(fmt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name, texts = SOURCES[fmt]
    mapper = importer.KeyMapper()  # loading the shipped name table is most of a tiny import's time
    monkeypatch.setattr(importer, "KeyMapper", lambda map_path=None: mapper)
    tally, path, store = Tally(f"import sources ({fmt})"), tmp_path / name, tmp_path / "store"

    @FUZZ
    @given(st.one_of(texts, st.text(max_size=100)), st.booleans())
    def check(text: str, final: bool) -> None:
        path.write_bytes(text.encode("utf-8", errors="surrogatepass"))
        tally.run(lambda: plan(str(path), store=store, fmt=fmt, final=final), lambda m: str(path) in m,
                  (UsageError,))  # fmt: skip

    check()
    tally.report()
    assert not store.exists()  # planning reads and maps; nothing is written


# ---- what the fuzzing found (kept as plain cases, fast) ------------------------------------------------------


def test_inputs_the_fuzzing_found_are_refused_on_one_line(tmp_path: Path) -> None:
    cases: list[tuple[Callable[[], Any], str]] = [
        (lambda: load_config(None, ["0\r0=1"]), "unknown config key '0\\r0'"),  # was two lines
        (lambda: parse_control('{"version": 1, "settings": {"\\r": null}}'), "unknown key '\\r'"),
        (lambda: parse_control('{"version": 1, "settings": true}'), "key 'settings': input should be"),
        (lambda: parse_rules({"rules": True}), "rules: expected a list of rules"),  # was a TypeError
    ]
    for text, fmt in [("step:9223372036854775808 - entropy:0", "verl"),  # was an OverflowError
                      ('{"step": 1e300, "entropy": 0}', "jsonl"), ('{"step": "²", "x": 1}', "jsonl"),
                      ("step,x\n" + "9" * 5000 + ",1\n", "csv")]:  # fmt: skip
        path = tmp_path / f"log-{len(cases)}.txt"
        path.write_text(text, encoding="utf-8")
        cases.append(
            (lambda path=path, fmt=fmt: plan(str(path), store=tmp_path / "store", fmt=fmt), f"{path}:")
        )
    for call, expected in cases:
        with pytest.raises((UsageError, ControlError)) as err:
            call()
        assert one_line(str(err.value)) and expected in str(err.value), str(err.value)
