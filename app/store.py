"""Which run store the dashboard shows: `-- --store DIR` after `streamlit run`, else $ENTROPYSCOPE_STORE,
else ./runs (the CLI's default)."""

import argparse
import os
import sys

STORE_ENV = "ENTROPYSCOPE_STORE"
DEFAULT_STORE = "runs"


def store_path(argv: list[str] | None = None) -> str:
    """The store directory as an absolute path (cache keys then survive a change of working directory)."""
    # allow_abbrev=False and parse_known_args: under AppTest sys.argv is pytest's, whose flags must be
    # neither rejected nor mistaken for an abbreviation of --store.
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--store")
    args, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    return os.path.abspath(args.store or os.environ.get(STORE_ENV) or DEFAULT_STORE)
