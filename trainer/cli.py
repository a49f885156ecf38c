"""`entropyscope` command line: train, demo, runs, export. Each command is a thin call into the library.

Bad input (config, flags, paths) prints one line `entropyscope: error: ...` and exits with code 2.
"""

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from analysis.errors import UsageError

DEFAULT_STORE = "runs"
DEMO_OVERRIDES = ["checkpoint_every=0"]


def cmd_train(args: argparse.Namespace) -> int:
    from trainer.config import load_config

    cfg = load_config(args.config, args.set)  # before importing torch, so bad input fails in a blink
    from trainer.loop import train

    summary = train(cfg, Path(args.store), run_id=args.run_id, resume=args.resume)
    print("\n".join(summary.lines()))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from trainer.config import load_config
    from trainer.loop import train

    cfg = load_config(None, [*DEMO_OVERRIDES, f"steps={args.steps}"])
    print(f"demo: GRPO on {cfg.task} with {cfg.model}, {cfg.steps} steps, CPU-friendly; store {args.store}")
    summary = train(cfg, Path(args.store))
    print("\n".join(summary.lines()))
    print(f"inspect it: entropyscope runs --store {args.store}")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from analysis.store_reader import StoreReader

    table = StoreReader(args.store).runs()
    if table.empty:
        print(f"no runs in {args.store}")
        return 0
    cols = [
        "run_id",
        "status",
        "last_step",
        "algo",
        "controller",
        "precision",
        "h0",
        "entropy",
        "entropy_change",
        "reward",
        "heartbeat_age_s",
    ]
    print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


def cmd_control(args: argparse.Namespace) -> int:
    from analysis.control import APPLIED, ControlError, wait_for_ack, write_control
    from trainer.config import parse_overrides

    run_dir = Path(args.store) / args.run_id
    if not (run_dir / "run.json").is_file():
        raise UsageError(
            f"no run {args.run_id!r} in store {args.store!r}; list runs with `entropyscope runs`"
        )
    try:
        version = write_control(run_dir, parse_overrides(args.set))
    except ControlError as e:
        raise UsageError(str(e)) from None
    print(f"wrote {run_dir / 'control.json'} version {version}; waiting for the trainer...")
    ack = wait_for_ack(args.store, args.run_id, version, args.timeout)
    if ack is None:
        print(
            f"entropyscope: error: no acknowledgement of version {version} within {args.timeout:g} s",
            file=sys.stderr,
        )
        return 1
    if ack["kind"] != APPLIED:
        print(f"entropyscope: error: step {ack['step']}: {ack['message']}", file=sys.stderr)
        return 2
    print(f"step {ack['step']}: {ack['message']}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from analysis.export import export_run

    path = export_run(args.store, args.run_id, args.to)
    print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="entropyscope", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func: Callable, help_: str, example: str) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            help=help_,
            description=help_,
            epilog=f"example: {example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
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

    p.epilog += f"\n\nconfig keys (YAML file or --set KEY=VALUE), with defaults:\n{config_help()}"
    p.add_argument("config", nargs="?", help="YAML file of config keys (listed below)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one config key")
    p.add_argument("--run-id", help="run directory name (default: generated)")
    p.add_argument("--resume", action="store_true", help="continue run --run-id from its last checkpoint")

    p = add(
        "demo",
        cmd_demo,
        "train a short GRPO run on the toy task and print its entropy and reward",
        "entropyscope demo --steps 60",
    )
    p.add_argument("--steps", type=int, default=200, help="training steps (default 200)")

    add("runs", cmd_runs, "table of runs with status and last entropy", "entropyscope runs --store runs")

    p = add(
        "control",
        cmd_control,
        "send new controller settings to a running trainer (control.json) and wait for its acknowledgement",
        "entropyscope control grpo-repo_r-20261124 --set target_entropy=0.5 --set zeta_max=2",
    )
    p.add_argument("run_id")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a live-tunable key")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the ack (default 60)")

    p = add(
        "export",
        cmd_export,
        "export one run to a .duckdb file or its step metrics to a wide .csv",
        "entropyscope export grpo-none-20261124 --to run.duckdb",
    )
    p.add_argument("run_id")
    p.add_argument("--to", required=True, help="FILE.duckdb or FILE.csv")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UsageError as e:
        print(f"entropyscope: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("entropyscope: interrupted; completed segments and checkpoints are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
