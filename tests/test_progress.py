"""Progress output: a bar on a terminal, plain lines in a log (no carriage-return frames piling up); the console
of a command: its first line at once, our warnings as one line, library warnings and bars kept out."""

import io

import pytest
from test_cli import entropyscope
from test_import import write_verl_jsonl

from trainer import console
from trainer.config import load_config
from trainer.loop import train
from trainer.progress import PLAIN_LINES, Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def run_through(progress: Progress) -> None:
    for step in progress:
        if step == 5:
            progress.write("alert: something")
        progress.report(step, entropy=f"{1 / step:.3f}")
    progress.close()


def test_off_a_terminal_prints_a_plain_line_every_few_steps():
    out = io.StringIO()
    run_through(Progress(range(1, 101), "run-a", file=out))
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    steps = [int(line.split("step ")[1].split("/")[0]) for line in lines if "step " in line]
    assert steps == [1, *range(100 // PLAIN_LINES, 101, 100 // PLAIN_LINES)]  # the first step at once
    assert lines[-1] == "run-a: step 100/100 entropy 0.010"
    assert "alert: something" in lines


def test_a_resumed_short_run_still_ends_with_its_last_step():
    out = io.StringIO()
    run_through(Progress(range(8, 11), "r", file=out))  # resumed at step 7, three steps left
    assert out.getvalue().splitlines() == ["r: step 8/10 entropy 0.125", "r: step 9/10 entropy 0.111",
                                           "r: step 10/10 entropy 0.100"]  # fmt: skip


def test_on_a_terminal_draws_a_bar_and_disabled_prints_only_messages():
    tty = Terminal()
    run_through(Progress(range(1, 11), "run-b", file=tty))
    assert "\r" in tty.getvalue() and "run-b" in tty.getvalue() and "alert: something" in tty.getvalue()
    quiet = io.StringIO()
    run_through(Progress(range(1, 11), "run-c", enabled=False, file=quiet))
    assert quiet.getvalue() == "alert: something\n"


def test_training_into_a_pipe_prints_plain_lines(tmp_path, tiny_overrides, capsys):
    train(load_config(None, tiny_overrides), tmp_path, run_id="piped", progress=True)
    out = capsys.readouterr().out
    assert "\r" not in out
    assert [line.split(" reward")[0] for line in out.splitlines() if line.startswith("piped:")] == [
        "piped: step 1/3",
        "piped: step 2/3",
        "piped: step 3/3",
    ]


def test_only_our_own_warnings_reach_the_console():
    own = str(console.Path(console.__file__).parent / "loop.py")
    library = "/usr/lib/python3/site-packages/transformers/modeling_utils.py"
    out = io.StringIO()
    for message, category, filename in (
        ("`torch_dtype` is deprecated! Use `dtype` instead!", FutureWarning, library),
        ("a generation flag is ignored", UserWarning, library),
        ("deprecated call, attributed to our line by stacklevel", FutureWarning, own),
        ("skipping unreadable segment x.parquet", RuntimeWarning, own),
    ):
        console.show_warning(message, category, filename, 1, file=out)
    assert out.getvalue() == "entropyscope: warning: skipping unreadable segment x.parquet\n"


@pytest.mark.slow
def test_train_says_what_it_does_first_and_prints_no_library_noise(tmp_path, tiny_overrides):
    """checkpoint_every=1: transformers' save_pretrained draws a "Writing model shards" bar at each checkpoint."""
    sets = [a for o in tiny_overrides for a in ("--set", o)]
    proc = entropyscope("train", *sets, "--store", str(tmp_path / "s"), "--run-id", "quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("train: loading model tiny-qwen2 for 3 steps of grpo"), lines[0]
    assert lines[1].startswith("quiet: step 1/3")  # the first step is reported as it ends
    assert proc.stderr == "", proc.stderr  # no FutureWarning, no "Writing model shards" bar, no log line


def test_import_export_and_compact_say_what_they_do_first(tmp_path):
    log, store = tmp_path / "grpo.jsonl", str(tmp_path / "s")
    write_verl_jsonl(log, range(1, 21))
    done = entropyscope("import", str(log), "--store", store, "--run-id", "v")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == f"import: reading {log} into {store} ..."
    out = tmp_path / "v.csv"
    for args, first in (
        (("export", "v", "--to", str(out)), f"export: run v of {store} to {out} ..."),
        (("compact", "v"), f"compact: v in {store} ..."),
    ):
        proc = entropyscope(*args, "--store", store)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines()[0] == first
