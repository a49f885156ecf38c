"""Trainer steps at a real checkpoint's shape: time per phase and peak GPU memory, per precision mode.

    .venv/bin/python bench/scale.py [--steps 4] [--precisions fp32 bf16 bf16_fixed] [--layers 24]
                                    [--vocab 151936] [--set key=value ...]

Builds a model of Qwen2-0.5B's shape (hidden 896, 24 layers, 14 heads, 2 KV heads, MLP 4864, vocab 151,936,
tied embeddings) with random weights and the project's tokenizer, saves it as a local Hugging Face
directory (no download) and trains it through `model=PATH`, as any local checkpoint: GRPO on digit_sum,
the trainer's default batch (16 prompts x 8 completions, up to 6 new tokens). Random weights sample almost
uniformly over the vocabulary, so every response runs to max_new_tokens and gets reward 0: the costs are
real, the learning is not. `--layers` / `--vocab` shrink the model to run on a CPU.

Also times drawing one token for the whole batch from its (B, V) probabilities on the model's device
(what the rollout does) against copying them to the host and drawing there (what it did before).

Columns: s/step, rollout, diagnostics, update = medians over the steps after the first (which pays for
kernel selection and allocator growth); tokens/s = response tokens per second of step time; peak GiB =
torch.cuda.max_memory_allocated over the whole run (CUDA only).
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, Qwen2Config

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analysis import schema  # noqa: E402
from analysis.store_reader import StoreReader  # noqa: E402
from trainer.config import load_config  # noqa: E402
from trainer.loop import pick_device, train  # noqa: E402
from trainer.rollout import device_generator  # noqa: E402
from trainer.tokenizer import build_char_tokenizer  # noqa: E402

PRECISIONS = ["fp32", "bf16", "bf16_fixed"]
PHASES = [schema.TIME_STEP, schema.TIME_ROLLOUT, schema.TIME_DIAGNOSTICS, schema.TIME_UPDATE]


def save_model(where: Path, layers: int, vocab: int) -> int:
    """A random-init Qwen2-0.5B-shaped model and the project's tokenizer in `where`; its parameter count."""
    tokenizer = build_char_tokenizer()
    config = Qwen2Config(
        vocab_size=vocab,
        hidden_size=896,
        num_hidden_layers=layers,
        num_attention_heads=14,
        num_key_value_heads=2,
        intermediate_size=4864,
        max_position_embeddings=32768,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(where)
    tokenizer.save_pretrained(where)
    return sum(p.numel() for p in model.parameters())


def train_steps(
    store: Path, model_dir: Path, precision: str, steps: int, sets: list[str]
) -> dict[str, float]:
    cfg = load_config(
        None,
        [
            f"model={model_dir}",
            f"precision={precision}",
            f"steps={steps}",
            "checkpoint_every=0",
            "alerts=off",
            *sets,
        ],
    )
    cuda = pick_device(cfg.device).type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    train(cfg, store, run_id=precision, progress=False)
    df = StoreReader(store).scalars([precision], [*PHASES, schema.THROUGHPUT_TOKENS], max_points=100_000)
    later = df[df["step"] > 1]
    out = {key: statistics.median(g["value"]) for key, g in later.groupby("key")}
    out["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    return out


def time_draw(probs: torch.Tensor, on_host: bool, reps: int = 10) -> float:
    """Median seconds to draw one token per row of `probs`, on its device or after a copy to the host."""
    gen = torch.Generator().manual_seed(0)
    draw = gen if on_host else device_generator(gen, probs.device)
    times = []
    for _ in range(reps + 2):  # two warm-ups
        if probs.is_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        tok = torch.multinomial(probs.cpu() if on_host else probs, 1, generator=draw)
        tok.to(probs.device).sum().item()  # both paths end with the tokens on the device, synchronised
        times.append(time.perf_counter() - t0)
    return statistics.median(times[2:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=PRECISIONS)
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--vocab", type=int, default=151936)
    parser.add_argument("--set", dest="sets", action="append", default=[], help="key=value for every run")
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error("--steps must be at least 2: the first step is left out of the medians")
    with tempfile.TemporaryDirectory(prefix="scale-bench-") as tmp:
        model_dir, store = Path(tmp) / "model", Path(tmp) / "store"
        params = save_model(model_dir, args.layers, args.vocab)
        rows = {p: train_steps(store, model_dir, p, args.steps, args.sets) for p in args.precisions}
    cfg = load_config(None, args.sets)
    device = pick_device(cfg.device)
    batch = cfg.prompts_per_step * cfg.group_size
    where = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(
        f"model: Qwen2-0.5B shape, {args.layers} layers, vocab {args.vocab}, {params / 1e6:.0f}M parameters"
    )
    print(f"device: {where}, torch {torch.__version__}; batch {batch} sequences, {args.steps} steps per row")
    print(
        f"{'precision':<10} {'s/step':>7} {'rollout':>8} {'diagnostics':>11} {'update':>7} {'tokens/s':>9} {'peak GiB':>8}"
    )
    for p, r in rows.items():
        print(
            f"{p:<10} {r[schema.TIME_STEP]:>7.3f} {r[schema.TIME_ROLLOUT]:>8.3f} {r[schema.TIME_DIAGNOSTICS]:>11.3f}"
            f" {r[schema.TIME_UPDATE]:>7.3f} {r[schema.THROUGHPUT_TOKENS]:>9.0f} {r['peak_gib']:>8.2f}"
        )
    probs = torch.softmax(torch.randn(batch, args.vocab, device=device), -1)
    host, here = time_draw(probs, on_host=True), time_draw(probs, on_host=False)
    print(f"\ndraw one token for {batch} sequences over {args.vocab:,} tokens ({device.type}):")
    print(
        f"host (copy, then multinomial) {host * 1e3:.2f} ms; on the device {here * 1e3:.2f} ms; {host / here:.1f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
