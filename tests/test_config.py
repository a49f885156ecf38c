import pytest

from analysis.errors import UsageError
from trainer.config import TrainConfig, load_config, parse_overrides


def test_overrides_parse_yaml_scalars():
    assert parse_overrides(["steps=3", "mlflow=", "target_entropy=null", "task=jsonl:a=b.jsonl"]) == {
        "steps": 3,
        "mlflow": "",
        "target_entropy": None,
        "task": "jsonl:a=b.jsonl",
    }


def test_scientific_notation_reaches_float_fields():
    assert load_config(None, ["lr=1e-4"]).lr == 1e-4


def test_yaml_file_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("algo: dapo\nsteps: 7\nlr: 0.01\n")
    cfg = load_config(path, ["steps=9"])
    assert (cfg.algo, cfg.steps, cfg.lr) == ("dapo", 9, 0.01)
    assert cfg.eps_high == 0.28  # DAPO's clip-higher default


def test_eps_high_defaults_to_eps_low_for_symmetric_algos():
    assert TrainConfig(algo="grpo", eps_low=0.1).eps_high == 0.1


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["stepz=3"], "unknown config key 'stepz'"),
        (["lr=fast"], "config key 'lr'"),
        (["algo=ppo2"], "config key 'algo'"),
        (["steps=0"], "config key 'steps'"),
        (["precision=fp8"], "config key 'precision'"),
        (["noequals"], "--set expects key=value"),
    ],
)
def test_bad_input_is_one_line_usage_error(overrides, fragment):
    with pytest.raises(UsageError) as err:
        load_config(None, overrides)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("algo", ["grpo", "dapo", "dr_grpo", "rloo"])
def test_group_relative_algos_refuse_groups_of_one(algo):
    with pytest.raises(UsageError, match=f"group_size=1 with algo={algo}: .*no gradient") as err:
        load_config(None, [f"algo={algo}", "group_size=1"])
    assert "\n" not in str(err.value)
    assert load_config(None, [f"algo={algo}", "group_size=2"]).group_size == 2


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("algo: [grpo\n", "not valid YAML"),
        ("- a\n- b\n", "mapping"),
        ("?\n", "key None is not a name"),
        ("1: 2\n", "key 1"),
    ],
)
def test_bad_yaml_file(tmp_path, text, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UsageError, match=fragment):
        load_config(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
