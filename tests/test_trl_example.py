"""examples/trl_grpo.py end to end: one run in the store from the offline tiny model; bad input is one line."""

import json
import runpy
import sys
from pathlib import Path

import pytest

from trainer.models import load_policy

EXAMPLE = str(Path(__file__).resolve().parents[1] / "examples" / "trl_grpo.py")


def run_example(monkeypatch: pytest.MonkeyPatch, *argv: str) -> int:
    monkeypatch.setattr(sys, "argv", [EXAMPLE, *argv])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(EXAMPLE, run_name="__main__")
    return done.value.code


def test_example_writes_one_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys) -> None:
    """--model PATH: a local Hugging Face directory (our tiny preset saved with save_pretrained, no warm-up)."""
    model, tokenizer = load_policy("tiny-qwen2", seed=0)
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    store = tmp_path / "store"
    argv = [
        "--store",
        str(store),
        "--steps",
        "2",
        "--run-id",
        "ex",
        "--controller",
        "repo_r",
        "--set",
        "zeta_max=3",
        "--prompts",
        "2",
        "--trl",
        "num_iterations=2",
    ]
    code = run_example(monkeypatch, *argv, "--model", str(tmp_path / "model"))
    assert code == 0
    assert "run ex: 2 steps" in capsys.readouterr().out
    info = json.loads((store / "ex" / "run.json").read_text())
    assert info["status"] == "finished" and info["config"]["controller"] == "repo_r"
    assert info["config"]["zeta_max"] == 3 and info["config"]["prompts_per_step"] == 2
    assert info["config"]["epochs_per_step"] == 2 and info["source"]["config"]["num_iterations"] == 2
    assert [d.name for d in store.iterdir() if (d / "run.json").exists()] == ["ex"]


def test_example_bad_model_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys) -> None:
    code = run_example(monkeypatch, "--store", str(tmp_path), "--model", str(tmp_path / "nope"))
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("entropyscope: error: ") and "\n" not in err


@pytest.mark.parametrize(
    "knob, says",
    [("nope=1", "unknown scope key 'nope'"), ("zeta_max=-1", "zeta_max"), ("zeta_max", "key=value")],
)
def test_example_bad_knob_is_one_line(monkeypatch, tmp_path: Path, capsys, knob: str, says: str) -> None:
    code = run_example(monkeypatch, "--store", str(tmp_path), "--steps", "1", "--set", knob)
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("entropyscope: error: ") and "\n" not in err and says in err, err
    assert not any(tmp_path.iterdir())  # refused before anything is written


@pytest.mark.parametrize(
    "field, says",
    [
        ("nope=1", "GRPOConfig field, got 'nope=1'"),
        ("num_iterations", "KEY=VALUE"),
        ("num_iterations=abc", "expected int (default 1)"),
        ("num_generations=3", "divisible by num_generations (3)"),
    ],
)
def test_example_bad_trl_field_is_one_line(
    monkeypatch, tmp_path: Path, capsys, field: str, says: str
) -> None:
    code = run_example(monkeypatch, "--store", str(tmp_path), "--steps", "1", "--trl", field)
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("entropyscope: error: ") and "\n" not in err and says in err, err
    assert not any(tmp_path.iterdir())
