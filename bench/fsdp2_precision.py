"""The FSDP2 casting trap and its fix, measured with 2 processes on CPU (gloo): rollout path vs training forward.

Run: `.venv/bin/python bench/fsdp2_precision.py [--steps 5] [--nproc 2] [--models tiny-qwen2 small-qwen2]`
Each model and precision mode trains with lr=0 (every difference is numerical) under `dist=fsdp2`:
`bf16` puts MixedPrecisionPolicy(param_dtype=bf16) on every FSDP unit, the root holding the head and the
final norm included, so the head runs in bf16 and the logits are bf16 before any upcast (the trap);
`bf16_fixed` casts only the decoder layers and keeps the root (embeddings, final norm, head) in fp32, with
fp32 log-softmax. `bf16_fixed+trap` runs bf16_fixed's code under the whole-model policy (the root cast to
bf16 as well), which is what an FSDP2 user who turns mixed precision on everywhere gets: the head weight and
the final norm are rounded to bf16 before the fp32 log-softmax. Prints the mean over steps of the precision
metrics, as bench/precision_drift.py does for one process.
"""

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from precision_drift import KEYS  # noqa: E402  (the single-process bench's columns; bench/ is on sys.path)

from analysis.store_reader import StoreReader  # noqa: E402
from trainer.launch import spawn  # noqa: E402

MODES = ("fp32", "bf16", "bf16_fixed", "bf16_fixed+trap")


def measure(model: str, mode: str, steps: int, nproc: int, store: Path) -> dict[str, float]:
    precision, trap = mode.removesuffix("+trap"), mode.endswith("+trap")
    run_id = f"{model}-{mode}"
    sets = [f"model={model}", f"precision={precision}", f"steps={steps}", "lr=0", "dist=fsdp2"]
    sets += ["checkpoint_every=0", "alerts=off", "threads=1"]
    argv = ["train", "--store", str(store), "--run-id", run_id, *(f"--set={s}" for s in sets)]
    program = [sys.executable, __file__, "--worker"] if trap else None
    if spawn(argv, nproc, program) != 0:
        raise SystemExit(f"run {run_id} failed")
    df = StoreReader(store).scalars([run_id], list(KEYS))
    return df.groupby("key")["value"].mean().to_dict()


def trap_worker(argv: list[str]) -> int:
    """One rank of a `+trap` run: the CLI with the root's mixed precision policy cast to bf16 too."""
    from trainer import cli, distributed

    distributed.BF16_ROOT["bf16_fixed"] = True
    return cli.main(argv)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=["tiny-qwen2", "small-qwen2"])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [
            (m, p, measure(m, p, args.steps, args.nproc, Path(tmp))) for m in args.models for p in args.modes
        ]
    print(f"| model | precision | {' | '.join(k for k in KEYS)} |")
    print("|---|---|" + "---|" * len(KEYS))
    for model, precision, m in rows:
        print(f"| {model} | {precision} | " + " | ".join(f"{m[k]:.2g}" for k in KEYS) + " |")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        sys.exit(trap_worker(sys.argv[2:]))
    main()
