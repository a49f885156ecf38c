"""Faults outside the segments: a full or read-only store (simulated, and one real small tmpfs), damaged
checkpoints, leftover checkpoint temp dirs and a run.json of garbage. The trainer stops with one line, the run
shows as failed, and `--resume` continues from the last complete checkpoint with every step once."""

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from analysis.control import APPLIED, read_version, write_control
from analysis.errors import UsageError
from analysis.schema import ENTROPY_MEAN
from analysis.store_reader import StoreReader
from analysis.store_writer import RunWriter, read_run_json
from trainer.checkpoint import MANIFEST, STATE_FILE, checkpoint_problem, resume_point
from trainer.cli import main

RUN = "r"


def train_cli(store: Path, overrides: list[str], *extra: str) -> int:
    sets = [a for o in overrides for a in ("--set", o)]
    return main(["train", "--store", str(store), "--run-id", RUN, *sets, "--set", "threads=1", *extra])


def error_lines(err: str) -> list[str]:
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("entropyscope: error:")]


def logged_steps(store: Path) -> list[int]:
    reader = StoreReader(store)
    try:
        df = reader.scalars([RUN], [ENTROPY_MEAN])
    finally:
        reader.close()
    return sorted(df["step"].tolist())


def leftovers(run_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob(".*") if ".tmp" in p.name)


# ---- disk full / read-only ----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_store_fault_stops_with_one_line_and_the_last_checkpoint_resumes(
    tmp_path, tiny_overrides, monkeypatch, capsys, code
):
    overrides = [*tiny_overrides, "steps=6", "checkpoint_every=2"]
    real = pq.write_table

    def fails_from_step_3(table, where, **kw):  # what a disk that fills up during step 3 does to segments
        if "step" in table.column_names and pc.max(table["step"]).as_py() >= 3:
            raise OSError(code, "Error writing bytes to file")  # pyarrow's error names no file
        return real(table, where, **kw)

    with monkeypatch.context() as m:
        m.setattr(pq, "write_table", fails_from_step_3)
        assert train_cli(tmp_path, overrides) == 1
    (line,) = error_lines(capsys.readouterr().err)
    assert line.startswith(
        f"entropyscope: error: run r stopped: {os.strerror(code)} writing {tmp_path / RUN}"
    )
    assert "continue from step_2 with `entropyscope train CONFIG --resume --run-id r`" in line
    run_dir = tmp_path / RUN
    assert read_run_json(run_dir)["status"] == "failed"
    assert leftovers(run_dir) == []
    assert logged_steps(tmp_path) == [1, 2]  # flushed before step_2's checkpoint was written

    assert train_cli(tmp_path, overrides, "--resume") == 0
    assert logged_steps(tmp_path) == [1, 2, 3, 4, 5, 6]
    assert read_run_json(run_dir)["status"] == "finished"


def test_other_commands_on_a_read_only_store_say_so_in_one_line(tmp_path, monkeypatch, capsys):
    import analysis.atomic

    writer = RunWriter(tmp_path, "live", {"algo": "grpo"})  # running, fresh heartbeat: control accepts it

    def read_only(path, obj):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(analysis.atomic, "write_json_atomic", read_only)  # control imports it when it writes
    code = main(["control", "live", "--store", str(tmp_path), "--set", "lr=0.0005", "--timeout", "0"])
    assert code == 1
    (line,) = error_lines(capsys.readouterr().err)
    assert line == (
        f"entropyscope: error: Read-only file system writing {tmp_path / 'live' / 'control.json'}; "
        "free space or make it writable"
    )
    writer.close()


def _mount_tmpfs(where: Path, size: str) -> None:
    where.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)


@pytest.mark.slow
@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("mount"), reason="mounts a tmpfs"
)
def test_a_real_full_filesystem(tmp_path, tiny_overrides, capsys):
    """A 4 MiB tmpfs fills during the third checkpoint (1.7 MB each): torch.save then raises RuntimeError and
    safetensors its own error, so the trainer asks the filesystem; after it grows, the run resumes."""
    fs = tmp_path / "fs"
    try:
        _mount_tmpfs(fs, "4m")
    except subprocess.CalledProcessError:
        pytest.skip("cannot mount a tmpfs here")
    try:
        overrides = [*tiny_overrides, "steps=6", "checkpoint_every=1"]
        assert train_cli(fs, overrides) == 1
        (line,) = error_lines(capsys.readouterr().err)
        assert f"No space left on device writing {fs / RUN / 'checkpoints'}/step_" in line
        run_dir = fs / RUN
        done = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
        assert done == ["step_1", "step_2"]  # no half-written step_3, no temp dir holding the space
        assert read_run_json(run_dir)["status"] == "failed"
        subprocess.run(["mount", "-o", "remount,size=64m", str(fs)], check=True)
        assert train_cli(fs, overrides, "--resume") == 0
        assert logged_steps(fs) == [1, 2, 3, 4, 5, 6]
        assert leftovers(run_dir) == []
    finally:
        subprocess.run(["umount", str(fs)], check=False)


# ---- damaged checkpoints ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A 3-step run with a checkpoint per step, trained once; tests damage copies of it."""
    from conftest import TINY

    store = tmp_path_factory.mktemp("trained")
    assert train_cli(store, TINY) == 0
    return store / RUN


@pytest.fixture
def run_copy(trained, tmp_path) -> Path:
    shutil.copytree(trained, tmp_path / RUN)
    return tmp_path / RUN


def ckpt(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step_{step}"


@pytest.mark.slow
def test_complete_checkpoints_have_a_manifest_of_their_files(run_copy):
    listed = json.loads((ckpt(run_copy, 3) / MANIFEST).read_text())["files"]
    assert {STATE_FILE, "config.json", "model.safetensors"} <= set(listed)
    assert checkpoint_problem(ckpt(run_copy, 3)) is None
    assert resume_point(run_copy)[0] == ckpt(run_copy, 3)


@pytest.mark.slow
@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda d: (d / "model.safetensors").unlink(), "step_3 lacks model.safetensors"),
        (lambda d: os.truncate(d / STATE_FILE, 100), f"step_3 is damaged: {STATE_FILE} has 100 bytes of "),
        (lambda d: (d / MANIFEST).write_text("{"), f"step_3 has an unreadable {MANIFEST}"),
        (
            lambda d: (d / STATE_FILE).write_bytes(b"x" * (d / STATE_FILE).stat().st_size),
            f"step_3 has an unreadable {STATE_FILE}",
        ),
    ],
    ids=["missing-file", "truncated", "bad-manifest", "garbage-state"],
)
def test_resume_falls_back_past_a_damaged_checkpoint_naming_what_is_wrong(run_copy, damage, problem):
    damage(ckpt(run_copy, 3))
    with pytest.warns(RuntimeWarning, match="resuming r from step_2: skipped damaged ") as caught:
        found, state = resume_point(run_copy)
    assert found == ckpt(run_copy, 2) and state["step"] == 2
    assert len(caught) == 1 and problem in str(caught[0].message)


@pytest.mark.slow
def test_no_usable_checkpoint_is_one_line_and_exit_2(run_copy, tiny_overrides, capsys):
    for step in (1, 2, 3):
        (ckpt(run_copy, step) / "config.json").unlink()
    with pytest.raises(UsageError, match=r"no usable checkpoint .* \(step_3 lacks config.json; step_2 lacks"):
        resume_point(run_copy)
    assert train_cli(run_copy.parent, tiny_overrides, "--resume") == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert "cannot resume r: no usable checkpoint" in line and "step_1 lacks config.json" in line


@pytest.mark.slow
def test_resume_removes_a_killed_save_and_continues_from_the_previous_checkpoint(run_copy, tiny_overrides):
    """A save killed before its rename leaves only a temp dir; the resume deletes it and goes on from the last
    complete checkpoint, re-running the steps after it (each step shows once)."""
    shutil.rmtree(ckpt(run_copy, 3))
    partial = run_copy / "checkpoints" / ".step_3.tmp-99999"
    shutil.copytree(ckpt(run_copy, 2), partial)
    (run_copy / "run.json").write_text("{garbage")
    with pytest.warns(RuntimeWarning, match=r"skipping unreadable .*run\.json \(JSONDecodeError"):
        assert train_cli(run_copy.parent, tiny_overrides, "--resume") == 0
    assert not partial.exists() and ckpt(run_copy, 3).is_dir()
    assert logged_steps(run_copy.parent) == [1, 2, 3]
    assert read_run_json(run_copy)["status"] == "finished"


@pytest.mark.slow
def test_the_cli_prints_a_skipped_checkpoint_as_one_warning_line(run_copy, tiny_overrides):
    (ckpt(run_copy, 3) / "model.safetensors").unlink()
    sets = [a for o in [*tiny_overrides, "threads=1"] for a in ("--set", o)]
    cmd = [
        sys.executable,
        "-m",
        "trainer.cli",
        "train",
        "--store",
        str(run_copy.parent),
        "--run-id",
        RUN,
        *sets,
    ]
    proc = subprocess.run(
        [*cmd, "--resume"], capture_output=True, text=True, cwd=Path(__file__).parents[1], timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    warned = [line for line in proc.stderr.splitlines() if "warning" in line.lower()]
    assert warned == [
        "entropyscope: warning: resuming r from step_2: skipped damaged step_3 lacks model.safetensors"
    ]


def test_garbage_run_json_is_skipped_with_one_warning_naming_it(tmp_path):
    run_dir = tmp_path / "bad"
    run_dir.mkdir()
    (run_dir / "run.json").write_bytes(b"\xff\xfe not json")
    with pytest.warns(
        RuntimeWarning, match=rf"skipping unreadable {run_dir / 'run.json'} \(UnicodeDecodeError"
    ) as caught:
        assert read_run_json(run_dir) is None
        assert read_run_json(run_dir) is None  # the same file again: no second warning
    assert len(caught) == 1
    (run_dir / "run.json").write_text("[1, 2]")
    with pytest.warns(RuntimeWarning, match="a JSON list, not an object") as caught:
        read_run_json(run_dir)
    assert len(caught) == 1
    assert read_run_json(tmp_path / "missing") is None  # absent is not damaged: no warning


def test_control_after_a_garbage_control_json_numbers_past_what_the_trainer_saw(tmp_path):
    """Numbering from 0 would make the next version stale to a trainer that applied version 3."""
    writer = RunWriter(tmp_path, "live", {"algo": "grpo"})
    writer.log_event(5, APPLIED, "control v3 applied", payload={"version": 3})
    path = tmp_path / "live" / "control.json"
    path.write_text("{garbage")
    with pytest.warns(RuntimeWarning, match=rf"skipping unreadable {path} \(JSONDecodeError") as caught:
        assert write_control(tmp_path / "live", {"target_entropy": 0.5}) == 4
    assert len(caught) == 1 and str(caught[0].message).endswith("numbering after version 3")
    assert read_version(tmp_path / "live") == 4
    writer.close()
