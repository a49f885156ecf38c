"""GRPO with Hugging Face TRL, watched and steered by entropyscope: TRL's GRPOTrainer plus three lines.

    python examples/trl_grpo.py [--store DIR] [--steps N] [--model PATH] [--controller NAME] [--target-entropy H]
                                [--set KEY=VALUE ...] [--prompts N] [--trl FIELD=VALUE ...]
    entropyscope dashboard --store DIR          # then: Runs -> the trl-... run; Control page to steer it live

The only change to a TRL script is the trainer class, `EntropyScopeGRPOTrainer` (a GRPOTrainer), and its
`store=` / `scope=` arguments; everything else below is plain TRL. Each optimizer step writes entropy, clip
and quadrant fractions, reward and pass@k, per-token records, samples and entropy histograms to the store,
reads the run's control.json (target_entropy, controller gains, clip range) and judges the alert rules.

Default model: the tiny-qwen2 preset, warm-started offline on digit_sum ("3+5=" -> "8"; reward 1 for the
right sum) as our own trainer does; --model PATH takes any local Hugging Face causal LM with a tokenizer.
Deliberately simple: one process on CPU, no reference model (beta 0), one rollout batch per optimizer step.
"""

import argparse
import dataclasses
import os
import sys
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

from analysis.errors import UsageError  # noqa: E402
from trainer.config import parse_overrides  # noqa: E402
from trainer.integrations.session import CONTROLLERS  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog="example: python examples/trl_grpo.py --steps 50 --controller repo_r",
    )
    p.add_argument("--store", default="runs", help="run store directory (default: ./runs)")
    p.add_argument("--steps", type=int, default=100, help="optimizer steps (default: 100)")
    p.add_argument(
        "--model", default="tiny-qwen2", help="a preset name or a local Hugging Face model directory"
    )
    p.add_argument(
        "--controller", default="none", choices=CONTROLLERS, help="entropy controller (default: none)"
    )
    p.add_argument("--target-entropy", type=float, default=None, help="setpoint in nats (default: H0)")
    p.add_argument(
        "--run-id", default=None, help="the run's folder in the store (default: trl-<controller>-...)"
    )
    for flag, dest, what in (
        ("--set", "knobs", "another entropyscope knob, e.g. zeta_max=3 or bonus_coef_max=0.1"),
        ("--trl", "trl_fields", "a GRPOConfig field, e.g. num_iterations=2 or steps_per_generation=2"),
    ):
        p.add_argument(
            flag, dest=dest, action="append", default=[], metavar="KEY=VALUE", help=f"{what} (repeatable)"
        )
    p.add_argument(
        "--prompts", type=int, default=8, help="prompts per optimizer step, 8 completions each (default: 8)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate (default: 1e-3)")
    p.add_argument("--out", default=None, help="TRL's output_dir (default: <store>/.trl/<run>)")
    args = p.parse_args(argv)
    if args.steps < 1:
        p.error(f"--steps must be at least 1, got {args.steps}")
    if args.prompts < 1:
        p.error(f"--prompts must be at least 1, got {args.prompts}")
    return args


def fits(value: Any, default: Any) -> bool:
    """Whether `value` has the type of a numeric or boolean field's default (ints pass for floats)."""
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int | float):
        wanted = (int, float) if isinstance(default, float) else int
        return isinstance(value, wanted) and not isinstance(value, bool)
    return True


def grpo_config(cls: type, fields: list[str], **defaults: Any) -> Any:
    """TRL's GRPOConfig from the example's defaults and the `--trl KEY=VALUE` fields; UsageError on bad ones."""
    known = {f.name: f.default for f in dataclasses.fields(cls)}
    for pair in fields:
        key = pair.partition("=")[0].strip()
        if "=" not in pair or key not in known:
            raise UsageError(f"--trl expects KEY=VALUE with KEY a GRPOConfig field, got {pair!r}")
    given = parse_overrides(fields)
    for key, value in given.items():
        if not fits(value, known[key]):
            raise UsageError(
                f"--trl {key}={value!r}: expected {type(known[key]).__name__} (default {known[key]!r})"
            )
    try:
        return cls(**{**defaults, **given})
    except (TypeError, ValueError) as e:
        raise UsageError(f"--trl: {str(e).strip().splitlines()[0]}") from None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)  # tiny matmuls: more threads only spin on a shared machine
    from trl import GRPOConfig

    from trainer.integrations.trl import EntropyScopeGRPOTrainer, check_scope
    from trainer.integrations.trl_demo import digit_sum_setup

    scope = {
        "controller": args.controller,
        "target_entropy": args.target_entropy,
        **parse_overrides(args.knobs),
    }
    scope = check_scope({k: v for k, v in scope.items() if v is not None})  # before the warm-up, not after

    config = grpo_config(
        GRPOConfig,
        args.trl_fields,
        output_dir=args.out or os.path.join(args.store, ".trl", args.run_id or "run"),
        max_steps=args.steps,
        per_device_train_batch_size=8 * args.prompts,
        num_generations=8,
        max_completion_length=6,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        temperature=1.0,
        logging_steps=10,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=args.seed,
        disable_tqdm=True,
    )
    model, tokenizer, dataset, reward = digit_sum_setup(args.model, args.seed)
    trainer = EntropyScopeGRPOTrainer(
        model=model,
        reward_funcs=reward,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        store=args.store,
        run_id=args.run_id,
        scope=scope,
    )
    trainer.train()
    print(f"run {trainer.es_run_id}: {trainer.state.global_step} steps in {args.store}; "
          f"open it with: entropyscope dashboard --store {args.store}")  # fmt: skip
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UsageError as err:
        print(f"entropyscope: error: {err}", file=sys.stderr)
        sys.exit(2)
