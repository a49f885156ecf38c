"""Run ids name folders inside a store, never paths out of it: the one check that every command, reader,
writer and dashboard page applies before a run id touches the file system.

A run id is refused when it could step out of the store or break a one-line message (a separator, a leading
'.', so '..' too, a NUL, newline or other control character), and a run folder is refused when it, or a
table folder or file directly in it, is a symbolic link that resolves outside the store.
"""

import os
import unicodedata
from pathlib import Path

from analysis.errors import UsageError

MAX_LEN = 200  # bytes of UTF-8: below every file system's 255-byte name limit, with room for temp suffixes
RULE = f"a run id is one folder name: no '/' or '\\', no control characters, not starting with '.', at most {MAX_LEN} bytes"


def run_id_problem(run_id: object) -> str | None:
    """Why `run_id` cannot name a run folder, or None when it can."""
    if not isinstance(run_id, str) or not run_id:
        return "it is empty"
    if "/" in run_id or "\\" in run_id:
        return "it contains a path separator"
    if run_id.startswith("."):
        return "it starts with '.'"
    if any(unicodedata.category(c) == "Cc" for c in run_id):
        return "it contains a control character (NUL, newline, ...)"
    if any(unicodedata.category(c) == "Cs" for c in run_id):
        return "it is not valid UTF-8"
    if len(run_id.encode("utf-8")) > MAX_LEN:
        return f"it is longer than {MAX_LEN} bytes"
    return None


def check_run_id(run_id: str) -> str:
    """`run_id` itself when it can name a run folder; UsageError saying why not otherwise."""
    problem = run_id_problem(run_id)
    if problem:
        raise UsageError(f"invalid run id {run_id!r}: {problem} ({RULE})")
    return run_id


def escapes(store: str | Path, path: str | Path) -> Path | None:
    """Where `path` really leads when that is outside `store` (symbolic links followed), else None."""
    try:
        root, real = Path(os.path.realpath(store)), Path(os.path.realpath(path))
        if real.is_symlink():  # still a link once resolved: a loop, which leads nowhere usable
            return Path(path)
    except (OSError, ValueError):  # a NUL in the name
        return Path(path)
    return None if real != root and real.is_relative_to(root) else real


def outside_link(store: str | Path, run_dir: Path) -> tuple[Path, Path] | None:
    """(link, target) for the run folder, or a link directly in it, that leads out of the store; else None."""
    target = escapes(store, run_dir)
    if target is not None:
        return run_dir, target
    try:
        with os.scandir(run_dir) as entries:
            links = [Path(e.path) for e in entries if e.is_symlink()]
    except OSError:  # not there (yet): nothing links out
        return None
    for link in links:
        target = escapes(store, link)
        if target is not None:
            return link, target
    return None


def inside_store(store: str | Path, run_dir: Path) -> bool:
    """True when a run folder found in the store stays in it (readers skip the others)."""
    return run_id_problem(run_dir.name) is None and outside_link(store, run_dir) is None


def run_dir(store: str | Path, run_id: str) -> Path:
    """`<store>/<run_id>` once the id is valid and nothing in that folder links out of the store."""
    path = Path(store) / check_run_id(run_id)
    found = outside_link(store, path)
    if found:
        link, target = found
        raise UsageError(
            f"run {run_id!r}: {link} is a symbolic link to {target}, outside the store {store}; "
            "copy the run into the store instead"
        )
    return path
