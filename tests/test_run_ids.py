"""Hostile run ids and links: no command, reader or writer reads or writes outside the store (issue 17)."""

import os
import time
from pathlib import Path

import pytest

from analysis import run_ids
from analysis.errors import UsageError
from analysis.importers.importer import import_source
from analysis.store_reader import StoreReader
from analysis.store_writer import RunWriter
from trainer import cli

CONFIG = {
    "algo": "grpo",
    "controller": "none",
    "precision": "fp32",
    "model": "tiny-qwen2",
    "task": "digit_sum",
}
# Ids that name something other than one folder of the store ("linked" is a run linked to outside it).
BAD_IDS = ["../x", "../outside/secret", "/tmp/x", "a/b", "a\\b", ".", "..", ".hidden", "a\x00b", "a\nb",
           "a\rb", "x" * 201, "", "linked"]  # fmt: skip
GOOD_IDS = ["grpo-none-20261124-120000-ab12", "run_1.v2", "Run mit Ümlaut", "<b>bold<b>"]


def make_run(store: Path, run_id: str, status: str = "running") -> Path:
    with RunWriter(store, run_id, CONFIG) as w:
        for step in range(3):
            w.log_scalars(step, {"entropy/mean": 1.0 - 0.1 * step})
        w.heartbeat(2, force=True)
    if status == "running":  # the control command only writes to a run whose trainer is alive
        info = (store / run_id / "run.json").read_text().replace('"finished"', '"running"')
        (store / run_id / "run.json").write_text(info)
    return store / run_id


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under root with its size and mtime: equal snapshots mean nothing was written there."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            st = os.lstat(Path(dirpath) / name)
            out[str(Path(dirpath, name).relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture
def hostile(tmp_path: Path) -> tuple[Path, Path]:
    """A store with one real run, a run linked to a run outside it, and a table folder linked outside."""
    store, outside = tmp_path / "store", tmp_path / "outside"
    make_run(store, "real")
    make_run(outside, "secret")
    (store / "linked").symlink_to(outside / "secret")
    make_run(store, "tablelink")
    (store / "tablelink" / "events").symlink_to(outside / "secret" / "steps")
    return store, outside


# ---- the rule -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("run_id", [i for i in BAD_IDS if i != "linked"])
def test_bad_ids_are_refused_with_the_reason(run_id: str) -> None:
    assert run_ids.run_id_problem(run_id)
    with pytest.raises(UsageError, match="invalid run id") as err:
        run_ids.check_run_id(run_id)
    assert "\n" not in str(err.value) and "\x00" not in str(err.value)


@pytest.mark.parametrize("run_id", GOOD_IDS)
def test_plain_names_are_run_ids(run_id: str, tmp_path: Path) -> None:
    assert run_ids.run_id_problem(run_id) is None
    assert run_ids.run_dir(tmp_path, run_id) == tmp_path / run_id


def test_links_out_of_the_store_are_refused_links_inside_are_not(hostile: tuple[Path, Path]) -> None:
    store, outside = hostile
    with pytest.raises(UsageError, match="symbolic link to .*outside the store"):
        run_ids.run_dir(store, "linked")
    with pytest.raises(UsageError, match="tablelink/events is a symbolic link"):
        run_ids.run_dir(store, "tablelink")
    (store / "alias").symlink_to(store / "real")  # a link that stays in the store is a run like any other
    assert run_ids.run_dir(store, "alias") == store / "alias"
    (store / "dangling").symlink_to(outside / "not-yet")  # a writer would create the folder outside
    with pytest.raises(UsageError, match="outside the store"):
        run_ids.run_dir(store, "dangling")
    (store / "loop").symlink_to(store / "loop")
    with pytest.raises(UsageError, match="outside the store"):
        run_ids.run_dir(store, "loop")


# ---- readers and writers --------------------------------------------------------------------------------


def test_readers_list_and_read_only_runs_inside_the_store(hostile: tuple[Path, Path]) -> None:
    store, outside = hostile
    (store / "a\nb").mkdir()
    (store / "a\nb" / "run.json").write_text("{}")
    reader = StoreReader(store)
    assert [d.name for d in reader.run_dirs()] == ["real"]
    assert reader.runs()["run_id"].tolist() == ["real"]
    for bad in BAD_IDS:
        assert reader.segment_files("steps", [bad]) == []
    assert reader.segment_files("steps", ["../outside/secret"]) == []
    assert reader.segment_files("steps", ["real"])  # the real run still reads
    assert reader.table("steps", ["linked"]).empty
    with pytest.raises(UsageError, match="unknown run 'linked'"):
        reader.run_info("linked")
    reader.close()


def test_token_texts_come_from_no_run_linked_out_of_the_store(hostile: tuple[Path, Path]) -> None:
    from analysis.dashboard_queries import find_tokenizer

    store, outside = hostile
    theirs = outside / "secret" / "checkpoints" / "step_1" / "tokenizer.json"
    theirs.parent.mkdir(parents=True)
    theirs.write_text("{}")  # same model as the store's run: a tokenizer the dashboard would borrow
    assert find_tokenizer(store, "real") is None
    ours = store / "real2" / "checkpoints" / "step_1" / "tokenizer.json"
    make_run(store, "real2")
    ours.parent.mkdir(parents=True)
    ours.write_text("{}")
    assert find_tokenizer(store, "real") == ours


def test_writers_refuse_before_touching_anything(hostile: tuple[Path, Path]) -> None:
    store, outside = hostile
    before = snapshot(outside)
    for bad in BAD_IDS:
        with pytest.raises(UsageError):
            RunWriter(store, bad, CONFIG)
        with pytest.raises(UsageError):
            RunWriter(store, bad, CONFIG, resume=True)
    with pytest.raises(UsageError):
        RunWriter(store, "tablelink", CONFIG, resume=True)
    assert snapshot(outside) == before
    assert not (store.parent / "x").exists()


def test_import_refuses_bad_run_ids_before_reading(hostile: tuple[Path, Path], tmp_path: Path) -> None:
    store, outside = hostile
    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 1, "entropy": 0.5}\n')
    before = snapshot(outside)
    for bad in BAD_IDS:
        with pytest.raises(UsageError, match="invalid run id|outside the store"):
            import_source(str(log), store=store, run_id=bad)
    assert snapshot(outside) == before and not (store.parent / "x").exists()


# ---- every command ----------------------------------------------------------------------------------------


def commands(store: Path, run_id: str, tmp_path: Path) -> dict[str, list[str]]:
    s = ["--store", str(store)]
    return {
        "train": ["train", "--run-id", run_id, "--set", "steps=1", "--set", "threads=1", *s],
        "train --resume": ["train", "--run-id", run_id, "--resume", "--set", "threads=1", *s],
        "control": ["control", run_id, "--set", "target_entropy=0.5", "--timeout", "0", *s],
        "export": ["export", run_id, "--to", str(tmp_path / "out.duckdb"), *s],
        "compact": ["compact", run_id, "--stale", "0", *s],
        "import": ["import", str(tmp_path / "log.jsonl"), "--run-id", run_id, *s],
    }


@pytest.mark.parametrize("name", ["train", "train --resume", "control", "export", "compact", "import"])
def test_every_command_refuses_bad_ids_with_one_line(
    name: str, hostile: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    store, outside = hostile
    (tmp_path / "log.jsonl").write_text('{"step": 1, "entropy": 0.5}\n')
    before, store_before = snapshot(outside), snapshot(store)
    for bad in BAD_IDS:
        started = time.monotonic()
        rc = cli.main(commands(store, bad, tmp_path)[name])
        err = capsys.readouterr().err
        assert rc == 2, (name, bad, err)
        assert err.count("\n") == 1 and err.startswith("entropyscope: error: "), (name, bad, err)
        assert "invalid run id" in err or "outside the store" in err, (name, bad, err)
        assert time.monotonic() - started < 5, "refused only after starting work"
    assert snapshot(outside) == before and snapshot(store) == store_before
    assert not (tmp_path / "out.duckdb").exists() and not (store.parent / "x").exists()


def test_runs_lists_only_runs_inside_the_store(
    hostile: tuple[Path, Path], capsys: pytest.CaptureFixture
) -> None:
    store, outside = hostile
    before = snapshot(outside)
    assert cli.main(["runs", "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert "real" in out and "linked" not in out and "secret" not in out and "tablelink" not in out
    assert snapshot(outside) == before


# ---- dashboard query parameters ---------------------------------------------------------------------------

URL_CASES = [  # (page, parameter): every page that takes run ids from the address
    ("run_detail", "run"),
    ("token_inspector", "run"),
    ("control", "run"),
    ("compare", "runs"),
    ("alerts", "runs"),
]


@pytest.mark.parametrize(("page", "param"), URL_CASES)
def test_dashboard_says_no_run_for_hostile_url_ids(
    page: str, param: str, hostile: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamlit.testing.v1 import AppTest

    from app.store import STORE_ENV

    store, outside = hostile
    before = snapshot(outside)
    monkeypatch.setenv(STORE_ENV, str(store))
    bad = ["../outside/secret", "linked", str(outside / "secret"), "a\nb", "tablelink"]
    at = AppTest.from_file(str(Path(cli.__file__).parents[1] / "app" / "main.py"), default_timeout=60).run()
    at.query_params[param] = bad if param == "runs" else bad[:1]
    at.switch_page(f"views/{page}.py")
    at.run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and f"`?{param}=` in the address names no run" in errors[0]
    assert "'../outside/secret'" in errors[0] and "\n" not in errors[0]
    if param == "runs":
        assert "'linked'" in errors[0] and "'a\\nb'" in errors[0] and "'tablelink'" in errors[0]
    picked = at.selectbox[0].value if param == "run" else at.multiselect[0].value
    assert picked in ("real", [], ["real"])  # the run inside the store, or nothing
    assert snapshot(outside) == before
