"""The docs name every public name: the reference page every metric and config key, the README every CLI command."""

import re
from pathlib import Path

from analysis.schema import IMPORTED_KEYS, METRIC_KEYS
from trainer.cli import build_parser
from trainer.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
REFERENCE = (ROOT / "docs" / "reference.md").read_text()


def table_keys(heading: str) -> set[str]:
    section = REFERENCE.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([^`]+)` \|", section, flags=re.M))


def test_every_metric_key_is_in_the_logged_metrics_table():
    assert table_keys("Logged metrics") == set(METRIC_KEYS) | set(IMPORTED_KEYS)


def test_every_config_key_is_in_the_configuration_table():
    assert table_keys("Configuration") == set(TrainConfig.model_fields)


def test_every_cli_command_is_shown():
    commands = build_parser()._subparsers._group_actions[0].choices
    for name in commands:
        assert f"entropyscope {name}" in README, name


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_relative_links_resolve():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if "://" in target:
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            assert file.exists(), f"{page.name}: {target}"
            if anchor:
                headings = re.findall(r"^#+ (.+)$", file.read_text(), flags=re.M)
                assert anchor in {slug(h) for h in headings}, f"{page.name}: {target}"
