"""`entropyscope sweep SPEC.yaml`: run every trial of a sweep spec as an ordinary `entropyscope train` process.

    entropyscope sweep setpoints.yaml --store runs --parallel 2      # local: N child processes, 1 thread each
    entropyscope sweep setpoints.yaml --backend ray --address auto  # each trial a Ray task (trainer/sweep_ray.py)
    entropyscope sweep setpoints.yaml --dry-run                     # the runs it would start, and their state

The runner only launches, records and resumes (the search itself is the spec's expansion, trainer/sweep_spec.py,
or Optuna's TPE, trainer/sweep_tpe.py; Ray Tune keeps search and execution apart the same way). It is torch-free: each trial is a child process that
imports torch itself, so a crashing or killed trial takes nothing else down. Each run carries run.json's
`sweep` field (`train --sweep JSON`). The store decides what is left: a finished run is skipped, any other run
is continued with `train --resume` (from its last checkpoint, else from step 0, whose rows the resumed run
then supersedes), so running the spec again after a crash, Ctrl-C or SIGTERM runs each trial exactly once to
the end. A failed trial is recorded in the store (status failed, an `error` event with the child's last line)
and the sweep goes on. Children's output goes to `<store>/.sweeps/<sweep id>/logs/<run id>.log`, beside the
sweep's manifest `sweep.json` (its spec, so the dashboard knows the objective and every run id) and
`history.jsonl` (one line per start and end of a trial: every attempt, with its outcome).
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from tqdm import tqdm

from analysis.atomic import write_json_atomic
from analysis.errors import UsageError
from analysis.liveness import STALE_HEARTBEAT_S, heartbeat_age, writer_gone
from analysis.store_writer import RUN_JSON, RunWriter, read_run_json, write_events
from analysis.sweeps import MANIFEST, sweep_dir
from trainer.config import validate_config
from trainer.sweep_spec import Sweep, Trial, load_sweep

STOP_GRACE_S = 60.0
"""How long a stopped child gets to mark its run failed and exit after SIGINT, before it is killed."""
POLL_S = 0.2
INTERRUPTED = "interrupted: the sweep was stopped; run the same sweep again to resume it"
STATES = ("new", "resume", "finished", "busy")
"""A trial's state in the store: not there, to continue, done, or running in another live process."""


def trial_state(store: Path, trial: Trial) -> str:
    """One of STATES, from the run's run.json."""
    run_dir = store / trial.run_id
    if not (run_dir / RUN_JSON).exists():
        return "new"
    info = read_run_json(run_dir) or {}
    if info.get("status") == "finished":
        return "finished"
    age = heartbeat_age(info, time.time())
    alive = info.get("status") == "running" and not writer_gone(info) and age is not None
    return "busy" if alive and age < STALE_HEARTBEAT_S else "resume"


def config_conflict(store: Path, sweep: Sweep, trial: Trial) -> str | None:
    """Why a finished run with this trial's id cannot count for it (the spec changed under the same name)."""
    info = read_run_json(store / trial.run_id) or {}
    stored, wanted = info.get("config") or {}, validate_config(trial.config).model_dump()
    for key in trial.config:
        if key in stored and stored[key] != wanted[key]:
            return (
                f"run {trial.run_id} in {store} was trained with {key}={stored[key]!r}, the spec now says "
                f"{wanted[key]!r}; give the changed sweep another `name` (or use another --store)"
            )
    return None


def plan(sweep: Sweep, store: Path) -> list[tuple[Trial, str]]:
    """Every trial with its state; UsageError when a finished run of the same id has another config."""
    states = [(t, trial_state(store, t)) for t in sweep.trials]
    for trial, state in states:
        conflict = state == "finished" and config_conflict(store, sweep, trial)
        if conflict:
            raise UsageError(conflict)
    return states


def dry_run_text(sweep: Sweep, states: list[tuple[Trial, str]]) -> str:
    """What `--dry-run` prints: a summary line, then one line per run."""
    counts = {s: sum(1 for _, st in states if st == s) for s in STATES}
    configs = len({json.dumps(t.params, sort_keys=True) for t in sweep.trials})
    head = (
        f"sweep {sweep.id}: {len(states)} runs ({configs} configurations x seeds), {counts['finished']} "
        f"finished, {counts['resume']} to resume, {counts['busy']} running elsewhere, {counts['new']} new"
    )
    width = max((len(t.run_id) for t, _ in states), default=0)
    rows = [f"{t.run_id:<{width}}  {st:<8}  seed {t.seed:<5} {json.dumps(t.params)}" for t, st in states]
    return "\n".join([head, *rows])


def train_args(store: Path, sweep_id: str, trial: Trial, resume: bool) -> list[str]:
    """`entropyscope train` arguments for a trial (values as JSON, which --set reads back as YAML)."""
    sets = [f"--set={k}={json.dumps(v)}" for k, v in trial.config.items()]
    if "threads" not in trial.config:  # N trainings on N cores: one torch thread each (config key threads)
        sets.append("--set=threads=1")
    args = ["train", "--store", str(store), "--run-id", trial.run_id, *sets]
    return [*args, "--sweep", json.dumps(trial.sweep_field(sweep_id)), *(["--resume"] if resume else [])]


def open_train(args: list[str], log_path: Path) -> subprocess.Popen:
    """`python -m trainer.cli ARGS` with its output appended to `log_path`, in its own session (a terminal's
    Ctrl-C reaches only the sweep, which then stops each child in order)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    threads = next((a.split("=", 2)[2] for a in args if a.startswith("--set=threads=")), "1")
    env = os.environ | ({"OMP_NUM_THREADS": threads} if threads != "0" else {})
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "trainer.cli", *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=deliver_sigint,
        )


def deliver_sigint() -> None:
    """In a child before exec: SIGINT unblocked and at its default, whatever the parent did with it (a Ray
    worker blocks it; a shell ignores it in a background job), so the child's Python raises KeyboardInterrupt
    and the trainer can mark its run when stopped."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stop_processes(procs: list[subprocess.Popen], grace_s: float = STOP_GRACE_S) -> list[int]:
    """SIGINT to each (the trainer then marks its run failed and keeps its checkpoints), all at once so the
    grace periods overlap; SIGKILL to any still running after `grace_s`. Their exit codes."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + grace_s
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
    return [proc.wait() for proc in procs]


def last_line(log_path: Path, since: int) -> str:
    """The last non-empty line the child wrote after byte `since` of its log: its one-line reason."""
    try:
        with log_path.open("rb") as f:
            f.seek(max(since, f.seek(0, os.SEEK_END) - 4096))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1].removeprefix("entropyscope: error: ")[:300] if lines else ""


def record_failure(store: Path, sweep_id: str, trial: Trial, reason: str) -> None:
    """Mark the trial's run failed in the store with `reason` as an error event (creating the run when the
    child failed before it wrote one). The child has exited: nobody else writes the run now."""
    run_dir = store / trial.run_id
    payload = {"by": "sweep", "sweep": sweep_id}
    if not (run_dir / RUN_JSON).exists():
        config = validate_config(trial.config).model_dump()
        writer = RunWriter(store, trial.run_id, config, meta={"sweep": trial.sweep_field(sweep_id)})
        writer.log_event(0, "error", reason, severity="critical", payload=payload)
        writer.close("failed")
        return
    info = read_run_json(run_dir) or {}
    write_events(run_dir, [(int(info.get("last_step") or 0), "error", "critical", reason, payload)])
    if info.get("status") != "failed":
        write_json_atomic(run_dir / RUN_JSON, {**info, "status": "failed", "heartbeat": time.time()})


class Pool(Protocol):
    """Where trials run: local child processes, or Ray tasks (trainer/sweep_ray.py)."""

    def free(self) -> int: ...
    def busy(self) -> int: ...
    def start(self, trial: Trial, args: list[str], log_path: Path) -> None: ...
    def poll(self) -> list[tuple[Trial, int]]: ...
    def stop(self) -> list[tuple[Trial, int]]: ...
    def close(self) -> None: ...


class LocalPool:
    """Up to `slots` trainings at once as child processes of this one."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.running: dict[str, tuple[Trial, subprocess.Popen]] = {}

    def free(self) -> int:
        return self.slots - len(self.running)

    def busy(self) -> int:
        return len(self.running)

    def start(self, trial: Trial, args: list[str], log_path: Path) -> None:
        self.running[trial.run_id] = (trial, open_train(args, log_path))

    def poll(self) -> list[tuple[Trial, int]]:
        done = [(trial, proc.returncode) for trial, proc in self.running.values() if proc.poll() is not None]
        for trial, _ in done:
            del self.running[trial.run_id]
        return done

    def stop(self) -> list[tuple[Trial, int]]:
        """Stop every running training; each with its exit code (0: it finished before it was stopped)."""
        trials = [trial for trial, _ in self.running.values()]
        codes = stop_processes([proc for _, proc in self.running.values()])
        self.running.clear()
        return list(zip(trials, codes, strict=True))

    def close(self) -> None:
        """Nothing to release: every child has been waited for."""


class Progress:
    """Runs done / total, failed and ETA: a tqdm bar on a terminal, one plain line per ended run elsewhere."""

    def __init__(self, sweep_id: str, total: int, done: int, file=None) -> None:
        self.file, self.desc = file or sys.stdout, sweep_id
        self.total, self.done, self.failed, self.ran = total, done, 0, 0
        self.start = time.monotonic()
        self.bar = tqdm(
            total=total,
            initial=done,
            desc=sweep_id,
            unit="run",
            file=self.file,
            disable=not self.file.isatty(),
        )
        self.bar.set_postfix(failed=0)

    def eta(self) -> str:
        left = self.total - self.done
        if not self.ran or not left:
            return "?" if left else "0 s"
        return f"{(time.monotonic() - self.start) / self.ran * left:.0f} s"

    def ended(self, trial: Trial, reason: str | None) -> None:
        self.done, self.ran = self.done + 1, self.ran + 1
        self.failed += reason is not None
        self.bar.update(1)
        self.bar.set_postfix(failed=self.failed)
        if reason is not None:
            self.say(f"failed {trial.run_id}: {reason}")
        if self.bar.disable:
            line = (
                f"{self.done}/{self.total} runs done, {self.failed} failed, ETA {self.eta()}: {trial.run_id}"
            )
            print(f"{self.desc}: {line}", file=self.file, flush=True)

    def say(self, message: str) -> None:
        if self.bar.disable:
            print(message, file=self.file, flush=True)
        else:
            self.bar.write(message, file=self.file)

    def close(self) -> None:
        self.bar.close()


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Ctrl-C and SIGTERM set `stop` (the loop then stops the children) instead of killing the sweep."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handler = lambda *_: stop.set()  # noqa: E731
    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


class Plan(Protocol):
    """What to run next: a fixed queue (grid, random) or a search that learns from outcomes (tpe)."""

    def pending(self) -> bool: ...
    def next(self) -> tuple[Trial, bool] | None: ...
    def ended(self, trial: Trial, rc: int) -> None: ...


class Queue:
    """(trial, resume) pairs to run in order."""

    def __init__(self, todo: list[tuple[Trial, bool]]) -> None:
        self.todo = deque(todo)

    def pending(self) -> bool:
        return bool(self.todo)

    def next(self) -> tuple[Trial, bool] | None:
        return self.todo.popleft() if self.todo else None

    def ended(self, trial: Trial, rc: int) -> None:
        """A fixed plan learns nothing from an outcome."""


def run_trials(
    sweep: Sweep, store: Path, work: Plan, pool: Pool, progress: Progress, stop: threading.Event
) -> bool:
    """Run the trials `work` gives through `pool`, recording failures; False when stopped before the end."""
    logs = sweep_dir(store, sweep.id) / "logs"
    offsets = {}
    while work.pending() or pool.busy():
        if stop.is_set():
            for trial, rc in pool.stop():
                reason = INTERRUPTED if rc != 0 else None
                if reason:
                    record_failure(store, sweep.id, trial, reason)
                note(store, sweep.id, trial, "end", rc=rc, reason=reason)
            return False
        while pool.free() > 0 and (item := work.next()) is not None:
            trial, resume = item
            log = logs / f"{trial.run_id}.log"
            offsets[trial.run_id] = log.stat().st_size if log.exists() else 0
            pool.start(trial, train_args(store, sweep.id, trial, resume), log)
            note(store, sweep.id, trial, "start", resume=resume)
        for trial, rc in pool.poll():
            reason = None
            if rc != 0:
                said = last_line(logs / f"{trial.run_id}.log", offsets[trial.run_id])
                reason = said or f"exit code {rc}"
                record_failure(store, sweep.id, trial, reason)
            note(store, sweep.id, trial, "end", rc=rc, reason=reason)
            progress.ended(trial, reason)
            work.ended(trial, rc)
        stop.wait(POLL_S)
    return True


def note(store: Path, sweep_id: str, trial: Trial, event: str, **fields: object) -> None:
    """Append a start or end of a trial to `.sweeps/<id>/history.jsonl`: every attempt, with its outcome."""
    line = json.dumps({"time": time.time(), "run_id": trial.run_id, "event": event, **fields})
    with (sweep_dir(store, sweep_id) / "history.jsonl").open("a") as f:
        f.write(line + "\n")


def write_manifest(sweep: Sweep, store: Path) -> None:
    """`.sweeps/<id>/sweep.json`: the spec and run ids, for readers that want the objective or the total."""
    doc = {
        "id": sweep.id,
        "spec": sweep.spec.model_dump(),
        "base": sweep.base,
        "metric": sweep.spec.metric.model_dump(),
        "runs": [t.run_id for t in sweep.trials],
        "updated": time.time(),
    }
    path = sweep_dir(store, sweep.id) / MANIFEST
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, doc)


def search(
    sweep: Sweep, store: Path, states: list[tuple[Trial, str]], todo: list[tuple[Trial, bool]]
) -> Plan:
    if sweep.spec.method == "tpe":
        from trainer.sweep_tpe import TpeSearch

        return TpeSearch(sweep, store, states)
    return Queue(todo)


def make_pool(backend: str, parallel: int | None, address: str | None, sweep: Sweep) -> Pool:
    if backend == "ray":
        from trainer.sweep_ray import RayPool

        return RayPool(parallel, address, sweep)
    if address is not None:
        raise UsageError("--address is for --backend ray; drop it or add --backend ray")
    return LocalPool(parallel or os.cpu_count() or 1)


def run_sweep(
    spec_path: str | Path,
    store: str | Path,
    parallel: int | None = None,
    backend: str = "local",
    address: str | None = None,
    dry_run: bool = False,
) -> int:
    """The `sweep` command: 0 when every run finished, 1 when some failed, 130 when stopped."""
    if parallel is not None and parallel < 1:
        raise UsageError(f"--parallel {parallel}: pass a number of runs at once, 1 or more")
    sweep = load_sweep(spec_path)
    store = Path(store).absolute()  # children and Ray workers may start elsewhere
    tpe = sweep.spec.method == "tpe"
    if tpe:
        from trainer.sweep_tpe import with_stored_trials

        sweep = with_stored_trials(sweep, store)
    states = plan(sweep, store)
    configs = len({json.dumps(t.params, sort_keys=True) for t in sweep.trials})
    more = max(0, (sweep.spec.count or 0) - configs) * len(sweep.seeds) if tpe else 0
    if dry_run:
        print(
            dry_run_text(sweep, states)
            + (f"\n...and {more} runs TPE will suggest as it goes" if more else "")
        )
        return 0
    todo = [(t, st == "resume") for t, st in states if st in ("new", "resume")]
    busy = [t.run_id for t, st in states if st == "busy"]
    pool = make_pool(backend, parallel, address, sweep)
    write_manifest(sweep, store)
    progress = Progress(sweep.id, len(states) + more, len(states) - len(todo) - len(busy))
    if busy:
        progress.say(f"skipping {len(busy)} runs another live process is training, e.g. {busy[0]}")
    stop = threading.Event()
    try:
        with stop_on_signals(stop):
            finished = run_trials(sweep, store, search(sweep, store, states, todo), pool, progress, stop)
    except BaseException:
        pool.stop()  # a sweep that dies must not leave trainings running on without it
        raise
    finally:
        progress.close()
        pool.close()
    if not finished:
        print(f"sweep {sweep.id}: {INTERRUPTED}", file=sys.stderr)
        return 130
    print(
        f"sweep {sweep.id}: {progress.done}/{progress.total} runs ended, {progress.failed} failed; store {store}"
    )
    return 1 if progress.failed else 0
