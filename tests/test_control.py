"""The control-file protocol (analysis/control.py), the `control` CLI, and a real trainer process that
rejects malformed control files with reasons, applies a valid one, and follows a new entropy target."""

import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch

from analysis.control import (
    LIVE_KEYS,
    ControlError,
    ControlWatcher,
    acting_keys,
    find_fate,
    parse_control,
    read_version,
    request_fates,
    validate_settings,
    write_control,
)
from analysis.store_reader import StoreReader
from analysis.store_writer import RunWriter
from trainer.cli import main
from trainer.config import TrainConfig
from trainer.controllers import build_controller
from trainer.controllers.repo import ladder_zeta
from trainer.live_control import apply_control, poll_control

REPO = Path(__file__).resolve().parents[1]


def doc(version, **settings):
    return json.dumps({"version": version, "settings": settings})


@pytest.mark.parametrize(
    "text,reason",
    [
        ("{not json", "bad JSON"),
        (doc(2, warp_speed=9), "unknown key 'warp_speed'"),
        (doc(2, target_entropy="high"), "key 'target_entropy': input should be a valid number"),
        (doc(2, eps_low=1.5), "key 'eps_low': input should be less than 1"),
        (doc(1, lr=1e-4), "stale version 1"),
        ("[1, 2]", "must be a JSON object"),
        (json.dumps({"settings": {"lr": 0.1}}), "key 'version': field required"),
    ],
)
def test_parse_rejects_with_reason(text, reason):
    with pytest.raises(ControlError, match=reason):
        parse_control(text, last_version=1)


def test_parse_accepts_and_reports_only_set_keys():
    d = parse_control(doc(3, target_entropy=1.8, schedule="od", lr=1e-4), last_version=2)
    assert d.version == 3 and d.changes() == {"target_entropy": 1.8, "schedule": "od", "lr": 1e-4}
    assert {"target_entropy", "schedule", "zeta_max", "eps_high", "lr"} <= set(LIVE_KEYS)
    with pytest.raises(ControlError, match="unknown key 'steps'"):
        validate_settings({"steps": 5})


def test_applied_gains_drive_the_live_controller_and_keep_its_state():
    """Gains set live rebuild the controller with them; its integral state carries over unchanged."""
    cfg = TrainConfig(controller="repo_r")
    ctrl = build_controller(cfg)
    for step in range(1, 4):
        ctrl.update(0.2, 1.0, step)  # entropy far below target: ζ climbs the ladder
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    p = types.SimpleNamespace(cfg=cfg, controller=ctrl, optimizer=optimizer)
    apply_control(p, parse_control(doc(2, zeta_kp=0.0, zeta_ki=0.5), 1).changes())
    assert (cfg.zeta_kp, cfg.zeta_ki, p.cfg.zeta_kp, p.cfg.zeta_ki) == (3.0, 2.0, 0.0, 0.5)
    with pytest.raises(
        ControlError, match="controller 'repo_r' does not use bonus_kp; keys that act on this run: "
    ):
        apply_control(p, {"bonus_kp": 0.2})
    live = p.controller
    assert (live.kp, live.ki, live.u_i) == (0.0, 0.5, ctrl.u_i)
    live.update(0.5, 1.0, 4)  # e = 0.5: integral +0.5 rung, no proportional offset
    assert live.u_i == pytest.approx(ctrl.u_i + 0.5 * 0.5) and live.value == pytest.approx(
        live.zmin * 2 ** (live.u_i - 1)
    )
    # A new ζ_min rescales the ladder: the integral keeps its ζ, not its rung.
    before = ladder_zeta(live.u_i, live.zmin)
    apply_control(p, {"zeta_min": 0.04})
    assert ladder_zeta(p.controller.u_i, 0.04) == pytest.approx(before)


def test_write_increments_version_atomically_and_watcher_sees_each_content_once(tmp_path):
    assert read_version(tmp_path) == 0
    w = ControlWatcher(tmp_path)
    assert w.poll() is None
    assert write_control(tmp_path, {"target_entropy": 1.0}) == 1
    assert write_control(tmp_path, {"target_entropy": 0.5}) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["control.json"]  # no temp files left
    got = w.poll()  # neither was read yet: both are judged, in order
    assert got.version == 2 and got.requests == ((1, {"target_entropy": 1.0}), (2, {"target_entropy": 0.5}))
    assert w.poll() is None  # unchanged file: judged once
    (tmp_path / "control.json").write_text(doc(2, lr=0.1))
    assert "stale version 2" in str(w.poll())
    with pytest.raises(ControlError, match="out of|less than or equal"):
        write_control(tmp_path, {"lr": 5})
    with pytest.raises(ControlError, match="nothing to set"):
        write_control(tmp_path, {})


def fake_run(controller="repo_r"):
    """What poll_control changes (config, controller, optimizer, overrides) and an event list as the writer."""
    cfg = TrainConfig(controller=controller)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    p = types.SimpleNamespace(cfg=cfg, controller=build_controller(cfg), optimizer=optimizer, overrides={})
    events = []
    writer = types.SimpleNamespace(
        log_event=lambda step, kind, message, **kw: events.append(
            {"step": step, "kind": kind, "message": message, "payload": json.loads(json.dumps(kw["payload"]))}
        )
    )
    return p, writer, events


def test_requests_written_within_one_step_are_all_applied_and_each_sender_told(tmp_path):
    """The single-slot bug: v1 (eps_high) then v2 (lr) before the trainer reads: v2 used to replace v1."""
    p, writer, events = fake_run()
    watcher = ControlWatcher(tmp_path)
    assert write_control(tmp_path, {"eps_high": 0.3}) == 1
    assert write_control(tmp_path, {"lr": 5e-4}) == 2
    on_disk = json.loads((tmp_path / "control.json").read_text())
    assert on_disk["settings"] == {"eps_high": 0.3, "lr": 5e-4}  # cumulative
    assert [r["version"] for r in on_disk["requests"]] == [1, 2]
    poll_control(writer, p, watcher, step=7)
    assert (p.cfg.eps_high, p.cfg.lr, p.optimizer.param_groups[0]["lr"]) == (0.3, 5e-4, 5e-4)
    assert p.overrides == {"eps_high": 0.3, "lr": 5e-4}
    [ack] = events
    assert ack["payload"]["version"] == 2 and ack["payload"]["includes"] == [1, 2]
    assert (
        ack["message"]
        == "control v2 (includes v1) applied from step 8: eps_high 0.2 -> 0.3, lr 0.001 -> 0.0005"
    )
    fates = request_fates(events)
    assert fates[1].line() == (
        "step 7: version 1 superseded by version 2, which includes it, in force from step 8: "
        "eps_high 0.2 -> 0.3, lr 0.001 -> 0.0005"
    )
    assert fates[2].outcome == "applied" and fates[2].line().startswith(
        "step 7: version 2 applied, in force from step 8"
    )


def test_a_rejected_request_is_dropped_without_taking_later_ones_with_it(tmp_path):
    """v1 is refused by the run's config; v2, written before and after the trainer said so, still applies, and
    the cumulative settings stop carrying v1's keys once its rejection is on record."""
    p, writer, events = fake_run()
    watcher = ControlWatcher(tmp_path)
    write_control(tmp_path, {"zeta_min": 5.0, "zeta_max": 1.0})  # valid keys, an invalid config
    write_control(tmp_path, {"target_entropy": 0.7})
    poll_control(writer, p, watcher, step=3)
    assert [e["kind"] for e in events] == ["control_rejected", "control_applied"]
    fates = request_fates(events)
    assert fates[1].outcome == "rejected" and "invalid with the run's config" in fates[1].detail
    assert fates[2].outcome == "applied" and p.cfg.target_entropy == 0.7 and p.cfg.zeta_max is None
    # The next sender builds on what the trainer acknowledged (read from the store's events).
    run = tmp_path / "store" / "r"
    with RunWriter(tmp_path / "store", "r", {"controller": "repo_r"}) as w:
        for e in events:
            w.log_event(e["step"], e["kind"], e["message"], payload=e["payload"])
        (run / "control.json").write_text((tmp_path / "control.json").read_text())
    assert write_control(run, {"lr": 1e-4}) == 3
    on_disk = json.loads((run / "control.json").read_text())
    assert on_disk["settings"] == {"target_entropy": 0.7, "lr": 1e-4}
    assert [r["version"] for r in on_disk["requests"]] == [3]


def test_keys_that_act_on_nothing_are_refused_naming_those_that_act(tmp_path):
    with pytest.raises(ControlError, match="controller 'none' does not use target_entropy; keys that act on "
                                           "this run: eps_low, eps_high, lr"):  # fmt: skip
        write_control(tmp_path, {"target_entropy": 0.5, "lr": 1e-4}, controller="none")
    assert not (tmp_path / "control.json").exists()
    assert set(acting_keys("adapo")) >= {
        "target_entropy",
        "adapo_gain",
        "lr",
    } and "zeta_max" not in acting_keys("adapo")
    # A file written by hand reaches the trainer, which refuses it the same way.
    p, writer, events = fake_run("none")
    (tmp_path / "control.json").write_text(doc(1, target_entropy=0.5))
    poll_control(writer, p, ControlWatcher(tmp_path), step=1)
    assert events[0]["kind"] == "control_rejected" and "does not use target_entropy" in events[0]["message"]
    assert p.cfg.target_entropy is None


def test_control_help_lists_live_keys_and_fixed_keys_are_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["control", "--help"])
    out = capsys.readouterr().out
    assert "live-tunable keys" in out and "repo_r, repo_d: zeta_min, zeta_max" in out
    write_run_json(tmp_path, "r", status="running", heartbeat=time.time())
    assert main(["control", "r", "--store", str(tmp_path), "--set", "steps=500"]) == 2
    err = capsys.readouterr().err
    assert "steps cannot change on a running trainer" in err and "unknown key" not in err


def write_run_json(store: Path, run_id: str, **info) -> Path:
    (store / run_id).mkdir(parents=True, exist_ok=True)
    (store / run_id / "run.json").write_text(json.dumps({"run_id": run_id, **info}))
    return store / run_id


def test_cli_bad_input_exits_2(tmp_path, capsys):
    assert main(["control", "nope", "--store", str(tmp_path), "--set", "lr=0.1"]) == 2
    write_run_json(tmp_path, "r", status="running", heartbeat=time.time())
    assert main(["control", "r", "--store", str(tmp_path), "--set", "bogus=1"]) == 2
    assert main(["control", "r", "--store", str(tmp_path), "--set", "lr"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("entropyscope: error:") for line in err)
    # A valid request nobody acknowledges times out with a non-zero code.
    assert main(["control", "r", "--store", str(tmp_path), "--set", "lr=0.1", "--timeout", "0.5"]) == 1


@pytest.mark.parametrize(
    ("info", "reason"),
    [
        ({"status": "finished", "heartbeat": 0.0}, "is finished"),
        ({"status": "failed"}, "is failed"),
        ({}, "of unknown status"),
        ({"status": "running", "heartbeat": time.time() - 501324.5}, "heartbeat was 5.8 d ago"),
        ({"status": "running"}, "heartbeat was – ago"),
    ],
)
def test_cli_refuses_runs_that_are_not_running(tmp_path, capsys, info, reason):
    """Nobody would read the file: one line, exit 2, nothing written (the old CLI wrote it and timed out)."""
    run_dir = write_run_json(tmp_path, "done", **info)
    assert main(["control", "done", "--store", str(tmp_path), "--set", "target_entropy=2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and reason in err[0] and "nothing was written" in err[0], err
    assert not (run_dir / "control.json").exists()


def write_json_text(path: Path, text: str) -> None:
    """Replace the file in one rename, as write_control does: a reader never sees it half-written."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def entropy_series(store, run_id):
    df = StoreReader(store).scalars([run_id], ["entropy/mean"], max_points=100000)
    return df.sort_values("step")[["step", "value"]].values.tolist()


def wait_steps(store, run_id, n, proc, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "trainer exited"
        if (Path(store) / run_id / "run.json").is_file():
            series = entropy_series(store, run_id)
            if series and series[-1][0] >= n:
                return series
        time.sleep(0.3)
    raise AssertionError(f"trainer did not reach step {n}")


def start_trainer(store, run_id, overrides):
    args = [sys.executable, "-m", "trainer.cli", "train", "--store", str(store), "--run-id", run_id]
    for o in overrides:
        args += ["--set", o]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def test_trainer_rejects_five_malformed_files_keeps_training_and_applies_a_valid_one(
    tmp_path, tiny_overrides
):
    over = [o for o in tiny_overrides if not o.startswith(("steps", "checkpoint"))]
    proc = start_trainer(tmp_path, "live", [*over, "steps=100000", "checkpoint_every=0", "controller=repo_r"])
    try:
        wait_steps(tmp_path, "live", 1, proc)
        run_dir = tmp_path / "live"
        bad = [
            "{oops",
            doc(1, frobnicate=1),
            doc(2, target_entropy="lots"),
            doc(3, eps_low=3.0),
        ]
        for text in bad:
            # Counted before writing: the trainer may answer before this loop looks.
            n = len(StoreReader(tmp_path).events("live", ["control_rejected"]))
            write_json_text(run_dir / "control.json", text)
            deadline = time.monotonic() + 60
            while len(StoreReader(tmp_path).events("live", ["control_rejected"])) == n:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.2)
        # A valid change, through the CLI, which waits for the acknowledgement.
        code = main(
            ["control", "live", "--store", str(tmp_path), "--set", "target_entropy=0.5", "--timeout", "60"]
        )
        assert code == 0
        version = read_version(run_dir)
        fate = find_fate(tmp_path, "live", version)
        assert fate.outcome == "applied" and fate.detail == "target_entropy None -> 0.5"
        # Stale: rewrite an old version number.
        write_json_text(run_dir / "control.json", doc(version, lr=1e-4))
        deadline = time.monotonic() + 60
        while len(StoreReader(tmp_path).events("live", ["control_rejected"])) < 5:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.2)
        events = StoreReader(tmp_path).events("live", ["control_rejected"])
        reasons = [json.loads(p)["reason"] for p in events["payload"]]
        for needle, reason in zip(
            ["bad JSON", "unknown key 'frobnicate'", "valid number", "less than 1", "stale version"],
            reasons,
            strict=True,
        ):
            assert needle in reason
        step_now = entropy_series(tmp_path, "live")[-1][0]
        wait_steps(tmp_path, "live", step_now + 2, proc)  # still training
        targets = StoreReader(tmp_path).scalars(["live"], ["entropy/target"], max_points=100000)
        assert targets.sort_values("step")["value"].iloc[-1] == pytest.approx(0.5)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def scalar_series(store, run_id, key):
    df = StoreReader(store).scalars([run_id], [key], max_points=100000)
    return df.sort_values("step")["value"].tolist()


def test_new_target_moves_a_running_repo_r_run_within_30_steps(tmp_path):
    """Run with a low target (ζ pinned negative), then raise the target live: within 30 steps ζ turns
    positive and the measured entropy climbs toward the new target. The step at which the file lands
    depends on the machine's load, so the new target, 4.0 nats, lies far above anything the warm-started
    policy reaches in 50 steps (0.1-1.0 nats over 6 seeds). The trainer's default batch (16 prompts x 8),
    not the tiny one: with 4 x 4 most groups had one reward (no advantage, so no handle for REPO) and the
    entropy wandered by a nat in 20 steps; on one seed's draws it fell after the change."""
    over = ["minibatches=2", "steps=400", "checkpoint_every=0", "controller=repo_r"]
    over += ["target_entropy=0.05", "zeta_max=2"]
    proc = start_trainer(tmp_path, "move", over)
    try:
        wait_steps(tmp_path, "move", 10, proc)
        assert main(["control", "move", "--store", str(tmp_path), "--set", "target_entropy=4.0"]) == 0
        applied_at = find_fate(
            tmp_path, "move", read_version(tmp_path / "move")
        ).step  # in force from applied_at + 1
        wait_steps(tmp_path, "move", applied_at + 30, proc)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    ent = scalar_series(tmp_path, "move", "entropy/mean")
    zeta = scalar_series(tmp_path, "move", "controller/zeta")
    before = sum(ent[applied_at - 5 : applied_at]) / 5
    after = sum(ent[applied_at + 20 : applied_at + 30]) / 10
    assert zeta[applied_at - 1] < 0 < max(zeta[applied_at : applied_at + 30])  # the controller turned
    assert after > before  # toward the new, higher target


def test_two_cli_requests_within_one_step_of_a_live_trainer_are_both_applied(tmp_path, tiny_overrides):
    """Two `entropyscope control` senders write while the trainer is held (SIGSTOP) between two reads of
    control.json, so both land within one of its steps; both changes take effect and each sender is told."""
    over = [o for o in tiny_overrides if not o.startswith(("steps", "checkpoint"))]
    proc = start_trainer(tmp_path, "two", [*over, "steps=100000", "checkpoint_every=0", "controller=repo_r"])
    senders = []
    try:
        wait_steps(tmp_path, "two", 1, proc)
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            for kv in ("eps_high=0.3", "lr=0.0005"):
                cmd = [sys.executable, "-m", "trainer.cli", "control", "two", "--store", str(tmp_path)]
                senders.append(subprocess.Popen([*cmd, "--set", kv], cwd=REPO, stdout=subprocess.PIPE,
                                                stderr=subprocess.PIPE, text=True))  # fmt: skip
                deadline = time.monotonic() + 60
                while read_version(tmp_path / "two") < len(senders):  # this sender wrote its version
                    assert time.monotonic() < deadline and senders[-1].poll() is None
                    time.sleep(0.1)
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        outs = [s.communicate(timeout=120) for s in senders]
        assert [s.returncode for s in senders] == [0, 0], outs
        first, second = (out.strip().splitlines()[-1] for out, _ in outs)
        assert "version 1 superseded by version 2, which includes it" in first, first
        assert "version 2 applied" in second and "eps_high 0.2 -> 0.3, lr 0.001 -> 0.0005" in second, second
        applied_at = find_fate(tmp_path, "two", 2).step
        wait_steps(tmp_path, "two", applied_at + 1, proc)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    lr = StoreReader(tmp_path).scalars(["two"], ["lr", "controller/eps_high"], max_points=100000)
    later = lr[lr["step"] == applied_at + 1].set_index("key")["value"]
    assert later["lr"] == pytest.approx(5e-4) and later["controller/eps_high"] == pytest.approx(0.3)


def test_cli_refuses_keys_that_act_on_nothing_under_the_runs_controller(tmp_path, capsys):
    run_dir = write_run_json(
        tmp_path, "plain", status="running", heartbeat=time.time(), config={"controller": "none"}
    )
    assert main(["control", "plain", "--store", str(tmp_path), "--set", "target_entropy=0.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "entropyscope: error: controller 'none' does not use target_entropy; keys that act on this run: "
        "eps_low, eps_high, lr; nothing was written"
    )
    assert not (run_dir / "control.json").exists()
