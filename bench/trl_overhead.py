"""What the entropyscope integration costs a TRL GRPO step: the same config with trl.GRPOTrainer and with
EntropyScopeGRPOTrainer, side by side in one process, alternating (ABBA) so machine load hits both alike.

    python bench/trl_overhead.py [--steps 20] [--reps 2] [--model tiny-qwen2] [--batch 64]

Step time = TRL's on_step_begin to the end of on_step_end (generation, reward, forward/backward, optimizer and,
with the integration, our diagnostics, store writes, control and alert checks), median over steps after the
first two; one CPU thread. Goal: with / without <= 1.10.
"""

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from transformers import TrainerCallback  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

from trainer.integrations.trl import EntropyScopeGRPOTrainer  # noqa: E402
from trainer.integrations.trl_demo import digit_sum_setup  # noqa: E402


class StepTimer(TrainerCallback):
    """Per-step wall time; added last, so its on_step_end runs after the integration's."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._t0 = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._t0)


def step_times(scoped: bool, args: argparse.Namespace, tmp: str) -> list[float]:
    model, tokenizer, dataset, reward = digit_sum_setup(args.model, seed=0)
    config = GRPOConfig(
        output_dir=tmp, max_steps=args.steps, per_device_train_batch_size=args.batch, num_generations=8,
        max_completion_length=6, learning_rate=1e-3, logging_steps=10, save_strategy="no", report_to=[],
        use_cpu=True, seed=0, disable_tqdm=True,
    )  # fmt: skip
    kwargs = dict(
        model=model, reward_funcs=reward, args=config, train_dataset=dataset, processing_class=tokenizer
    )
    if scoped:
        trainer = EntropyScopeGRPOTrainer(**kwargs, store=os.path.join(tmp, "store"))
    else:
        trainer = GRPOTrainer(**kwargs)
    timer = StepTimer()
    trainer.add_callback(timer)
    trainer.train()
    return timer.times[2:]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--reps", type=int, default=2, help="ABBA rounds (each: 2 runs of each variant)")
    p.add_argument("--model", default="tiny-qwen2")
    p.add_argument("--batch", type=int, default=64, help="sequences per step (8 per prompt)")
    args = p.parse_args()
    torch.set_num_threads(1)
    times: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            for i, scoped in enumerate((False, True, True, False)):
                times[scoped] += step_times(scoped, args, os.path.join(tmp, f"{rep}-{i}"))
    plain, scoped = statistics.median(times[False]), statistics.median(times[True])
    print(f"model {args.model}, {args.batch} sequences/step, {len(times[True])} timed steps per variant")
    print("variant                      median step s   ratio")
    print(f"trl.GRPOTrainer              {plain:13.4f}   1.000")
    print(f"EntropyScopeGRPOTrainer      {scoped:13.4f}   {scoped / plain:.3f}")


if __name__ == "__main__":
    main()
