"""Other trainers' metric names -> ours, from analysis/import_names.yaml plus an optional user file.

A logger's `train/` prefix is dropped before the lookup; `eval/` keys keep their own namespace (the rest of
the name is mapped, so `eval/reward` becomes `eval/reward/mean`). Unmapped names are kept as they are.
"""

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from analysis.errors import UsageError

NAMES_FILE = Path(__file__).resolve().parents[1] / "import_names.yaml"
TRAIN_PREFIX = "train/"
EVAL_PREFIX = "eval/"
USER_SECTION = "custom"


def parse_names(data: Any, source: str) -> dict[str, dict[str, str]]:
    """Sections {trainer: {their_name: our_name}}; a flat map becomes the section `custom`."""
    if not isinstance(data, dict):
        raise UsageError(f"{source}: expected a mapping of trainer sections or of their_name: our_name")
    flat = {k: v for k, v in data.items() if not isinstance(v, dict)}
    sections = {str(k): v for k, v in data.items() if isinstance(v, dict)}
    if flat:
        sections[USER_SECTION] = {**sections.get(USER_SECTION, {}), **flat}
    for trainer, table in sections.items():
        for theirs, ours in table.items():
            if not isinstance(ours, str) or not ours or not isinstance(theirs, str):
                raise UsageError(f"{source}: {trainer}: {theirs!r} must map to a metric name, got {ours!r}")
    return sections


def load_names(path: str | Path, source: str | None = None) -> dict[str, dict[str, str]]:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read name map {path}: {str(err).splitlines()[0]}") from None
    return parse_names(data, source or str(path))


class KeyMapper:
    """Maps one raw key at a time (cached); remembers which trainer's names it has met."""

    def __init__(self, user_map: str | Path | None = None) -> None:
        self.sections = load_names(NAMES_FILE, "import_names.yaml")
        self.table: dict[str, str] = {}
        for trainer, names in self.sections.items():
            for theirs, ours in names.items():
                if self.table.setdefault(theirs, ours) != ours:
                    raise ValueError(f"import_names.yaml: {theirs!r} maps to two names ({trainer})")
        if user_map is not None:
            user = load_names(user_map)
            for trainer, names in user.items():
                self.sections.setdefault(trainer, {}).update(names)
                self.table.update(names)  # the user's word wins over the shipped table

    def __call__(self, raw: str) -> str:
        key = raw.removeprefix(TRAIN_PREFIX)
        if key.startswith(EVAL_PREFIX):
            rest = key.removeprefix(EVAL_PREFIX)
            return EVAL_PREFIX + self.table.get(rest, rest)
        return self.table.get(key, key)

    def trainer(self, raw_keys: Iterable[str]) -> str | None:
        """The trainer whose names the keys hold most of; None on a tie or none at all."""
        found = {k.removeprefix(TRAIN_PREFIX).removeprefix(EVAL_PREFIX) for k in raw_keys}
        counts = sorted(
            ((len(found & names.keys()), t) for t, names in self.sections.items() if t != USER_SECTION),
            reverse=True,
        )
        if not counts or counts[0][0] == 0 or (len(counts) > 1 and counts[1][0] == counts[0][0]):
            return None
        return counts[0][1]
