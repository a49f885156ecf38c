"""`entropyscope import` told the format by content: a real TRL run's console output and state file, and the
documented layouts of verl's console, ms-swift's logging.jsonl and OpenRLHF's console, each imported with no
--format, value by value, under the right names, and a second time with nothing new; plus what must not import
(no known format, no rows, a cut-off last console line) and one run for one source however it is named."""

import contextlib
import io
import json
import logging
import math
import os
import pprint
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from test_import import import_twice, series, stored

from analysis import schema
from analysis.errors import UsageError
from analysis.importers.importer import detect_format, follow_source, import_source
from analysis.store_reader import source_label

STEPS, EVERY = 6, 2
# transformers 5 prints each float of a log as f"{v:.4g}": 4 significant digits
PRINTED = {"rel": 5e-4, "abs": 1e-12}
# TRL's names -> ours, as the import must file them (the rest keep their names; epoch is kept)
TRL_NAMES = {"entropy": schema.ENTROPY_MEAN, "kl": schema.KL_REF, "reward": schema.REWARD_MEAN,
             "grad_norm": schema.GRAD_NORM, "learning_rate": schema.LR, "frac_reward_zero_std": schema.ADV_ZERO_FRAC,
             "clip_ratio/region_mean": schema.CLIP_FRAC, "completions/mean_length": schema.RESPONSE_LEN_MEAN,
             "clip_ratio/low_mean": schema.CLIP_FRAC_LOW, "clip_ratio/high_mean": schema.CLIP_FRAC_HIGH,
             "reward_std": "reward_std", "loss": "loss", "epoch": "epoch"}  # fmt: skip


@pytest.fixture(scope="module")
def trl_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, list[dict]]:
    """TRL's own GRPOTrainer on the tiny preset, 6 steps logged every 2, with a KL term (beta > 0): the
    console output as `python train.py 2>&1 | tee` keeps it (the script prints its config first, as many do),
    TRL's trainer_state.json under another name, and log_history."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from trainer.models import load_policy

    root = tmp_path_factory.mktemp("trl-console")
    torch.set_num_threads(1)
    model, tokenizer = load_policy("tiny-qwen2", seed=0)
    model.save_pretrained(root / "tiny")  # by path: beta > 0 loads the reference model from it
    args = GRPOConfig(
        output_dir=str(root / "out"), max_steps=STEPS, logging_steps=EVERY, per_device_train_batch_size=8,
        num_generations=4, max_completion_length=6, report_to=[], use_cpu=True, learning_rate=0.05,
        save_strategy="no", seed=0, beta=0.04, disable_tqdm=False,
    )  # fmt: skip
    trainer = GRPOTrainer(
        model=str(root / "tiny"), args=args, processing_class=tokenizer,
        train_dataset=Dataset.from_list([{"prompt": f"{i}+{i}="} for i in range(64)]),
        reward_funcs=lambda prompts, completions, **_: [float(len(c) % 2 == 0) for c in completions],
    )  # fmt: skip
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        print(args)
        trainer.train()
    trainer.state.save_to_json(str(root / "training_logs.json"))  # the Trainer's own state writer
    return root, out.getvalue(), trainer.state.log_history


def train_logs(history: list[dict]) -> dict[int, dict]:
    return {h["step"]: h for h in history if "loss" in h}


def check_values(df, logs: dict[int, dict], tolerance: dict) -> None:
    """Every number TRL logged is stored at its step under our name for it."""
    for step, log in logs.items():
        for theirs, value in log.items():
            if theirs == "step" or not isinstance(value, float | int):
                continue
            ours = TRL_NAMES.get(theirs, theirs)
            assert series(df, ours).get(step) == pytest.approx(value, **tolerance), (step, theirs)


def test_trl_console_in_markdown_steps_from_its_logging_steps(trl_run, tmp_path):
    root, console, history = trl_run
    log = tmp_path / "notes.md"
    log.write_text(f"# GRPO run\n\nOutput:\n\n```\n{console}```\n")
    assert detect_format(str(log)) == "hf-console"
    run_id, df, info = import_twice(log, tmp_path / "runs")
    logs = train_logs(history)
    assert sorted(logs) == [2, 4, 6] and sorted(series(df, schema.ENTROPY_MEAN)) == [2, 4, 6]
    check_values(df, logs, PRINTED)
    summary = next(h for h in history if "train_runtime" in h)
    assert series(df, "train_loss") == pytest.approx({STEPS: summary["train_loss"]}, **PRINTED)
    assert info["source"]["kind"] == "hf-console" and info["source"]["trainer"] == "trl"
    assert "logging_steps" in info["source"]["steps"] and "n x 2" in info["source"]["steps"]
    assert info["mapped_keys"]["kl"] == schema.KL_REF


def test_trl_console_without_its_config_is_numbered_and_scaled(trl_run, tmp_path):
    _, console, history = trl_run
    log = tmp_path / "train.log"
    log.write_text("\n".join(line for line in console.splitlines() if "logging_steps" not in line) + "\n")
    _, df, info = import_twice(log, tmp_path / "runs")
    logs = train_logs(history)
    assert sorted(series(df, schema.ENTROPY_MEAN)) == [1, 2, 3]  # the n-th log is step n
    assert series(df, schema.ENTROPY_MEAN)[1] == pytest.approx(logs[2]["entropy"], **PRINTED)
    assert "numbered in order" in info["source"]["steps"]
    with pytest.raises(
        UsageError, match="pass the same --step-every"
    ):  # the same logs at other steps: refused
        import_source(str(log), store=tmp_path / "runs", step_every=EVERY)
    _, scaled, _ = import_twice(log, tmp_path / "runs-2", step_every=EVERY)
    check_values(scaled, logs, PRINTED)


def test_console_dict_split_over_two_lines_with_nan(trl_run, tmp_path):
    _, console, history = trl_run
    first = next(line for line in console.splitlines() if "{'loss'" in line)
    head, _, rest = first.partition(" 'entropy'")
    broken = f"{head}\n 'entropy'{rest}".replace("'kl': '", "'kl': 'nan', 'was': '")
    log = tmp_path / "train.txt"
    log.write_text(console.replace(first, broken))
    _, df, _ = import_twice(log, tmp_path / "runs")
    assert series(df, schema.ENTROPY_MEAN)[2] == pytest.approx(train_logs(history)[2]["entropy"], **PRINTED)
    assert math.isnan(series(df, schema.KL_REF)[2])


def test_transformers_4_console_raw_floats_and_bare_nan(tmp_path):
    """transformers 4.x printed each log's floats as they are (`print(logs)`), `nan` bare."""
    logs = [{"loss": float("nan"), "grad_norm": 47.75, "learning_rate": 9.99e-06, "entropy": 0.95, "epoch": 0.01},
            {"loss": 0.0751, "grad_norm": 12.5, "learning_rate": 9.98e-06, "entropy": 0.9, "epoch": 0.02}]  # fmt: skip
    log = tmp_path / "unsloth_run.txt"
    log.write_text("".join(f" {i}%|██| {i}/200 [00:0{i}<03:10]{entry}\n" for i, entry in enumerate(logs, 1)))
    assert "'loss': nan" in log.read_text()
    _, df, info = import_twice(log, tmp_path / "runs")
    assert math.isnan(series(df, "loss")[1]) and series(df, "loss")[2] == 0.0751
    assert series(df, schema.ENTROPY_MEAN) == {1: 0.95, 2: 0.9} and series(df, schema.LR)[1] == 9.99e-06
    assert info["source"]["trainer"] == "transformers"  # no TRL names in it: the HF Trainer's own table


def test_trl_state_under_another_name(trl_run, tmp_path):
    root, _, history = trl_run
    assert detect_format(str(root / "training_logs.json")) == "trl"
    _, df, info = import_twice(root / "training_logs.json", tmp_path / "runs")
    check_values(df, {s: {k: v for k, v in h.items() if k != "epoch"} for s, h in train_logs(history).items()},
                 {"rel": 1e-12})  # fmt: skip
    assert info["source"]["trainer"] == "trl"


def test_truncated_trainer_state_says_so(trl_run, tmp_path):
    root, _, _ = trl_run
    text = (root / "training_logs.json").read_text()
    cut = tmp_path / "trainer_state.json"
    cut.write_text(text[: len(text) // 2])
    with pytest.raises(UsageError, match="ends early.*copy it again") as err:
        import_source(str(cut), store=tmp_path / "runs")
    assert len(str(err.value).splitlines()) == 1 and not (tmp_path / "runs").exists()


def test_output_dir_then_the_state_inside_is_one_run(trl_run, tmp_path):
    root, _, _ = trl_run
    out = tmp_path / "grpo-out"
    for folder in (out, out / "checkpoint-6"):
        folder.mkdir(parents=True)
        (folder / "trainer_state.json").write_text((root / "training_logs.json").read_text())
    store = tmp_path / "runs"
    (run,) = import_source(str(out), store=store)
    assert run.rows_written > 0
    for again in (
        out / "trainer_state.json",
        out / "checkpoint-6",
        out / "checkpoint-6" / "trainer_state.json",
    ):
        (same,) = import_source(str(again), store=store)
        assert (same.run_id, same.rows_written) == (run.run_id, 0), again
    assert [p.name for p in store.iterdir() if p.is_dir()] == [run.run_id]


# ---- documented layouts ---------------------------------------------------------------------------------------


def verl_console_line(step: int, metrics: dict) -> str:
    """verl's console logger: `step:N - key:value - ...`, each value pprint-formatted (numpy 2: np.float64(...))."""
    return " - ".join([f"step:{step}", *(f"{k}:{pprint.pformat(v)}" for k, v in metrics.items())])


def verl_metrics(step: int) -> dict:
    return {"actor/entropy": np.float64(0.5 + 0.1234567 * step), "actor/kl_loss": np.float64(0.001 * step),
            "critic/score/mean": np.float32(0.25 * step), "training/global_step": step}  # fmt: skip


def test_verl_console_numpy_values_and_a_cut_off_last_line(tmp_path):
    log = tmp_path / "verl.out"
    lines = [f"(TaskRunner pid=7) {verl_console_line(s, verl_metrics(s))}" for s in (1, 2)]
    assert "np.float64(" in lines[0]
    last = verl_console_line(3, verl_metrics(3))
    cut = last.index("actor/entropy:") + len("actor/entropy:np.float64(0.87")
    log.write_text("\n".join(["{'actor_rollout_ref': {'actor': {'ppo_epochs': 1}}}", *lines, last[:cut]]))
    assert detect_format(str(log)) == "verl"  # its config dict printed first is not an HF log
    store = tmp_path / "runs"
    _, df, info = import_twice(log, store)
    assert series(df, schema.ENTROPY_MEAN) == pytest.approx({s: 0.5 + 0.1234567 * s for s in (1, 2)})
    assert series(df, schema.KL_REF) == pytest.approx({1: 0.001, 2: 0.002})
    assert series(df, schema.REWARD_MEAN)[2] == pytest.approx(0.5)
    assert info["source"]["trainer"] == "verl"
    (live,) = follow_source(str(log), store=store, stop=stopped())  # under --follow too
    assert live.rows_written == 0
    with log.open("a") as f:
        f.write(last[cut:] + "\n")
    (done,) = import_source(str(log), store=store)
    assert done.rows_written == 4  # the completed line, whole
    assert series(stored(store, done.run_id), schema.ENTROPY_MEAN)[3] == pytest.approx(0.5 + 0.1234567 * 3)


def stopped() -> threading.Event:
    stop = threading.Event()
    stop.set()  # one read, then the follow ends
    return stop


def swift_logs(step: int) -> dict:
    """One log as ms-swift's patched callbacks write it: the HF Trainer's log plus its progress fields."""
    return {"loss": 0.0123, "grad_norm": 0.5 * step, "learning_rate": 1e-6, "reward": 0.1 * step, "reward_std": 0.2,
            "frac_reward_zero_std": 0.25, "kl": 0.003 * step, "entropy/mean": 1.5 - 0.1 * step,
            "clip_ratio/region_mean": 0.01, "completions/mean_length": 120.0, "epoch": step / 438,
            "global_step/max_steps": f"{step}/438", "percentage": f"{step / 4.38:.2f}%", "elapsed_time": "1m 2s",
            "remaining_time": "2h 1m", "memory(GiB)": 20.5, "train_speed(s/it)": 3.1}  # fmt: skip


def check_swift(df, info) -> None:
    assert series(df, schema.KL_REF) == pytest.approx({s: 0.003 * s for s in (10, 20, 30)})
    assert series(df, schema.REWARD_MEAN) == pytest.approx({s: 0.1 * s for s in (10, 20, 30)})
    assert series(df, schema.ENTROPY_MEAN) == pytest.approx({s: 1.5 - 0.1 * s for s in (10, 20, 30)})
    assert series(df, schema.CLIP_FRAC)[10] == 0.01 and series(df, schema.GRAD_NORM)[30] == 15.0
    assert series(df, "memory(GiB)")[20] == 20.5 and "percentage" not in set(df["key"])


def test_ms_swift_logging_jsonl_and_its_console_print(tmp_path):
    jsonl, console = tmp_path / "logging.jsonl", tmp_path / "swift.log"
    # append_to_jsonl: json.dumps(obj, ensure_ascii=False) per line; PrinterCallbackNew: print(logs)
    jsonl.write_text("".join(json.dumps(swift_logs(s), ensure_ascii=False) + "\n" for s in (10, 20, 30)))
    console.write_text(
        "".join(f"Train:   2%|▏ | {s}/438 [00:31<22:04]\n{swift_logs(s)}\n" for s in (10, 20, 30))
    )
    assert detect_format(str(jsonl)) == "ms-swift" and detect_format(str(console)) == "hf-console"
    _, df, info = import_twice(jsonl, tmp_path / "runs")
    check_swift(df, info)
    assert info["source"]["kind"] == "ms-swift" and info["source"]["trainer"] == "ms-swift"
    _, df, info = import_twice(console, tmp_path / "runs")
    check_swift(df, info)  # the steps it states, not a count


def test_openrlhf_console_line(tmp_path):
    log = tmp_path / "openrlhf.log"
    handler = logging.FileHandler(log, encoding="utf-8")
    handler.setFormatter(
        logging.Formatter("[%(asctime)s] [%(levelname)s] [%(filename)s:%(lineno)d] %(message)s")
    )
    logger = logging.getLogger("openrlhf-test")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    for step in (1, 2, 3):  # PPOTrainer.fit: logger.info(f"✨ Global step {global_step}: {log_status}")
        status = {"policy_loss": -0.01 * step, "actor_lr": 5e-7, "ppo_clip_ratio": 0.002, "ppo_kl": 1e-4,
                  "kl": 0.0005 * step, "reward": 0.3 * step, "return": 0.2, "response_length": 300.0 + step,
                  "total_length": 400.0, "entropy_loss": 0.9 - 0.1 * step, "response_clip_ratio": 0.0,
                  "group_reward_std": 0.4, "timing/ppo_train": 12.5, "rollout/reward_mean": 0.3 * step}  # fmt: skip
        logger.info(f"✨ Global step {step}: {status}")
    handler.close()
    logger.removeHandler(handler)
    assert detect_format(str(log)) == "openrlhf"
    _, df, info = import_twice(log, tmp_path / "runs")
    assert series(df, schema.KL_REF) == pytest.approx({s: 0.0005 * s for s in (1, 2, 3)})
    assert series(df, schema.ENTROPY_MEAN) == pytest.approx({s: 0.9 - 0.1 * s for s in (1, 2, 3)})
    assert series(df, schema.LOSS_POLICY)[2] == -0.02 and series(df, schema.CLIP_FRAC)[1] == 0.002
    assert series(df, schema.KL_APPROX)[3] == 1e-4 and series(df, schema.LR)[3] == 5e-7
    assert series(df, schema.RESPONSE_LEN_MEAN)[3] == 303.0 and series(df, schema.REWARD_MEAN)[
        3
    ] == pytest.approx(0.9)
    assert series(df, "group_reward_std")[1] == 0.4 and series(df, "timing/ppo_train")[1] == 12.5
    assert info["source"]["kind"] == info["source"]["trainer"] == "openrlhf"


# ---- generic files and refusals ----------------------------------------------------------------------------


def test_generic_csv_keeps_kl_and_maps_only_unambiguous_names(tmp_path):
    csv = tmp_path / "verl_export.csv"
    rows = [f"{s},{1.0 - 0.01 * s},{-0.002 * s},{0.001 * s},{0.1 * s},0.0" for s in range(1, 6)]
    csv.write_text("global_step,entropy,kl,kl_loss,reward_mean,clip_fraction_low\n" + "\n".join(rows) + "\n")
    run_id, df, info = import_twice(csv, tmp_path / "runs")
    assert series(df, "kl")[3] == pytest.approx(-0.006)  # negative at times: not a KL to the reference
    assert schema.KL_REF not in set(df["key"])
    assert series(df, schema.ENTROPY_MEAN)[1] == pytest.approx(0.99)
    assert series(df, schema.REWARD_MEAN)[5] == pytest.approx(0.5)
    assert {"kl_loss", "clip_fraction_low"} <= set(df["key"])
    assert info["source"]["trainer"] is None and source_label(info) == "csv"


@pytest.mark.parametrize(
    "name, text, fmt, message",
    [
        (
            "notes.md",
            "# notes\n\nThe run went fine; loss fell.\n",
            "auto",
            "cannot tell the format of .*tried",
        ),
        ("train.log", "loading model\nstep 1 done\n", "verl", "no metric rows in it, read as verl"),
        ("empty.jsonl", "\n", "jsonl", "no metric rows"),
        ("cut.log", "step:1 - actor/entropy:0.14", "auto", "no metric rows"),  # only a cut-off line
        ("steps.jsonl", '{"step": 1, "x": 1}\n', "auto --step-every 2", "whose rows carry their steps"),
    ],
)
def test_a_file_without_rows_leaves_no_run(tmp_path, name, text, fmt, message):
    (tmp_path / name).write_text(text)
    fmt, _, every = fmt.partition(" --step-every ")
    with pytest.raises(UsageError, match=message) as err:
        import_source(
            str(tmp_path / name), store=tmp_path / "runs", fmt=fmt, step_every=int(every or 0) or None
        )
    assert len(str(err.value).splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_cli_a_file_of_no_known_format_exits_2_and_leaves_no_run(tmp_path):
    (tmp_path / "notes.txt").write_text("nothing to see\n")
    store = tmp_path / "runs"
    store.mkdir()
    done = subprocess.run([sys.executable, "-m", "trainer.cli", "import", str(tmp_path / "notes.txt"), "--store",
                           str(store)], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "cannot tell the format" in line and "--format" in line and "hf-console" in line
    assert list(store.iterdir()) == []


# ---- fuzz ---------------------------------------------------------------------------------------------------

CONSOLE_BITS = ["{'", "'loss': ", "'epoch': ", "'step': ", "'global_step/max_steps': '3/9'", "'eval_loss': ",
                "'train_runtime': ", "0.5", "'nan'", "nan", "np.float64(1e-3)", "-7", "1e400", ", ", "}", "{",
                "\n", "\r", "✨ Global step 3: ", "logging_steps=4,", "global_step=12", "[1, 2]", "'", '"', "step:2 - "]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["auto", "hf-console", "openrlhf"])
def test_fuzz_console_logs_import_or_refuse_on_one_line(fmt, tmp_path):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from analysis.importers.importer import plan

    path, store = tmp_path / "console.log", tmp_path / "runs"

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        st.lists(st.one_of(st.sampled_from(CONSOLE_BITS), st.text(max_size=5)), max_size=40), st.booleans()
    )
    def check(bits: list[str], final: bool) -> None:
        path.write_bytes("".join(bits).encode("utf-8", errors="surrogatepass"))
        try:
            plan(str(path), store=store, fmt=fmt, final=final)
        except UsageError as err:
            assert len(str(err).splitlines()) == 1 and str(path) in str(err), str(err)

    check()
    assert not store.exists()
