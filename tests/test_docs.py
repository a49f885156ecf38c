"""The README documents the public names: every metric key, config key and CLI command."""

import re
from pathlib import Path

from analysis.schema import METRIC_KEYS
from trainer.cli import build_parser
from trainer.config import TrainConfig

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def table_keys(heading: str) -> set[str]:
    section = README.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([^`]+)` \|", section, flags=re.M))


def test_every_metric_key_is_in_the_logged_metrics_table():
    assert table_keys("Logged metrics") == set(METRIC_KEYS)


def test_every_config_key_is_in_the_configuration_table():
    assert table_keys("Configuration") == set(TrainConfig.model_fields)


def test_every_cli_command_is_shown():
    commands = build_parser()._subparsers._group_actions[0].choices
    for name in commands:
        assert f"entropyscope {name}" in README, name
