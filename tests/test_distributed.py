"""Two CPU processes (gloo) train what one process trains: FSDP2 (killed and resumed) and DDP runs of the same
global batch match a single-process run step by step and in their final weights, with a control file that
every rank applies at the same step; bf16_fixed under FSDP2 is exactly on-policy."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from analysis import schema
from analysis.control import write_control
from analysis.store_reader import StoreReader
from trainer.checkpoint import checkpoint_problem
from trainer.config import load_config
from trainer.loop import train
from trainer.models import load_policy

STEPS = 3
OVERRIDES = [
    f"steps={STEPS}",
    "prompts_per_step=4",
    "group_size=4",
    "warmup_steps=40",
    "checkpoint_every=1",
    "minibatches=2",
    "threads=1",
    "alerts=off",
    "lr=0.001",
    "controller=entropy_bonus",  # its loss term differentiates the entropy: the assembled entropy's path too
]
KEYS = [schema.ENTROPY_MEAN, schema.LOSS_POLICY, schema.REWARD_MEAN, schema.GRAD_NORM]
# lr from step 2 on: a rank that applied it at another step (or not at all) moves its shard differently.
CONTROL = {"lr": 0.003}


def launch(store, run_id, extra, resume=False) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "trainer.cli", "train", "--nproc", "2", "--store", str(store)]
    cmd += ["--run-id", run_id, *(["--resume"] if resume else [])]
    cmd += [f"--set={kv}" for kv in [*OVERRIDES, *extra]]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return subprocess.Popen(
        cmd, cwd=root, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def finish(proc: subprocess.Popen) -> None:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out.decode()[-3000:]


def kill_after_checkpoint(proc: subprocess.Popen, ckpt) -> None:
    """SIGKILL the whole job once step_N is complete (every rank and the launcher)."""
    deadline = time.monotonic() + 240
    while not (ckpt.is_dir() and checkpoint_problem(ckpt) is None):
        assert proc.poll() is None, proc.communicate()[0].decode()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def metrics(store, run_id) -> dict[str, list[float]]:
    reader = StoreReader(store)
    df = reader.scalars([run_id], KEYS)
    out = {k: df[df["key"] == k].sort_values("step")["value"].tolist() for k in KEYS}
    assert all(len(v) == STEPS for v in out.values()), out  # each step once, a resumed one too
    return out


def weights(store, run_id) -> dict[str, torch.Tensor]:
    model, _ = load_policy(str(store / run_id / "checkpoints" / f"step_{STEPS}"), seed=0)
    return model.state_dict()


@pytest.mark.slow
def test_two_processes_train_what_one_process_trains(tmp_path):
    for run_id in ("one", "fsdp2", "ddp"):
        (tmp_path / run_id).mkdir()
        write_control(tmp_path / run_id, CONTROL)  # read at step 1, in force from step 2
    fsdp2 = launch(tmp_path, "fsdp2", ["dist=fsdp2"])
    kill_after_checkpoint(fsdp2, tmp_path / "fsdp2" / "checkpoints" / "step_1")
    ddp = launch(tmp_path, "ddp", ["dist=ddp"])
    bf16 = launch(tmp_path, "bf16", ["dist=fsdp2", "precision=bf16_fixed", "steps=1", "checkpoint_every=0"])
    train(load_config(None, OVERRIDES), tmp_path, run_id="one", progress=False)
    finish(ddp)
    finish(bf16)
    finish(launch(tmp_path, "fsdp2", ["dist=fsdp2"], resume=True))

    reader = StoreReader(tmp_path)
    # bf16_fixed under FSDP2 (bf16 layers, fp32 root with the head): old and new log-probs share one path.
    prec = reader.scalars(["bf16"], [schema.RATIO_ONPOLICY_DEV, schema.PRECISION_PEARSON]).set_index("key")
    assert prec.loc[schema.RATIO_ONPOLICY_DEV, "value"] == 0.0
    assert 0.99 < prec.loc[schema.PRECISION_PEARSON, "value"] <= 1.0  # finite: no NaN from the bf16 cast
    resumed = reader.events("fsdp2", kinds=["resumed"])
    assert len(resumed) == 1 and resumed["step"].iloc[0] < STEPS  # the kill landed mid-run
    for run_id in ("one", "fsdp2", "ddp"):
        applied = reader.events(run_id, kinds=["control_applied"])
        assert applied["step"].tolist() == [1], run_id
    ref, ref_w = metrics(tmp_path, "one"), weights(tmp_path, "one")
    first, _ = load_policy(str(tmp_path / "one" / "checkpoints" / "step_1"), seed=0)
    assert any(not torch.equal(first.state_dict()[k], v) for k, v in ref_w.items())  # the policy moved
    for run_id in ("fsdp2", "ddp"):
        got = metrics(tmp_path, run_id)
        for key in KEYS:
            assert got[key] == pytest.approx(ref[key], abs=1e-5), (run_id, key)
        for name, value in weights(tmp_path, run_id).items():
            assert torch.allclose(value, ref_w[name], atol=1e-5, rtol=0), (run_id, name)


def test_a_minibatch_smaller_than_the_process_count_is_refused():
    from analysis.errors import UsageError
    from trainer.distributed import check_batch

    check_batch(16, 8, 2)
    with pytest.raises(UsageError, match="cannot be split over 4 processes"):
        check_batch(16, 8, 4)
