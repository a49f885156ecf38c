"""What the entropyscope integration costs a TRL GRPO step: the same config with trl.GRPOTrainer and with
EntropyScopeGRPOTrainer, side by side in one process, alternating (ABBA) so machine load hits both alike.

    python bench/trl_overhead.py [--steps 20] [--reps 2] [--model tiny-qwen2] [--batch 64]

Step time = from one optimizer step's end to the next (generation, reward, forward/backward, optimizer, TRL's
logging and, with the integration, our diagnostics, background store writes, control and alert checks), median
over steps after the first two, as wall time and as this process's CPU time (all threads): on a machine shared
with other work the CPU time is the steadier measure of what the integration adds. One torch thread.
Goal: with / without <= 1.10.
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
    """(wall, CPU) seconds between consecutive step ends; added last, so it runs after the integration's hook."""

    def __init__(self) -> None:
        self.times: list[tuple[float, float]] = []
        self._last: tuple[float, float] | None = None

    def on_step_end(self, args, state, control, **kwargs):
        now = (time.perf_counter(), time.process_time())
        if self._last is not None:
            self.times.append((now[0] - self._last[0], now[1] - self._last[1]))
        self._last = now


def step_times(scoped: bool, args: argparse.Namespace, tmp: str) -> list[tuple[float, float]]:
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
    return timer.times[1:]  # from the third step end on


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--reps", type=int, default=2, help="ABBA rounds (each: 2 runs of each variant)")
    p.add_argument("--model", default="tiny-qwen2")
    p.add_argument("--batch", type=int, default=64, help="sequences per step (8 per prompt)")
    args = p.parse_args()
    torch.set_num_threads(1)
    times: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            for i, scoped in enumerate((False, True, True, False)):
                times[scoped] += step_times(scoped, args, os.path.join(tmp, f"{rep}-{i}"))
    med = {k: [statistics.median(t[i] for t in v) for i in (0, 1)] for k, v in times.items()}
    print(f"model {args.model}, {args.batch} sequences/step, {len(times[True])} timed steps per variant")
    print("variant                  wall s/step  ratio   CPU s/step  ratio")
    for name, key in (("trl.GRPOTrainer", False), ("EntropyScopeGRPOTrainer", True)):
        (wall, cpu), (wall0, cpu0) = med[key], med[False]
        print(f"{name:<24} {wall:11.4f}  {wall / wall0:5.3f}  {cpu:10.4f}  {cpu / cpu0:5.3f}")


if __name__ == "__main__":
    main()
