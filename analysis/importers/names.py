"""Other trainers' metric names -> ours, from analysis/import_names.yaml plus an optional user file.

The `generic` section applies to every source; a trainer's section only to a source known to be that
trainer (by its format, or by holding one of the trainer's signature names). A logger's `train/` prefix is
dropped before the lookup; `eval/` keys keep their own namespace (the rest of the name is mapped, so
`eval/reward` becomes `eval/reward/mean`). Unmapped names are kept as they are.
"""

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from analysis.errors import UsageError

NAMES_FILE = Path(__file__).resolve().parents[1] / "import_names.yaml"
TRAIN_PREFIX = "train/"
EVAL_PREFIX = "eval/"
GENERIC = "generic"
USER_SECTION = "custom"
SIGNATURES = "signatures"
# Trainers that log under another's names: ms-swift and a plain HF Trainer use the HF Trainer's (TRL's).
TABLE_OF = {"ms-swift": "trl", "transformers": "trl"}


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


def load_names(path: str | Path, source: str | None = None) -> Any:
    try:
        return yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read name map {path}: {str(err).splitlines()[0]}") from None


class KeyMapper:
    """The shipped and the user's name tables; `table(trainer)` is what one source's names go through."""

    def __init__(self, user_map: str | Path | None = None) -> None:
        shipped = dict(load_names(NAMES_FILE))
        self.signatures: dict[str, set[str]] = {t: set(n) for t, n in shipped.pop(SIGNATURES).items()}
        self.sections = parse_names(shipped, "import_names.yaml")
        if user_map is not None:
            for trainer, names in parse_names(load_names(user_map), str(user_map)).items():
                self.sections.setdefault(trainer, {}).update(names)  # the user's word wins

    def table(self, trainer: str | None) -> dict[str, str]:
        """Generic names, then the trainer's own, then the user's flat map (each over the one before)."""
        own = self.sections.get(TABLE_OF.get(trainer or "", trainer or ""), {}) if trainer else {}
        return {**self.sections.get(GENERIC, {}), **own, **self.sections.get(USER_SECTION, {})}

    def trainer(self, raw_keys: Iterable[str]) -> str | None:
        """The trainer whose signature names the keys hold most of; None on a tie or none at all."""
        found = {k.removeprefix(TRAIN_PREFIX).removeprefix(EVAL_PREFIX) for k in raw_keys}
        counts = sorted(((len(found & names), t) for t, names in self.signatures.items()), reverse=True)
        if not counts or counts[0][0] == 0 or (len(counts) > 1 and counts[1][0] == counts[0][0]):
            return None
        return counts[0][1]


def map_key(table: dict[str, str], raw: str) -> str:
    """Our name for one raw key under `table`."""
    key = raw.removeprefix(TRAIN_PREFIX)
    if key.startswith(EVAL_PREFIX):
        rest = key.removeprefix(EVAL_PREFIX)
        return EVAL_PREFIX + table.get(rest, rest)
    return table.get(key, key)
