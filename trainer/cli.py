"""`entropyscope`: train with entropy diagnostics, watch and compare runs, steer a live run's controller.

Each command is a thin call into the library; `entropyscope COMMAND --help` shows an example.

Bad input (config, flags, paths) prints one line `entropyscope: error: ...` and exits with code 2; a run stopped
by a full or read-only store prints one such line and exits with code 1.
"""

import argparse
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from analysis.access import MIN_TOKEN_LEN, TOKEN_ENV, server_token
from analysis.errors import STORE_FAULTS, RunFailed, UsageError
from trainer.console import quiet_libraries

DEFAULT_STORE = "runs"
# One torch thread: the dashboard shares the cores, and a 2-thread trainer next to one busy core took 12.8 s
# for 40 steps against 7.6 s with one thread (alone, both take the same time).
# delta_every=10: the live run fills the ΔH panels too, for ~20% more time (docs/entropy_dynamics.md#cost)
DEMO_OVERRIDES = ["checkpoint_every=0", "threads=1", "delta_every=10"]
SAMPLE_RUNS = Path(__file__).resolve().parents[1] / "sample_runs"


def cmd_train(args: argparse.Namespace) -> int:
    from analysis import run_ids
    from trainer.config import load_config

    if args.run_id is not None:
        run_ids.run_dir(args.store, args.run_id)
    cfg = load_config(args.config, args.set)  # before importing torch, so bad input fails in a blink
    if args.nproc < 1:
        raise UsageError(f"--nproc {args.nproc}: pass a number of processes, 1 or more")
    if os.environ.get("RANK", "0") == "0":  # before torch's import, which takes seconds
        processes = f" in {args.nproc} processes" if args.nproc > 1 else ""
        print(f"train: loading model {cfg.model} for {cfg.steps} steps of {cfg.algo} (controller {cfg.controller}) "
              f"on {cfg.task}{processes}; store {args.store} ...", flush=True)  # fmt: skip
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        from trainer.launch import spawn

        again = [*([args.config] if args.config else []), *(f"--set={kv}" for kv in args.set)]
        again += ["--store", args.store, *(["--run-id", args.run_id] if args.run_id else [])]
        again += ["--sweep", args.sweep] if args.sweep else []
        return spawn(["train", *again, *(["--resume"] if args.resume else [])], args.nproc)
    from trainer.loop import train
    from trainer.sweep_spec import parse_sweep_field

    meta = {"sweep": parse_sweep_field(args.sweep)} if args.sweep else None
    summary = train(cfg, Path(args.store), run_id=args.run_id, resume=args.resume, meta=meta)
    if os.environ.get("RANK", "0") == "0":  # one summary for a run of several processes
        print("\n".join(summary.lines()))
    return 0


def copy_sample_runs(store: Path) -> list[str]:
    """Copy the committed sample runs into `store` (skipping ones already there), so the dashboard has
    runs to compare the live one with."""
    if not SAMPLE_RUNS.is_dir():
        return []
    copied = []
    for run in sorted(d for d in SAMPLE_RUNS.iterdir() if (d / "run.json").is_file()):
        if not (store / run.name).exists():
            shutil.copytree(run, store / run.name)
            copied.append(run.name)
    return copied


def check_port(host: str, port: int) -> None:
    """UsageError unless `port` is free on `host`: Streamlit would otherwise quietly pick another one."""
    if not 0 < port < 65536:
        raise UsageError(f"--port {port} is not a TCP port; pass a number from 1 to 65535")
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            raise UsageError(f"port {port} on {host} is in use; pass a free one with --port N") from None


def start_dashboard(
    store: str, host: str, port: int, token: str | None = None, **popen: Any
) -> subprocess.Popen:
    """The dashboard server as its own process (`python -m app.serve`): the trainer never imports app/.
    token: the access token browsers must present, handed over in the environment (`ps` shows a command line)."""
    check_port(host, port)
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV} | ({TOKEN_ENV: token} if token else {})
    cmd = [
        sys.executable,
        "-m",
        "app.serve",
        "--store",
        os.path.abspath(store),
        "--host",
        host,
        "--port",
        str(port),
    ]
    return subprocess.Popen(cmd, env=env, **popen)


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def stop_on_signals() -> None:
    """SIGTERM, SIGHUP and SIGINT end a serving command as Ctrl-C does, so its `finally` stops the server:
    Python's default for the first two ends the process at once and leaves the server running, re-parented,
    holding the port; SIGINT may be ignored where a shell started the command in the background."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, interrupt)


def own_command() -> str:
    """How to run entropyscope again, as printed: its bare name when PATH finds this script, else the path
    that was run (`.venv/bin/entropyscope` after `make demo`), else `python -m trainer.cli`."""
    script = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else None
    if script is None or script.name != "entropyscope":
        return f"{shlex.quote(sys.executable)} -m trainer.cli"
    found = shutil.which("entropyscope")
    if found and Path(found).resolve() == script:
        return "entropyscope"
    try:
        return shlex.quote(str(script.relative_to(Path.cwd())))  # has a slash: the shell runs it as it is
    except ValueError:
        return shlex.quote(str(script))


def wait_server(proc: subprocess.Popen) -> int:
    """Serve until the server exits or Ctrl-C; the server is gone either way."""
    try:
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        stop_server(proc)


def cmd_demo(args: argparse.Namespace) -> int:
    from trainer.config import load_config

    cfg = load_config(None, [*DEMO_OVERRIDES, f"steps={args.steps}"])
    token = None if args.no_serve else server_token(args.host, args.token)
    store = Path(args.store)
    server = None
    if not args.no_serve:
        stop_on_signals()
        store.mkdir(parents=True, exist_ok=True)
        copy_sample_runs(store)
        # The server's own chatter would tear the progress bar; it goes to a log in the store instead.
        with (store / "dashboard.log").open("ab") as log:
            server = start_dashboard(str(store), args.host, args.port, token, stdout=log, stderr=log)
        print(f"dashboard: http://{args.host}:{args.port} (the live run appears under Runs)", flush=True)
    print(f"demo: GRPO on {cfg.task} with {cfg.model}, {cfg.steps} steps, CPU-friendly; store {store}; "
          "loading the model ...", flush=True)  # fmt: skip
    try:
        from trainer.loop import train  # after the first lines: importing torch takes seconds

        summary = train(cfg, store)
        print("\n".join(summary.lines()))
        print(f"inspect it: {own_command()} runs --store {shlex.quote(str(store))}")
        if server is None:
            return 0
        print(
            f"dashboard still serving at http://{args.host}:{args.port}; Ctrl-C (or kill {os.getpid()}) stops it"
        )
        return wait_server(server)
    finally:
        if server is not None:
            stop_server(server)


def cmd_runs(args: argparse.Namespace) -> int:
    from analysis.runs_table import runs_text
    from analysis.store_reader import StoreReader

    table = StoreReader(args.store).runs()
    print(runs_text(table, time.time()) if not table.empty else f"no runs in {args.store}")
    return 0


def cmd_control(args: argparse.Namespace) -> int:
    from analysis import run_ids
    from analysis.control import ControlError, wait_for_fate, write_control
    from analysis.liveness import control_refusal
    from analysis.store_writer import read_run_json

    run_dir = run_ids.run_dir(args.store, args.run_id)
    if not (run_dir / "run.json").is_file():
        raise UsageError(
            f"no run {args.run_id!r} in store {args.store!r}; list runs with `entropyscope runs`"
        )
    info = read_run_json(run_dir) or {}
    settings = live_settings(args.set)
    refusal = control_refusal(args.run_id, info, time.time())
    if refusal:
        raise UsageError(refusal)
    config = info.get("config") if isinstance(info.get("config"), dict) else {}
    try:
        version = write_control(run_dir, settings, controller=config.get("controller") or None)
    except ControlError as e:
        raise UsageError(f"{e}; nothing was written") from None
    print(f"wrote {run_dir / 'control.json'} version {version}; waiting for the trainer...")
    fate = wait_for_fate(args.store, args.run_id, version, args.timeout)
    if fate is None:
        print(
            f"entropyscope: error: no acknowledgement of version {version} within {args.timeout:g} s; it stays "
            "in control.json and the trainer applies it at its next step (`entropyscope control` again, or the "
            "Control page, shows its fate)",
            file=sys.stderr,
        )
        return 1
    if fate.outcome == "rejected":
        print(f"entropyscope: error: {fate.line()}", file=sys.stderr)
        return 2
    print(fate.line())
    return 0


def live_settings(pairs: list[str]) -> dict[str, Any]:
    """`--set key=value` pairs as validated live settings; UsageError naming a key that cannot change live."""
    from analysis.control import LIVE_KEYS, ControlError, validate_settings
    from trainer.config import TrainConfig, parse_overrides

    raw = parse_overrides(pairs)
    fixed = [k for k in raw if k in TrainConfig.model_fields and k not in LIVE_KEYS]
    if fixed:
        raise UsageError(
            f"{', '.join(fixed)} cannot change on a running trainer (it is fixed when the run starts); "
            f"live-tunable keys: {', '.join(LIVE_KEYS)}"
        )
    try:
        return validate_settings(raw)
    except ControlError as e:
        raise UsageError(str(e)) from None


def cmd_watch(args: argparse.Namespace) -> int:
    from analysis.watch import watch

    return watch(
        args.store, once=args.once, webhook=args.webhook, rules_path=args.rules, interval_s=args.interval
    )


def cmd_dashboard(args: argparse.Namespace) -> int:
    if not Path(args.store).is_dir():
        raise UsageError(
            f"no run store at {args.store!r}; pass --store DIR (train a run first, or sample_runs)"
        )
    token = server_token(args.host, args.token)
    stop_on_signals()
    server = start_dashboard(args.store, args.host, args.port, token)
    try:
        door = "/?token=TOKEN (once per browser tab)" if token else ""
        print(
            f"entropyscope dashboard: http://{args.host}:{args.port}{door}; store {args.store}; Ctrl-C stops it"
        )
        return wait_server(server)
    finally:
        stop_server(server)


def cmd_export(args: argparse.Namespace) -> int:
    print(f"export: run {args.run_id} of {args.store} to {args.to} ...", flush=True)
    from analysis.export import export_run

    path = export_run(args.store, args.run_id, args.to)
    print(f"wrote {path}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from analysis.importers.importer import FOLLOW_INTERVAL_S, follow_source, import_source

    options = {"run_id": args.run_id, "fmt": args.format, "step_key": args.step_key, "map_path": args.map,
               "step_every": args.step_every}  # fmt: skip
    if args.follow:
        print(
            f"importing {args.source}, then new rows every {FOLLOW_INTERVAL_S:g} s; Ctrl-C stops", flush=True
        )
        stop = threading.Event()
        # a service manager's SIGTERM ends the follow as Ctrl-C does: the run is marked finished, not left
        # "running" for the stalled alert to flag
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        runs = follow_source(args.source, store=args.store, stop=stop, **options)
    else:
        print(f"import: reading {args.source} into {args.store} ...", flush=True)
        runs = import_source(args.source, store=args.store, **options)
    print("\n".join(run.line() for run in runs))
    return 0


def cmd_compact(args: argparse.Namespace) -> int:
    from analysis import run_ids

    if args.stale is not None and not args.stale >= 0:  # NaN too
        raise UsageError(f"--stale must be 0 or more seconds, got {args.stale:g}")
    if not args.grace >= 0:
        raise UsageError(f"--grace must be 0 or more seconds, got {args.grace:g}")
    for run_id in args.run_ids:
        run_ids.run_dir(args.store, run_id)
    print(f"compact: {' '.join(args.run_ids) or 'every run'} in {args.store} ...", flush=True)
    from analysis.compact import STALE_S, compact_runs  # pyarrow: a second's import
    from analysis.store_reader import StoreReader

    stale = STALE_S if args.stale is None else args.stale  # not the parser's default: it would import pyarrow
    reader = StoreReader(args.store)
    found = {d.name: d for d in reader.run_dirs()}
    missing = [r for r in args.run_ids if r not in found]
    if missing:
        raise UsageError(f"no run {missing[0]!r} in store {args.store!r}; list runs with `entropyscope runs`")
    dirs = [found[r] for r in args.run_ids] if args.run_ids else list(found.values())
    if not dirs:
        print(f"no runs in {args.store}")
        return 0
    failed = 0
    for run_id, ok, message in compact_runs(dirs, stale, args.grace):
        print(f"{run_id}: {message}", flush=True)
        failed += not ok
    return 1 if failed else 0


def cmd_compare(args: argparse.Namespace) -> int:
    import json

    from analysis.compare import compare, to_json, to_text

    result = compare(args.store, args.selections, args.metric)
    print(json.dumps(to_json(result), indent=2) if args.json else to_text(result))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    if not args.dry_run:  # a dry run's output is the plan alone
        print(f"sweep: reading {args.spec}, planning its runs in {args.store} ...", flush=True)
    from trainer.sweep import run_sweep

    return run_sweep(args.spec, args.store, args.parallel, args.backend, args.address, args.dry_run)


def add_server_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, default=8501, help="dashboard port (default 8501)")
    p.add_argument("--host", default="127.0.0.1", help="dashboard address (default 127.0.0.1)")
    p.add_argument(
        "--token",
        help=f"access token every browser must present (open the dashboard with ?token=TOKEN); required for any "
        f"--host but 127.0.0.1, {MIN_TOKEN_LEN}+ URL-safe characters (default: ${TOKEN_ENV})",
    )


HELP_WIDTH = 110
"""Help text is wrapped under this many characters (argparse wraps its own parts to the terminal)."""


def wrap_line(line: str, width: int, indent: int) -> str:
    """One help line wrapped under `width` characters, continuation lines indented by `indent`."""
    return textwrap.fill(line, width, subsequent_indent=" " * indent, break_on_hyphens=False)


def help_formatter(prog: str) -> argparse.HelpFormatter:
    """argparse's layout at the terminal's width, but never over HELP_WIDTH; epilogs kept as written."""
    width = min(shutil.get_terminal_size().columns - 2, HELP_WIDTH)
    return argparse.RawDescriptionHelpFormatter(prog, width=width)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="entropyscope", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func: Callable, help_: str, example: str) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            help=help_,
            description=textwrap.fill(help_, HELP_WIDTH),
            epilog=f"example: {example}",
            formatter_class=help_formatter,
        )
        p.set_defaults(func=func)
        p.add_argument(
            "--store", default=DEFAULT_STORE, help=f"run store directory (default ./{DEFAULT_STORE})"
        )
        return p

    p = add(
        "train",
        cmd_train,
        "train a policy and log entropy diagnostics to the run store",
        "entropyscope train config.yaml --set algo=dapo --set steps=300",
    )
    from trainer.config import config_help

    keys = "\n".join(
        wrap_line(line, HELP_WIDTH, 38) for line in config_help().splitlines()
    )  # 38: the text column
    p.epilog += f"\n\nconfig keys (YAML file or --set KEY=VALUE), with defaults:\n{keys}"
    p.add_argument("config", nargs="?", help="YAML file of config keys (listed below)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one config key")
    p.add_argument("--run-id", help="run directory name (default: generated)")
    p.add_argument("--resume", action="store_true", help="continue run --run-id from its last checkpoint")
    p.add_argument(
        "--nproc",
        type=int,
        default=1,
        help="train data-parallel in N processes on torch.distributed (config key dist: fsdp2 or ddp; "
        "docs/distributed.md); the same as torchrun --nproc_per_node N -m trainer.cli train ...",
    )
    p.add_argument("--sweep", help=argparse.SUPPRESS)  # run.json's sweep field, set by `entropyscope sweep`

    p = add(
        "demo",
        cmd_demo,
        "train a short GRPO run on the toy task and print its entropy and reward",
        "entropyscope demo --steps 60",
    )
    p.add_argument("--steps", type=int, default=200, help="training steps (default 200)")
    p.add_argument("--no-serve", action="store_true", help="train only; do not start the dashboard")
    add_server_flags(p)

    add(
        "runs",
        cmd_runs,
        "table of runs: status, H0, final and last entropy, change vs H0, final reward, heartbeat",
        "entropyscope runs --store runs",
    )

    p = add(
        "control",
        cmd_control,
        "send new controller settings to a running trainer (control.json) and wait for its acknowledgement",
        "entropyscope control grpo-repo_r-20261124 --set target_entropy=0.5 --set zeta_max=2",
    )
    from analysis.control import keys_help

    p.epilog += f"\n\nlive-tunable keys (--set KEY=VALUE), by the run's controller:\n{keys_help()}"
    p.add_argument("run_id")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a live-tunable key")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the ack (default 60)")

    p = add(
        "watch",
        cmd_watch,
        "evaluate alert rules over every run in the store; print transitions, POST them to a webhook",
        "entropyscope watch --store runs --once --webhook http://127.0.0.1:9000/hook",
    )
    p.add_argument("--once", action="store_true", help="one cycle, then exit 1 while a critical alert fires")
    p.add_argument("--webhook", help="URL that gets a JSON POST per transition (Slack-compatible `text`)")
    p.add_argument("--rules", help="alert rules YAML (default: analysis/default_alerts.yaml)")
    p.add_argument("--interval", type=float, default=30.0, help="seconds between cycles (default 30)")

    p = add(
        "dashboard",
        cmd_dashboard,
        "serve the Streamlit dashboard over a run store on 127.0.0.1",
        "entropyscope dashboard --store sample_runs --port 8501",
    )
    add_server_flags(p)

    p = add(
        "export",
        cmd_export,
        "export one run to a .duckdb file or its step metrics to a wide .csv",
        "entropyscope export grpo-none-20261124 --to run.duckdb",
    )
    p.add_argument("run_id")
    p.add_argument("--to", required=True, help="FILE.duckdb or FILE.csv")

    p = add(
        "import",
        cmd_import,
        "import runs from TensorBoard, MLflow, verl, TRL, JSONL/CSV or W&B offline logs into the store "
        "(again: only what is new)",
        "entropyscope import tensorboard_log/gsm8k/grpo --store runs",
    )
    p.add_argument("source", help="log file or folder, or MLflow tracking URI[#EXPERIMENT|RUN_ID,...]")
    p.add_argument("--run-id", help="run id in the store (default: derived from the source, stable)")
    p.add_argument("--format", default="auto", help="auto (by content), tensorboard, mlflow, verl, trl, hf-console, "
                   "openrlhf, ms-swift, jsonl, csv, wandb")  # fmt: skip
    p.add_argument("--follow", action="store_true", help="keep importing what the log appends, until Ctrl-C")
    p.add_argument("--map", metavar="FILE.yaml", help="extra name map (their_name: our_name) over ours")
    p.add_argument("--step-key", help="step field of a JSONL or CSV (default: step, global_step, _step, ...)")
    p.add_argument("--step-every", type=int, metavar="K",
                   help="HF console: the n-th log is step n x K (default: the log's logging_steps, else 1)")  # fmt: skip

    p = add(
        "compact",
        cmd_compact,
        "merge each ended run's segments into one per table (the trainer does it when a run finishes; this is "
        "for runs that failed, were killed, or were written before)",
        "entropyscope compact --store runs",
    )
    p.add_argument("run_ids", nargs="*", metavar="RUN_ID", help="runs to compact (default: every run)")
    p.add_argument(
        "--stale",
        type=float,
        default=None,
        help="compact a run marked running once its heartbeat is this many seconds old (default 600, the "
        "stalled alert's)",
    )
    p.add_argument(
        "--grace",
        type=float,
        default=60.0,
        help="remove merged parts only once they were superseded this many seconds ago, so a reader that "
        "listed them can still open them (default 60)",
    )

    p = add(
        "compare",
        cmd_compare,
        "compare groups of runs over seeds: final values' mean and IQM with bootstrap CIs, and for each pair the IQM "
        "ratio, P(A > B) and whether the difference is beyond seed noise (docs/statistics.md)",
        "entropyscope compare sweep=s1:controller=repo_r sweep=s1:controller=none --metric entropy/mean",
    )
    p.add_argument(
        "selections", nargs="+", metavar="A", help="run id, group name, or sweep=ID[:key=value,...]"
    )
    p.add_argument("--metric", required=True, help="step metric key whose final values are compared")
    p.add_argument("--json", action="store_true", help="print JSON: {metric, groups, pairs}")

    p = add(
        "sweep",
        cmd_sweep,
        "run a sweep spec: base config x parameters (grid, random or tpe) x seeds, each an ordinary run; again: "
        "skips finished runs, resumes the rest (docs/sweeps.md)",
        "entropyscope sweep setpoints.yaml --parallel 2",
    )
    p.add_argument("spec", metavar="SPEC.yaml", help="sweep spec: base, method, parameters, seeds, metric")
    p.add_argument("--parallel", type=int, help="trainings at once, one thread each (default: the cores)")
    p.add_argument(
        "--backend", choices=("local", "ray"), default="local", help="local processes or Ray tasks"
    )
    p.add_argument("--address", help="Ray cluster address (default: a local Ray instance)")
    p.add_argument("--dry-run", action="store_true", help="print the runs it would start, start none")
    return parser


def main(argv: list[str] | None = None) -> int:
    quiet_libraries()  # before any command imports transformers
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UsageError as e:
        print(f"entropyscope: error: {e}", file=sys.stderr)
        return 2
    except RunFailed as e:
        print(f"entropyscope: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # a store or output file on a full or read-only disk
        if e.errno not in STORE_FAULTS:
            raise
        print(
            f"entropyscope: error: {e.strerror} writing {e.filename}; free space or make it writable",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print("entropyscope: interrupted; completed segments and checkpoints are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
