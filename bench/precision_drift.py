"""Where naive bf16 drifts and bf16_fixed does not: rollout path (KV cache) vs training forward.

Run: `.venv/bin/python bench/precision_drift.py [--steps 5] [--models tiny-qwen2 small-qwen2]`
For each model and precision mode it trains with lr=0 (so the policy never moves and every difference is
numerical) on the warm-started policy, left-padded batches of digit_sum prompts, and prints the mean over
steps of the precision metrics side by side, with each mode's drift as a ratio to fp32's.
"""

import argparse
import tempfile
from pathlib import Path

from analysis import schema
from analysis.store_reader import StoreReader
from trainer.config import load_config
from trainer.loop import train

MODES = ("fp32", "bf16", "bf16_fixed")
KEYS = (
    schema.RATIO_ONPOLICY_DEV,
    schema.PRECISION_LOGP_DIFF_MEAN,
    schema.PRECISION_LOGP_DIFF_MAX,
    schema.PRECISION_PROB_DIFF_MAX,
    schema.PRECISION_LOGP_POS_FRAC,
    schema.PRECISION_PEARSON,
)


def measure(model: str, precision: str, steps: int, store: Path) -> dict[str, float]:
    run_id = f"{model}-{precision}"
    cfg = load_config(
        None,
        [
            f"model={model}",
            f"precision={precision}",
            f"steps={steps}",
            "lr=0",
            "checkpoint_every=0",
            "alerts=off",
        ],
    )
    train(cfg, store, run_id=run_id, progress=False)
    df = StoreReader(store).scalars([run_id], list(KEYS))
    return df.groupby("key")["value"].mean().to_dict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--models", nargs="+", default=["tiny-qwen2", "small-qwen2"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [(m, p, measure(m, p, args.steps, Path(tmp))) for m in args.models for p in MODES]
    short = [k.split("/")[-1] for k in KEYS]
    print(
        f"{'model':<12} {'precision':<11} " + " ".join(f"{s:>15}" for s in short) + f" {'logp_diff/fp32':>15}"
    )
    for model, precision, m in rows:
        fp32 = next(r for mm, p, r in rows if mm == model and p == "fp32")[schema.PRECISION_LOGP_DIFF_MEAN]
        ratio = m[schema.PRECISION_LOGP_DIFF_MEAN] / fp32 if fp32 else float("inf")
        print(f"{model:<12} {precision:<11} " + " ".join(f"{m[k]:>15.3g}" for k in KEYS) + f" {ratio:>15.1f}")


if __name__ == "__main__":
    main()
