"""One rank of the 2-process TRL test (tests/test_trl_ranks.py), started by torch.distributed.run on CPU (gloo).

Writes <out>/rank<R>.json: what TRL logged, and the config this rank's session had in force at each step."""

import json
import sys
from pathlib import Path

from transformers import TrainerCallback
from trl_setup import make_trainer, trl_logs


class InForce(TrainerCallback):
    """The target this rank's controller session holds after each step (runs after the integration's hook)."""

    def __init__(self, trainer) -> None:
        self.trainer, self.seen = trainer, []

    def on_step_end(self, args, state, control, **kwargs):
        self.seen.append([state.global_step, self.trainer._es.cfg.target_entropy])


class WriteControlOnMain(TrainerCallback):
    def __init__(self, trainer, run_dir: Path) -> None:
        self.trainer, self.run_dir = trainer, run_dir

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == 1 and self.trainer.accelerator.is_main_process:
            (self.run_dir / "control.json").write_text(
                json.dumps({"version": 1, "settings": {"target_entropy": 2.5}})
            )


def main() -> None:
    store, out = Path(sys.argv[1]), Path(sys.argv[2])
    trainer = make_trainer(
        store,
        "ranks",
        out / "trl",
        scope={"controller": "repo_r"},  # target_entropy acts only with a controller
        max_steps=3,
        per_device_train_batch_size=4,
        num_iterations=2,
    )
    seen = InForce(trainer)
    trainer.add_callback(WriteControlOnMain(trainer, store / "ranks"))
    trainer.add_callback(seen)
    trainer.train()
    rank = trainer.accelerator.process_index
    (out / f"rank{rank}.json").write_text(json.dumps({"trl": trl_logs(trainer), "in_force": seen.seen}))


if __name__ == "__main__":
    main()
