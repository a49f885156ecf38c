"""`entropyscope import`: real sources written by the real writers (torch's SummaryWriter, mlflow, verl's file
logger format, a TRL trainer_state.json, a CSV) land in the store with their values, steps and our names, and a
second import adds nothing."""

import json
import math
import re
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import schema
from analysis.errors import UsageError
from analysis.importers.importer import (
    default_run_id,
    detect_format,
    follow_source,
    import_source,
    open_sources,
)
from analysis.importers.mlflow_runs import open_mlflow
from analysis.importers.names import SIGNATURES, KeyMapper, map_key
from analysis.store_reader import StoreReader
from analysis.watch import watch

STEPS = 30


def entropy_at(step: int) -> float:
    return 1.5 * math.exp(-step / 20)


def stored(store: Path, run_id: str) -> pd.DataFrame:
    """The run's steps as the store resolves them: one value per (key, step)."""
    reader = StoreReader(store)
    try:
        df = reader.table("steps", [run_id])
    finally:
        reader.close()
    return df.sort_values(["step", "key"], ignore_index=True)


def raw_row_count(store: Path, run_id: str) -> int:
    """Rows in the run's live segments before de-duplication: a second import must not add any."""
    reader = StoreReader(store)
    try:
        return int(reader.query("SELECT count(*) AS n FROM seg_steps", [], ["steps"], [run_id])["n"][0])
    finally:
        reader.close()


def series(df: pd.DataFrame, key: str) -> dict[int, float]:
    rows = df[df["key"] == key]
    return dict(zip(rows["step"].astype(int), rows["value"], strict=True))


def import_twice(source: str | Path, store: Path, **options) -> tuple[str, pd.DataFrame, dict]:
    """Import, check a second import writes and changes nothing, return (run id, rows, run.json)."""
    (run,) = import_source(str(source), store=store, **options)
    first, n_raw = stored(store, run.run_id), raw_row_count(store, run.run_id)
    (again,) = import_source(str(source), store=store, **options)
    assert again.run_id == run.run_id
    assert again.rows_written == 0
    assert raw_row_count(store, run.run_id) == n_raw
    pd.testing.assert_frame_equal(stored(store, run.run_id), first)
    info = json.loads((store / run.run_id / "run.json").read_text())
    return run.run_id, first, info


# ---- verl ------------------------------------------------------------------------------------------------


def write_verl_jsonl(path: Path, steps: range, *, val_every: int = 10) -> None:
    """As verl's FileLogger.log writes: one compact JSON line per call; validation is a call of its own."""
    with path.open("a") as f:
        for step in steps:
            data = {
                "actor/entropy": entropy_at(step),
                "actor/pg_clipfrac": 0.02,
                "actor/pg_clipfrac_lower": 0.001 * step,
                "actor/ppo_kl": 1e-4,
                "critic/score/mean": step / STEPS,
                "response_length/mean": 100.0 + step,
                "perf/throughput": 1234.5,
            }
            f.write(json.dumps({"step": step, "data": data}, separators=(",", ":")) + "\n")
            if step % val_every == 0:
                val = {"val-core/openai/gsm8k/reward/mean@1": step / 100}
                f.write(json.dumps({"step": step, "data": val}, separators=(",", ":")) + "\n")


def test_verl_jsonl(tmp_path):
    log = tmp_path / "grpo_run.jsonl"
    write_verl_jsonl(log, range(1, STEPS + 1))
    assert detect_format(str(log)) == "verl"
    run_id, df, info = import_twice(log, tmp_path / "runs")
    assert run_id.startswith("verl-grpo_run-")
    assert series(df, schema.ENTROPY_MEAN) == pytest.approx({s: entropy_at(s) for s in range(1, STEPS + 1)})
    # pg_clipfrac_lower counts dual-clip tokens: never filed as the low side of the ratio clip
    assert series(df, schema.CLIP_DUAL_FRAC)[20] == pytest.approx(0.02)
    assert schema.CLIP_FRAC_LOW not in set(df["key"])
    assert series(df, schema.REWARD_MEAN)[STEPS] == pytest.approx(1.0)
    # validation lines share their step with the training line and merge with it
    val = series(df, "val-core/openai/gsm8k/reward/mean@1")
    assert val == pytest.approx({10: 0.1, 20: 0.2, 30: 0.3})
    assert series(df, schema.ENTROPY_MEAN)[10] == pytest.approx(entropy_at(10))
    assert series(df, "perf/throughput")[1] == 1234.5  # per-GPU throughput: not ours, keeps its name
    assert info["source"] == {"kind": "verl", "path": str(log.resolve()), "trainer": "verl"}
    assert info["mapped_keys"]["actor/pg_clipfrac_lower"] == schema.CLIP_DUAL_FRAC
    assert info["status"] == "finished" and info["last_step"] == STEPS


def test_verl_console_lines(tmp_path):
    log = tmp_path / "train.log"
    log.write_text(
        "(TaskRunner pid=7) Training Progress: 10%\n"
        "(TaskRunner pid=7) step:1 - actor/entropy:np.float64(1.25) - actor/lr:1e-06 - training/global_step:1\n"
        "some other output\n"
        "step:2 - actor/entropy:1.125 - critic/score/mean:0.5 - actor/kl_loss:nan\n"
    )
    assert detect_format(str(log)) == "verl"
    _, df, _ = import_twice(log, tmp_path / "runs")
    assert series(df, schema.ENTROPY_MEAN) == {1: 1.25, 2: 1.125}
    assert series(df, schema.LR) == {1: 1e-6}
    assert math.isnan(series(df, schema.KL_REF)[2])


# ---- TensorBoard ------------------------------------------------------------------------------------------


def tb_log(log_dir: Path, steps: range, scale: float = 1.0) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(log_dir))
    for step in steps:
        writer.add_scalar("actor/entropy", scale * entropy_at(step), step)
        writer.add_scalar("actor/pg_clipfrac_lower", 0.001 * step, step)
        writer.add_scalar("train/reward", step / STEPS, step)  # an HF-style logger prefix
        writer.add_scalar("eval/reward", 0.5, step)
    writer.close()


def test_tensorboard_restarted_run_merges_and_later_file_wins(tmp_path):
    log_dir = tmp_path / "tensorboard_log" / "proj" / "exp1"
    tb_log(log_dir, range(0, 20))
    tb_log(log_dir, range(15, STEPS), scale=2.0)  # a resumed run: a second file repeats steps 15..19
    assert len(list(log_dir.glob("events.out.tfevents.*"))) == 2
    # a half-written last record (a writer mid-flush) is skipped, not an error
    newest = sorted(log_dir.glob("events.out.tfevents.*"))[-1]
    with newest.open("ab") as f:
        f.write(b"\x20\x00\x00\x00\x00\x00\x00\x00\x01\x02")
    assert detect_format(str(tmp_path / "tensorboard_log")) == "tensorboard"
    run_id, df, info = import_twice(tmp_path / "tensorboard_log", tmp_path / "runs")
    assert run_id.startswith("tensorboard-tensorboard_log-proj-exp1-")
    entropy = series(df, schema.ENTROPY_MEAN)
    assert sorted(entropy) == list(range(STEPS))
    assert entropy[10] == pytest.approx(entropy_at(10), rel=1e-6)  # float32 on disk
    assert entropy[17] == pytest.approx(2 * entropy_at(17), rel=1e-6)  # the restarted file's value
    assert series(df, schema.CLIP_DUAL_FRAC)[29] == pytest.approx(0.029, rel=1e-6)
    assert series(df, schema.REWARD_MEAN)[15] == pytest.approx(0.5)  # train/ stripped, then mapped
    assert series(df, "eval/reward/mean")[15] == pytest.approx(0.5)  # eval/ keeps its namespace
    assert info["source"]["kind"] == "tensorboard" and info["source"]["trainer"] == "verl"
    assert (df["wall_time"] > 1e9).all()  # the events' own clock


# ---- MLflow -----------------------------------------------------------------------------------------------


def test_mlflow_sqlite_full_history_params_tags(tmp_path):
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("trl-sweep")
    run = client.create_run(exp, run_name="grpo-a", tags={"team": "rl"})
    client.log_param(run.info.run_id, "learning_rate", "1e-6")
    n = 1500  # more than the sampled bulk endpoints keep
    metrics = [Metric("entropy", entropy_at(s), 1_700_000_000_000 + s, s) for s in range(n)]
    metrics += [Metric("kl", 0.01 * s, 1_700_000_000_000 + s, s) for s in range(n)]
    metrics += [Metric("loss", float("nan"), 1_700_000_000_000 + 5, 5)]
    metrics += [Metric("completions/mean_length", 80.0, 1_700_000_000_000, 0)]  # a name only TRL logs
    for i in range(0, len(metrics), 1000):
        client.log_batch(run.info.run_id, metrics=metrics[i : i + 1000])
    client.log_metric(
        run.info.run_id, "entropy", 9.0, timestamp=1_800_000_000_000, step=3
    )  # re-logged: later wins
    client.set_terminated(run.info.run_id)

    source = f"{uri}#trl-sweep"
    assert detect_format(source) == "mlflow"
    run_id, df, info = import_twice(source, tmp_path / "runs")
    assert run_id.startswith("mlflow-grpo-a-")
    entropy = series(df, schema.ENTROPY_MEAN)
    history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "entropy")}
    assert len(entropy) == n and entropy[3] == 9.0
    assert entropy == pytest.approx({s: v for s, v in history.items() if s != 3} | {3: 9.0})
    assert series(df, schema.KL_REF)[1000] == pytest.approx(10.0)  # TRL's kl is to the reference model
    assert info["source"]["trainer"] == "trl"
    assert math.isnan(series(df, "loss")[5])
    assert info["config"] == {"learning_rate": "1e-6"}
    assert info["source"]["tags"] == {"team": "rl"}
    assert info["source"]["experiment"] == "trl-sweep"
    assert info["source"]["uri"] == f"{uri}#{run.info.run_id}"
    # --follow reads only what was logged since the last read
    (live,) = open_mlflow(source)
    assert len(live.read()) == 2 * n + 3 and len(live.read()) == 0
    client.log_metric(run.info.run_id, "kl", 0.5, step=n)
    new = live.read()
    assert (new.keys, new.step.tolist(), new.value.tolist()) == (["kl"], [n], [0.5])


def test_mlflow_bad_sources(tmp_path):
    with pytest.raises(UsageError, match="no MLflow database"):
        import_source(f"sqlite:///{tmp_path / 'missing.db'}", store=tmp_path / "runs")
    assert not (tmp_path / "missing.db").exists()  # not created by looking


# ---- TRL --------------------------------------------------------------------------------------------------


def trl_history(steps: range) -> list[dict]:
    history = []
    for s in steps:
        history.append({
            "step": s, "epoch": s / 100, "loss": 0.1, "grad_norm": 0.5, "learning_rate": 1e-6,
            "entropy": entropy_at(s), "kl": 0.002 * s, "reward": s / STEPS, "reward_std": 0.3,
            "frac_reward_zero_std": 0.25, "clip_ratio/low_mean": 0.0, "clip_ratio/high_mean": 0.01,
            "clip_ratio/region_mean": 0.01, "completions/mean_length": 80.0,
            "sampling/sampling_logp_difference/mean": 0.003, "sampling/sampling_logp_difference/max": 0.2,
        })  # fmt: skip
        if s % 10 == 0:
            history.append({"step": s, "epoch": s / 100, "eval_reward": 0.4, "eval_loss": 0.2})
    return history


def write_trainer_state(folder: Path, steps: range) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    state = {"global_step": steps[-1], "log_history": trl_history(steps), "max_steps": STEPS}
    (folder / "trainer_state.json").write_text(json.dumps(state, indent=2))


def test_trl_output_dir_reads_newest_state(tmp_path):
    out = tmp_path / "grpo-out"
    write_trainer_state(out / "checkpoint-10", range(1, 11))
    write_trainer_state(out / "checkpoint-30", range(1, STEPS + 1))
    assert detect_format(str(out)) == "trl"
    _, df, info = import_twice(out, tmp_path / "runs")
    assert series(df, schema.ENTROPY_MEAN) == pytest.approx({s: entropy_at(s) for s in range(1, STEPS + 1)})
    assert series(df, schema.KL_REF)[10] == pytest.approx(0.02)
    assert series(df, schema.PRECISION_LOGP_DIFF_MEAN)[1] == 0.003  # a log-prob difference, not prob
    assert series(df, schema.ADV_ZERO_FRAC)[1] == 0.25
    assert series(df, schema.CLIP_FRAC_HIGH)[1] == 0.01
    assert series(df, "reward_std")[1] == 0.3  # its meaning changed across TRL versions: not reward/std
    assert schema.REWARD_STD not in set(df["key"])
    assert series(df, "eval/reward/mean") == {10: 0.4, 20: 0.4, 30: 0.4}
    assert info["source"]["trainer"] == "trl"
    assert "epoch" not in set(df["key"])


# ---- generic ----------------------------------------------------------------------------------------------


def test_csv_with_step_key_and_a_user_map(tmp_path):
    csv = tmp_path / "metrics.csv"
    lines = ["iteration,policy_entropy,note,score"] + [
        f"{s},{entropy_at(s)},ok,{s % 3 or ''}" for s in range(STEPS)
    ]
    csv.write_text("\n".join(lines) + "\n")
    user_map = tmp_path / "names.yaml"
    user_map.write_text("policy_entropy: entropy/mean\n")
    _, df, info = import_twice(csv, tmp_path / "runs", step_key="iteration", map_path=user_map)
    assert series(df, schema.ENTROPY_MEAN) == pytest.approx({s: entropy_at(s) for s in range(STEPS)})
    assert series(df, "score") == {s: float(s % 3) for s in range(STEPS) if s % 3}  # empty cells: not logged
    assert "note" not in set(df["key"])
    assert info["mapped_keys"] == {"policy_entropy": schema.ENTROPY_MEAN}


def test_generic_jsonl_and_a_changed_value_wins(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text(
        "".join(json.dumps({"global_step": s, "entropy/mean": 1.0, "tag": "x"}) + "\n" for s in range(5))
    )
    store = tmp_path / "runs"
    (run,) = import_source(str(log), store=store)
    log.write_text(
        "".join(json.dumps({"global_step": s, "entropy/mean": 1.0 + (s == 2)}) + "\n" for s in range(5))
    )
    (again,) = import_source(str(log), store=store)
    assert again.rows_written == 1  # only the changed value
    assert series(stored(store, run.run_id), schema.ENTROPY_MEAN) == {0: 1.0, 1: 1.0, 2: 2.0, 3: 1.0, 4: 1.0}


@pytest.mark.parametrize(
    "setup, args, message",
    [
        (None, ["missing.jsonl"], "no such file"),
        (
            ("bad.jsonl", '{"step": 1, "data": {"a": 1}}\nnot json\n{"step": 2, "data": {}}\n'),
            ["bad.jsonl"],
            "bad.jsonl:2",
        ),
        (("nostep.csv", "a,b\n1,2\n"), ["nostep.csv"], "no step column"),
        (("x.csv", "step,a\n1,2\n"), ["x.csv", "--format", "parquet"], "unknown format"),
        (("notes.txt", "hello\n"), ["notes.txt"], "cannot tell the format"),
        (("a.jsonl", '{"step": 1, "x": 1}\n'), ["a.jsonl", "--map", "nomap.yaml"], "cannot read name map"),
        (None, ["http://127.0.0.1:9/#exp"], "did not answer"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, monkeypatch, setup, args, message):
    monkeypatch.chdir(tmp_path)
    if setup:
        Path(setup[0]).write_text(setup[1])
    source, options = args[0], dict(zip(args[1::2], args[2::2], strict=True))
    options = {{"--format": "fmt", "--map": "map_path"}[k]: v for k, v in options.items()}
    with pytest.raises(UsageError, match=message) as err:
        import_source(source, store="runs", **options)
    assert len(str(err.value).splitlines()) == 1
    assert not Path("runs").exists()


def test_importing_onto_another_run_is_refused(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    for f in (a, b):
        f.write_text('{"step": 1, "entropy/mean": 1.0}\n')
    (run,) = import_source(str(a), store=tmp_path / "runs", run_id="shared")
    with pytest.raises(UsageError, match="holds jsonl"):
        import_source(str(b), store=tmp_path / "runs", run_id="shared")
    assert np.array_equal(stored(tmp_path / "runs", "shared")["value"], [1.0])


# ---- names ------------------------------------------------------------------------------------------------


def test_shipped_names_are_ours_and_documented():
    mapper = KeyMapper()
    shipped = {(t, theirs, ours) for t, names in mapper.sections.items() for theirs, ours in names.items()}
    assert {ours for _, _, ours in shipped} <= set(schema.METRIC_KEYS) | set(schema.IMPORTED_KEYS)
    doc = (Path(__file__).resolve().parents[1] / "docs" / "import.md").read_text()
    assert set(re.findall(r"^\| (\w+) \| `([^`]+)` \| `([^`]+)` \|", doc, flags=re.M)) == shipped
    for trainer, names in mapper.signatures.items():  # a signature is one of the trainer's own names
        assert names <= set(mapper.sections[trainer]) | {"group_reward_std"}, (SIGNATURES, trainer)


def test_prefixes_and_user_map(tmp_path):
    user = tmp_path / "map.yaml"
    user.write_text("verl:\n  actor/entropy: my/entropy\nscore: reward/mean\n")
    mapper = KeyMapper(user)
    assert map_key(mapper.table("verl"), "train/actor/entropy") == "my/entropy"  # the user's word wins
    assert map_key(mapper.table(None), "eval/score") == "eval/reward/mean"  # a flat user map: every source
    assert map_key(mapper.table(None), "actor/entropy") == "actor/entropy"  # verl's names: verl's logs only
    assert map_key(mapper.table(None), "something/else") == "something/else"
    shipped = KeyMapper()
    assert map_key(shipped.table(None), "kl") == "kl"  # a generic kl: to what, nobody can tell
    assert map_key(shipped.table("trl"), "kl") == schema.KL_REF
    assert map_key(shipped.table("ms-swift"), "kl") == schema.KL_REF  # ms-swift logs under TRL's names
    assert map_key(shipped.table(None), "reward_mean") == schema.REWARD_MEAN
    assert shipped.trainer(["actor/entropy", "actor/pg_loss", "reward"]) == "verl"
    assert shipped.trainer(["kl", "reward", "entropy"]) is None  # TRL and OpenRLHF alike: no signature


# ---- follow -----------------------------------------------------------------------------------------------


def wait_for(condition, what: str, timeout_s: float = 60.0):
    """Poll `condition` until it returns something truthy; fail after the deadline (no fixed sleeps)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class Follower:
    """follow_source on a thread, with a count of its polls so a test can wait for 'polled since'."""

    def __init__(self, source: Path, store: Path) -> None:
        self.polls, self.result, self.error = 0, None, None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(source, store), daemon=True)
        self.thread.start()

    def _run(self, source: Path, store: Path) -> None:
        try:
            self.result = follow_source(
                str(source), store=store, stop=self.stop, interval_s=0.02, on_poll=self._poll
            )
        except BaseException as err:  # surfaced by the test
            self.error = err

    def _poll(self, runs) -> None:
        self.polls += 1

    def polled_twice(self) -> None:
        seen = self.polls
        wait_for(lambda: self.polls >= seen + 2 or self.error, "two more polls")

    def finish(self):
        self.stop.set()
        self.thread.join(timeout=60)
        assert self.error is None, self.error
        return self.result


def entropy_curve(step: int) -> float:
    return 1.0 if step < 10 else 0.2  # collapses at step 10


@pytest.mark.slow
def test_follow_tensorboard_and_jsonl_every_step_once_and_collapse_fires(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    store = tmp_path / "runs"
    tb_dir, jsonl = tmp_path / "tb", tmp_path / "live.jsonl"
    tb = SummaryWriter(str(tb_dir))
    tb.add_scalar("actor/entropy", entropy_curve(0), 0)
    tb.flush()
    jsonl.write_text(json.dumps({"step": 0, "data": {"actor/entropy": entropy_curve(0)}}) + "\n")
    followers = {"tb": Follower(tb_dir, store), "jsonl": Follower(jsonl, store)}
    run_ids = {
        name: default_run_id(open_sources(str(src))[0]) for name, src in (("tb", tb_dir), ("jsonl", jsonl))
    }
    for follower in followers.values():
        wait_for(lambda f=follower: f.polls or f.error, "the first import")
    for rid in run_ids.values():
        assert json.loads((store / rid / "run.json").read_text())["status"] == "running"

    def entropy_steps(rid: str) -> list[int]:
        return sorted(series(stored(store, rid), schema.ENTROPY_MEAN))

    for step in range(1, 30):
        tb.add_scalar("actor/entropy", entropy_curve(step), step)
        tb.flush()
        with jsonl.open("a") as f:
            f.write(json.dumps({"step": step, "data": {"actor/entropy": entropy_curve(step)}}) + "\n")
        if step % 10 == 0:  # check arrival while the logs are live
            for rid in run_ids.values():
                wait_for(lambda rid=rid, s=step: entropy_steps(rid)[-1:] == [s], f"step {step} in {rid}")
    # a line in progress waits for its newline
    with jsonl.open("a") as f:
        f.write('{"step": 30, "data": {"actor/en')
    followers["jsonl"].polled_twice()
    assert 30 not in entropy_steps(run_ids["jsonl"])
    with jsonl.open("a") as f:
        f.write('tropy": 0.2}}\n')
    wait_for(lambda: entropy_steps(run_ids["jsonl"])[-1:] == [30], "the completed line")
    wait_for(lambda: entropy_steps(run_ids["tb"])[-1:] == [29], "the last TensorBoard step")
    tb.close()

    # the collapse alert fires on the imported runs, from the store, as for a native run
    lines: list[str] = []
    assert watch(store, once=True, out=lines.append) == 1
    for rid in run_ids.values():
        assert any(line.startswith(f"{rid} ") and "FIRED" in line and "collapse" in line for line in lines), (
            lines
        )

    results = {name: f.finish() for name, f in followers.items()}
    for name, rid in run_ids.items():
        info = json.loads((store / rid / "run.json").read_text())
        assert info["status"] == "finished"
        last = 30 if name == "jsonl" else 29
        assert entropy_steps(rid) == list(range(last + 1))
        assert raw_row_count(store, rid) == last + 1  # every step once: no row written twice
        assert results[name][0].rows_written == last + 1


# ---- W&B --------------------------------------------------------------------------------------------------


def test_wandb_offline_run(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    run = wandb.init(mode="offline", dir=str(tmp_path), project="gsm8k", name="openrlhf-grpo",
                     config={"actor_learning_rate": 5e-7, "n_samples_per_prompt": 8})  # fmt: skip
    for step in range(1, STEPS + 1):  # OpenRLHF's W&B logger: train/ keys, train/global_step as the step
        wandb.log({"train/policy_loss": 0.1, "train/kl": 0.001 * step, "train/reward": step / STEPS,
                   "train/group_reward_std": 0.2, "train/global_step": step * 2})  # fmt: skip
    wandb.log({"eval/reward": 0.5, "eval/global_step": 60})
    run.finish()
    (file,) = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    # a record cut short at the end (a run still writing) is left for later, not an error
    with file.open("ab") as f:
        f.write(b"\x01\x02\x03\x04\x50\x00\x01partial")
    assert detect_format(str(tmp_path / "wandb")) == "wandb"
    run_id, df, info = import_twice(tmp_path / "wandb", tmp_path / "runs")
    assert run_id.startswith("wandb-openrlhf-grpo-")
    assert series(df, schema.KL_REF) == pytest.approx({2 * s: 0.001 * s for s in range(1, STEPS + 1)})
    assert series(df, schema.LOSS_POLICY)[2] == 0.1
    assert series(df, "group_reward_std")[2] == 0.2  # the mean within-group std: not reward/std
    assert series(df, "eval/reward/mean") == {60: 0.5}
    assert info["config"] == {"actor_learning_rate": 5e-7, "n_samples_per_prompt": 8}
    assert info["source"]["project"] == "gsm8k" and info["source"]["trainer"] == "openrlhf"


def test_mlflow_file_store_read_directly(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 writes file stores only when asked
    root = tmp_path / "mlruns"
    client = MlflowClient(tracking_uri=f"file://{root}")
    run = client.create_run(client.create_experiment("verl-sweep"), run_name="ppo")
    client.log_param(run.info.run_id, "algo", "ppo")
    for step in range(STEPS):
        client.log_metric(run.info.run_id, "actor/entropy", entropy_at(step), step=step)
    client.log_metric(run.info.run_id, "actor/pg_clipfrac_lower", 0.01, step=3)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")  # the import reads the files itself
    assert detect_format(str(root)) == "mlflow"
    run_id, df, info = import_twice(root, tmp_path / "runs")
    assert series(df, schema.ENTROPY_MEAN) == pytest.approx({s: entropy_at(s) for s in range(STEPS)})
    assert series(df, schema.CLIP_DUAL_FRAC) == {3: 0.01}
    assert info["config"] == {"algo": "ppo"} and info["source"]["experiment"] == "verl-sweep"


# ---- command line -----------------------------------------------------------------------------------------


def test_cli_import_is_torch_free_and_bad_input_exits_2(tmp_path):
    import subprocess
    import sys

    tb_log(tmp_path / "tb", range(5))
    store = tmp_path / "runs"
    code = (
        "import sys; from trainer.cli import main; "
        f"rc = main(['import', {str(tmp_path / 'tb')!r}, '--store', {str(store)!r}]); "
        "assert 'torch' not in sys.modules, 'import pulled in torch'; sys.exit(rc)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "tensorboard-tb-" in done.stdout and "20 rows read, 20 new" in done.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "trainer.cli", "import", str(tmp_path / "nope.jsonl"), "--store", str(store)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        f"entropyscope: error: no such file or directory: {tmp_path / 'nope.jsonl'}"
    ]


def test_sigterm_ends_a_follow_as_finished(tmp_path):
    """A follower stopped by SIGTERM (a service manager, `kill`) marks its run finished, as Ctrl-C does."""
    import signal
    import subprocess
    import sys

    log, store = tmp_path / "live.jsonl", tmp_path / "runs"
    log.write_text("".join(json.dumps({"step": s, "data": {"actor/entropy": 1.0}}) + "\n" for s in range(3)))
    cmd = [sys.executable, "-m", "trainer.cli", "import", str(log), "--follow", "--store", str(store)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        run_json = wait_for(lambda: next(store.glob("*/run.json"), None), "the follower's run", 120)
        wait_for(lambda: json.loads(run_json.read_text()).get("status") == "running", "status running", 120)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert json.loads(run_json.read_text())["status"] == "finished"
    assert "3 rows read" in out
    runs = subprocess.run([sys.executable, "-m", "trainer.cli", "runs", "--store", str(store)], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    header, row = runs.stdout.splitlines()[:2]
    assert "source" in header.split() and row.split()[header.split().index("source")] != "entropyscope", (
        runs.stdout
    )


def test_control_refuses_an_imported_run(tmp_path):
    from analysis.liveness import control_refusal

    log = tmp_path / "live.jsonl"
    log.write_text('{"step": 1, "data": {"actor/entropy": 1.0}}\n')
    stop = threading.Event()
    stop.set()  # import, then stop at the first poll: the run was marked running meanwhile
    (run,) = follow_source(str(log), store=tmp_path / "runs", stop=stop)
    info = json.loads((tmp_path / "runs" / run.run_id / "run.json").read_text())
    refusal = control_refusal(run.run_id, info | {"status": "running", "heartbeat": time.time()}, time.time())
    assert refusal and "imported from verl" in refusal
