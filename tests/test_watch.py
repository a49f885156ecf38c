"""`watch`: exit codes, transitions recorded once across restarts and beside a trainer, the recent-window
read, stalled runs, and webhook POSTs against a local HTTP server."""

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pytest

from analysis import webhook
from analysis.alerts import FIRED, RESOLVED, AlertEngine, evaluate, load_rules
from analysis.errors import UsageError
from analysis.schema import CLIP_FRAC_HIGH, ENTROPY_MEAN, GRAD_NORM, LOSS_POLICY
from analysis.store_reader import StoreReader
from analysis.store_writer import RunWriter
from analysis.watch import Watcher, _StepRanges, _window_files, notify, watch

CONFIG = {
    "algo": "grpo",
    "controller": "none",
    "precision": "fp32",
    "model": "tiny-qwen2",
    "task": "digit_sum",
}


def collapsing(steps: int = 60) -> list[float]:
    """Entropy from 1.0 down to 0.3 by step 41, then flat: below 0.5 x H0 from step 30, collapse fires at 35."""
    return [max(0.3, 1.0 - 0.0175 * i) for i in range(steps)]


def log_steps(w: RunWriter, entropy: list[float], start: int = 1, clip: float = 0.01) -> None:
    for i, h in enumerate(entropy):
        w.log_scalars(start + i, {ENTROPY_MEAN: h, LOSS_POLICY: 0.1, GRAD_NORM: 1.0, CLIP_FRAC_HIGH: clip})
    w.flush()


def write_run(
    store: Path, run_id: str, entropy: list[float], clip: float = 0.01, segment_steps: int = 5
) -> None:
    with RunWriter(store, run_id, CONFIG, flush_every_steps=segment_steps, flush_every_s=3600) as w:
        log_steps(w, entropy, clip=clip)


def alert_events(store: Path, run_id: str | None = None) -> list[tuple[str, str, int, str]]:
    df = StoreReader(store).events(run_id, kinds=[FIRED, RESOLVED])
    return sorted(
        (r, k, int(s), json.loads(p)["rule"])
        for r, k, s, p in zip(df["run_id"], df["kind"], df["step"], df["payload"], strict=True)
    )


def run_watch(store: Path, **kw) -> tuple[int, list[str]]:
    lines: list[str] = []
    code = watch(store, once=True, out=lines.append, **kw)
    return code, lines


def transitions(lines: list[str]) -> list[str]:
    return [line for line in lines if " FIRED " in line or " resolved " in line]


# ---- once: exit codes and idempotence ---------------------------------------------------------------------


def test_once_exits_1_while_critical_and_a_second_watch_repeats_nothing(tmp_path):
    write_run(tmp_path, "collapsed", collapsing())
    write_run(tmp_path, "healthy", [1.0] * 60)
    code, lines = run_watch(tmp_path)
    assert code == 1
    assert any(line.startswith("collapsed step ") and "FIRED [critical] collapse" in line for line in lines)
    assert not any(line.startswith("healthy ") for line in lines)
    assert "firing: collapsed/collapse [critical]" in lines[-1]
    recorded = alert_events(tmp_path)
    assert len(recorded) == len(transitions(lines)) > 0
    assert [e for e in recorded if e[3] == "collapse"] == [("collapsed", FIRED, 35, "collapse")]

    code2, lines2 = run_watch(tmp_path)
    assert code2 == 1 and transitions(lines2) == []
    assert alert_events(tmp_path) == recorded


def test_once_exits_0_with_only_warnings(tmp_path):
    write_run(tmp_path, "clipping", [1.0] * 30, clip=0.3)
    code, lines = run_watch(tmp_path)
    assert code == 0
    assert [line.split(" [")[0] for line in transitions(lines)] == ["clipping step 4 FIRED"]
    assert "clipping/clip_spike [warning]" in lines[-1]


def test_watch_equals_batch_evaluation_of_a_resumed_run(tmp_path):
    with RunWriter(tmp_path, "r", CONFIG) as w:
        log_steps(w, [1.0] * 30)
    with RunWriter(tmp_path, "r", CONFIG, resume=True) as w:  # steps 11-30 again, newer rows win
        log_steps(w, [0.2] * 20, start=11)
    expected = evaluate(StoreReader(tmp_path).table("steps", ["r"]), load_rules()).transitions
    assert [t.rule for t in expected] == ["collapse"]
    run_watch(tmp_path)
    assert alert_events(tmp_path) == [("r", t.kind, t.step, t.rule) for t in expected]


# ---- live runs, restarts, trainer-recorded transitions ------------------------------------------------------


def test_new_steps_bring_only_new_transitions(tmp_path):
    w = RunWriter(tmp_path, "live", CONFIG)
    log_steps(w, collapsing(50))
    assert run_watch(tmp_path)[0] == 1
    first = alert_events(tmp_path)
    log_steps(w, [0.9] * 20, start=51)  # entropy recovers: collapse resolves after keep_firing_for
    code, lines = run_watch(tmp_path)
    assert code == 0
    new = [e for e in alert_events(tmp_path) if e not in first]
    assert ("live", RESOLVED, 61, "collapse") in new
    assert len(new) == len(transitions(lines))
    assert transitions(run_watch(tmp_path)[1]) == []
    w.close()


def test_transitions_the_trainer_recorded_are_not_repeated(tmp_path):
    engine = AlertEngine(load_rules())
    with RunWriter(tmp_path, "trained", CONFIG) as w:
        for step, h in enumerate(collapsing(), start=1):
            metrics = {ENTROPY_MEAN: h, LOSS_POLICY: 0.1, GRAD_NORM: 1.0, CLIP_FRAC_HIGH: 0.01}
            for t in engine.observe(step, metrics):  # what the trainer does, before logging the step
                w.log_event(t.step, t.kind, t.message, severity=t.severity, payload=t.payload)
            w.log_scalars(step, metrics)
    before = alert_events(tmp_path)
    assert ("trained", FIRED, 35, "collapse") in before
    code, lines = run_watch(tmp_path)
    assert code == 1 and transitions(lines) == []
    assert alert_events(tmp_path) == before


def test_long_live_run_reads_only_the_recent_window(tmp_path):
    entropy = np.r_[np.linspace(1.0, 0.3, 100), np.full(2900, 0.3)].tolist()
    live = RunWriter(tmp_path, "long", CONFIG, flush_every_steps=500, flush_every_s=3600)
    log_steps(live, entropy)  # left open: running
    window = _window_files(StoreReader(tmp_path).run_dirs(), _StepRanges(), 200)
    assert len(window.tail_files) == len(window.head_files) == 1  # of 6 segments: the last and the first
    assert window.bounds == {"long": (0, 3000, 2801)}
    rules = load_rules()
    watcher = Watcher(tmp_path, rules, window=200)
    # The watcher reads at least twice the rules' longest lookback (off_target's: 95 steps).
    start = 3000 - watcher.window + 1
    assert watcher.window == max(200, 2 * rules.lookback()) < 3000 - 100
    [result] = watcher.cycle()
    # Collapse happened at step ~75, long before the window: the state at the end is reconstructed, firing
    # from the window's start once collapse's `for` has passed.
    collapse_for = next(r.for_steps for r in rules.rules if r.name == "collapse")
    assert [(t.rule, t.kind, t.step) for t in result.transitions] == [
        ("collapse", FIRED, start + collapse_for)
    ]
    assert [a.rule for a in result.active] == ["collapse"]
    notify(tmp_path, [result], None, lambda line: None)
    assert watcher.cycle()[0].transitions == []
    live.close()


def falls_early(steps: int = 3000, below_from: int = 150) -> list[float]:
    """H0 = 1.0; from step `below_from` (within the first tenth) on, under half of it and staying there."""
    return [1.0 if step < below_from else 0.3 for step in range(1, steps + 1)]


def test_an_imported_run_is_dated_at_its_first_step_below_the_threshold(tmp_path, capsys):
    """A finished history imported whole: the collapse is dated where it began, not in the last window."""
    from trainer.cli import main

    log = tmp_path / "history.jsonl"
    log.write_text("".join(json.dumps({"step": s, "entropy/mean": h}) + "\n"
                           for s, h in enumerate(falls_early(), start=1)))  # fmt: skip
    store = tmp_path / "store"
    assert main(["import", str(log), "--store", str(store), "--run-id", "imported"]) == 0
    capsys.readouterr()
    assert main(["watch", "--store", str(store), "--once"]) == 1
    out = capsys.readouterr().out.splitlines()
    collapse_for = next(r.for_steps for r in load_rules().rules if r.name == "collapse")
    fired = 150 + collapse_for
    assert f"imported step {fired} FIRED [critical] collapse" in "\n".join(out)
    assert any(line.endswith("(condition held from step 150)") for line in out if " FIRED " in line), out
    assert f"imported/collapse [critical] since step {fired} (condition held from step 150)" in out[-1]
    events = StoreReader(store).events("imported", kinds=[FIRED])
    payloads = [json.loads(p) for p in events["payload"]]
    assert [(p["rule"], p["since"], int(s)) for p, s in zip(payloads, events["step"], strict=True)
            if p["rule"] == "collapse"] == [("collapse", 150, fired)]  # fmt: skip
    # Read over every step once: the next watch reads the last window only, and repeats nothing.
    assert json.loads((store / ".watch_full.json").read_text())["runs"].keys() == {"imported"}
    watcher = Watcher(store, load_rules())
    [res] = watcher.cycle()
    assert res.transitions == [] and watcher._pending_full == {}


def test_an_ended_run_nobody_judged_live_is_read_whole_and_a_trainer_judged_one_is_not(tmp_path):
    write_run(
        tmp_path, "unjudged", falls_early(), segment_steps=500
    )  # config without `alerts`: nobody judged
    with RunWriter(tmp_path, "judged", {**CONFIG, "alerts": "default"}, flush_every_steps=500) as w:
        log_steps(w, falls_early())
    watcher = Watcher(tmp_path, load_rules())
    results = {r.run_id: r for r in watcher.cycle()}
    assert set(watcher._pending_full) == {"unjudged"}
    [collapse] = [t for t in results["unjudged"].transitions if t.rule == "collapse"]
    assert collapse.payload["since"] == 150
    # The judged run's trainer recorded its alerts live; the watch reads its last window as for a live run.
    assert all(t.step > 3000 - watcher.window for t in results["judged"].transitions)


def test_stalled_run_fires_and_resolves_when_it_finishes(tmp_path):
    w = RunWriter(tmp_path, "hung", CONFIG)
    log_steps(w, [1.0] * 10)
    w.heartbeat(10, force=True)
    watcher = Watcher(tmp_path, load_rules())
    later = time.time() + 3600  # an hour without a heartbeat
    [res] = watcher.cycle(now=later)
    assert [(t.rule, t.kind, t.step) for t in res.transitions] == [("stalled", FIRED, 10)]
    notify(tmp_path, [res], None, lambda line: None)
    assert watcher.cycle(now=later)[0].transitions == []
    w.close()
    [res] = watcher.cycle(now=later)
    assert [(t.rule, t.kind) for t in res.transitions] == [("stalled", RESOLVED)]


def test_loop_and_custom_rules(tmp_path):
    write_run(tmp_path, "clipping", [1.0] * 30, clip=0.3)
    rules = tmp_path.parent / f"{tmp_path.name}-rules.yaml"
    rules.write_text("on_critical: stop\nrules:\n  - {name: clip, kind: clip_spike, severity: critical}\n")
    lines: list[str] = []
    code = watch(tmp_path, rules_path=rules, interval_s=0.01, max_cycles=2, out=lines.append)
    assert code == 1
    assert [line.split(" [")[0] for line in lines] == ["clipping step 1 FIRED"]  # once over two cycles


def test_missing_store_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="no run store"):
        watch(tmp_path / "nope", once=True)


# ---- webhook --------------------------------------------------------------------------------------------------


class _Collect(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.bodies.append((self.path, self.headers["Content-Type"], json.loads(body)))  # type: ignore[attr-defined]
        self.send_response(200)  # answered after recording: when urlopen returns, the POST is counted
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hook(monkeypatch) -> Iterator[tuple[str, list]]:
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    server = HTTPServer(("127.0.0.1", 0), _Collect)
    server.bodies = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/alerts", server.bodies  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_webhook_gets_exactly_one_post_per_transition(tmp_path, hook):
    url, bodies = hook
    write_run(tmp_path, "collapsed", collapsing())
    write_run(tmp_path, "clipping", [1.0] * 30, clip=0.3)
    code, lines = run_watch(tmp_path, webhook=url)
    printed = transitions(lines)
    assert len(bodies) == len(printed) == len(alert_events(tmp_path)) >= 3
    assert [b["text"] for _, _, b in bodies] == printed  # Slack-compatible `text`, in order
    assert {(path, ctype) for path, ctype, _ in bodies} == {("/alerts", "application/json")}
    first = bodies[0][2]
    assert {"run_id", "rule", "kind", "step", "severity", "message", "payload"} <= set(first)
    run_watch(tmp_path, webhook=url)
    assert len(bodies) == len(printed)  # nothing new, nothing posted


def dead_url() -> str:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/x"


def test_webhook_down_costs_one_line_when_it_fails_and_one_at_close(tmp_path, monkeypatch):
    monkeypatch.setattr(webhook, "CLOSE_S", 0.0)  # close tries once more, without waiting on the backoff
    write_run(tmp_path, "collapsed", collapsing())
    write_run(tmp_path, "clipping", [1.0] * 30, clip=0.3)
    url = dead_url()
    code, lines = run_watch(tmp_path, webhook=url)
    sent = transitions(lines)
    assert code == 1 and len(sent) >= 3
    outage = [line for line in lines if line.startswith("webhook")]
    assert len(outage) == 2
    assert outage[0].startswith(f"webhook POST to {url} failed (") and "retrying with backoff" in outage[0]
    assert outage[1].startswith(f"webhook {url}: 0 POSTs delivered, {len(sent)} dropped after 2 failed tries")
    assert len(alert_events(tmp_path)) == len(sent)  # recorded all the same


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _serve(port: int = 0) -> tuple[HTTPServer, threading.Thread]:
    server = HTTPServer(("127.0.0.1", port), _Collect)
    server.bodies = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return server, thread


def _stop(server: HTTPServer, thread: threading.Thread) -> None:
    server.shutdown()
    server.server_close()
    thread.join()


def test_webhook_that_goes_away_gets_the_queued_posts_in_order_when_it_is_back(tmp_path, monkeypatch):
    """Up, down for two watch cycles (one line, the second cycle inside the backoff tries nothing), back: the
    queue goes out in order with one line; every transition reaches the endpoint once."""
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    server, thread = _serve()
    port = server.server_port
    url = f"http://127.0.0.1:{port}/alerts"
    lines: list[str] = []
    clock = _Clock()
    hook = webhook.Webhook(url, lines.append, clock=clock)
    watcher = Watcher(tmp_path, load_rules())

    def cycle() -> None:
        notify(tmp_path, watcher.cycle(), hook, lines.append)

    write_run(tmp_path, "collapsed", collapsing())
    cycle()
    first = list(server.bodies)  # type: ignore[attr-defined]
    assert first and [b["text"] for _, _, b in first] == transitions(lines)
    _stop(server, thread)

    write_run(tmp_path, "clipping", [1.0] * 30, clip=0.3)
    cycle()  # fails: one line, the POSTs queued
    clock.now += 0.5  # within the first backoff (1 s): nothing is tried
    write_run(tmp_path, "clipping2", [1.0] * 30, clip=0.3)
    cycle()
    outage = [line for line in lines if line.startswith("webhook")]
    assert len(outage) == 1 and outage[0].startswith(f"webhook POST to {url} failed (")
    assert hook.failures == 1

    server, thread = _serve(port)
    try:
        clock.now += 1.0
        cycle()  # no new transition: the queue goes out
        late = list(server.bodies)  # type: ignore[attr-defined]
        texts = [b["text"] for _, _, b in first + late]
        assert texts == transitions(lines) and len(texts) == len(set(texts)) == len(alert_events(tmp_path))
        (back,) = [line for line in lines if "answers again" in line]
        assert back == f"webhook {url} answers again: {len(late)} queued POSTs delivered late"
        hook.close()
        assert len(server.bodies) == len(late)  # type: ignore[attr-defined]  # nothing left, nothing repeated
    finally:
        _stop(server, thread)
