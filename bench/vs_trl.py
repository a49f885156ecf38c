"""Our trainer against TRL's GRPOTrainer on the same model, batch and response length, side by side in one run.

    .venv/bin/python bench/vs_trl.py [--steps 4] [--sizes tiny mid] [--new-tokens 16] [--repeat 3]
    .venv/bin/python bench/vs_trl.py --sizes tiny --new-tokens 16 64 256     # growth with response length
    .venv/bin/python bench/vs_trl.py --sizes tiny mid --nproc 1 2 --no-trl   # ours with N processes

Both sides train the same random-init Qwen2 saved as a local directory (tiny: hidden 64, 2 layers, the
project's ~100-token vocabulary; mid: hidden 256, 4 layers, vocab 32,000) on digit_sum: 16 prompts x 8
completions of up to `--new-tokens` tokens per generation, two optimizer steps of 64 sequences per
generation (ours: minibatches=2; TRL: per_device_train_batch_size=64, steps_per_generation=2), one torch
thread, CPU. Random weights rarely sample eos, so responses run to (nearly) the full length on both sides;
the mean length is printed. Ours runs with every diagnostic on (full-vocabulary entropy of every token,
precision and clip metrics, token records, histograms, samples, store writes); TRL with its defaults
(beta 0: no reference model) except bf16=False and gradient_checkpointing=False, which TRL 1.16 turns on
by default and which would make it compute in (CPU-emulated) bf16 and recompute the body in backward.

Time per step = wall time from one generation's end of update to the next's, median over the steps after
the first (which pays for allocator growth): for ours, from the store's wall_time of consecutive steps
(rollout + diagnostics + update + logging); for TRL, two optimizer steps (one generation) from its callback.
Goals (issue 16): ours / TRL <= 0.7 on tiny, <= 0.5 on mid. On a shared machine one run's TRL time varies by
up to 1.3x from run to run, so `--repeat N` alternates N runs of each side and reports the median ratio and
its range.

FLOP floor of each phase of our step: model FLOPs (2 per weight per token through the linear layers and
the head; attention scores, norms and softmax left out) at this machine's measured 1-thread fp32 matmul
rate: the rollout's prefill and decode forwards, the old-log-prob forward (diagnostics; head on response
tokens only), and the update's forward + backward (3x a forward, plus one head forward recomputed by the
chunked head's activation checkpointing when a minibatch spans several chunks). `floor %` = floor time / measured time of that phase.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, Qwen2Config, TrainerCallback  # noqa: E402

from analysis import schema  # noqa: E402
from analysis.store_reader import StoreReader  # noqa: E402
from trainer.config import load_config  # noqa: E402
from trainer.loop import train  # noqa: E402
from trainer.tokenizer import build_char_tokenizer  # noqa: E402

SIZES = {"tiny": (64, 2, None), "mid": (256, 4, 32000)}  # hidden, layers, vocab (None: the tokenizer's)
PROMPTS, GROUP, MINIBATCHES = 16, 8, 2


def save_model(where: Path, hidden: int, layers: int, vocab: int | None) -> None:
    tokenizer = build_char_tokenizer()
    config = Qwen2Config(
        vocab_size=vocab or len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=4 * hidden,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(
        config, dtype=torch.float32, attn_implementation="eager"
    ).save_pretrained(where)
    tokenizer.save_pretrained(where)


def matmul_rate() -> float:
    """FLOP/s of a 1024^3 fp32 matmul on one thread, best of 5."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * 1024**3 / best


def flop_floor(model_dir: Path, prompt_len: int, response_len: int, rate: float) -> dict[str, float]:
    """Seconds each phase of one step would take at `rate` doing only its linear-layer FLOPs."""
    config = Qwen2Config.from_pretrained(model_dir)
    d, kv = config.hidden_size, config.hidden_size // config.num_attention_heads * config.num_key_value_heads
    body = config.num_hidden_layers * (2 * d * d + 2 * d * kv + 3 * d * config.intermediate_size)
    head = config.vocab_size * d
    b, t = PROMPTS * GROUP, prompt_len + response_len
    rollout = 2 * b * (body * t + head * (response_len + 1))  # prefill + decode, head at each drawn token
    forward = 2 * b * (body * t + head * response_len)  # training path: head on response states only
    # The chunked head recomputes its forward in backward only when a minibatch spans several chunks.
    several = b // MINIBATCHES * response_len > load_config(None, []).entropy_chunk
    recompute = 2 * b * head * response_len if several else 0
    return {
        "rollout": rollout / rate,
        "diagnostics": forward / rate,
        "update": (3 * forward + recompute) / rate,
    }


def ours(model_dir: Path, steps: int, new_tokens: int, store: Path, nproc: int = 1) -> dict[str, float]:
    """Our trainer in this process, or with `nproc` > 1 as `entropyscope train --nproc N` (FSDP2)."""
    sets = [f"model={model_dir}", f"steps={steps}", f"prompts_per_step={PROMPTS}", f"group_size={GROUP}"]
    sets += [
        f"max_new_tokens={new_tokens}",
        f"minibatches={MINIBATCHES}",
        "checkpoint_every=0",
        "alerts=off",
        "threads=1",
    ]
    run_id = f"ours-{model_dir.name}-{new_tokens}-{nproc}"
    if nproc == 1:
        train(load_config(None, sets), store, run_id=run_id, progress=False)
    else:
        cmd = [sys.executable, "-m", "trainer.cli", "train", "--nproc", str(nproc), "--store", str(store)]
        cmd += ["--run-id", run_id, *(f"--set={s}" for s in sets)]
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    df = StoreReader(store).scalars(
        [run_id], [schema.TIME_ROLLOUT, schema.TIME_DIAGNOSTICS, schema.TIME_UPDATE]
    )
    walls = (
        StoreReader(store).table("steps", [run_id]).groupby("step")["wall_time"].max().sort_index().tolist()
    )
    after_first = df[df["step"] > 1].groupby("key")["value"].median()
    lens = StoreReader(store).scalars([run_id], [schema.RESPONSE_LEN_MEAN])["value"]
    sample = StoreReader(store).samples(run_id, 2)
    return {
        "prompt_len": float(sample["prompt_token_ids"].map(len).max()),
        "response_len": float(sample["response_token_ids"].map(len).max()),
        "step": statistics.median(b - a for a, b in zip(walls[1:], walls[2:], strict=False))
        if len(walls) > 2
        else float("nan"),
        "rollout": after_first[schema.TIME_ROLLOUT],
        "diagnostics": after_first[schema.TIME_DIAGNOSTICS],
        "update": after_first[schema.TIME_UPDATE],
        "len": float(lens.mean()),
    }


class StepTimer(TrainerCallback):
    """Wall time at each optimizer step's end."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.ends.append(time.perf_counter())


def trl(model_dir: Path, steps: int, new_tokens: int, tmp: str) -> dict[str, float]:
    from trl import GRPOConfig, GRPOTrainer

    from trainer.integrations.trl_demo import digit_sum_setup

    model, tokenizer, dataset, reward = digit_sum_setup(
        str(model_dir), seed=0, n_prompts=PROMPTS * (steps + 1)
    )
    config = GRPOConfig(
        output_dir=tmp, max_steps=2 * steps, per_device_train_batch_size=64, steps_per_generation=2,
        num_generations=GROUP, max_completion_length=new_tokens, learning_rate=1e-3, logging_steps=1,
        save_strategy="no", report_to=[], use_cpu=True, seed=0, disable_tqdm=True,
        bf16=False, gradient_checkpointing=False,  # as ours: fp32, no activation recompute of the body
    )  # fmt: skip
    trainer = GRPOTrainer(
        model=model, reward_funcs=reward, args=config, train_dataset=dataset, processing_class=tokenizer
    )
    timer = StepTimer()
    trainer.add_callback(timer)
    trainer.train()
    per_gen = [b - a for a, b in zip(timer.ends[1::2], timer.ends[3::2], strict=False)]  # one generation each
    lens = [h["completions/mean_length"] for h in trainer.state.log_history if "completions/mean_length" in h]
    return {"step": statistics.median(per_gen), "len": statistics.mean(lens)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--new-tokens", type=int, nargs="+", default=[16])
    parser.add_argument("--nproc", type=int, nargs="+", default=[1], help="ours with each process count")
    parser.add_argument("--no-trl", action="store_true", help="time ours only")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each side, alternated (default: 1)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rate = matmul_rate()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            model_dir = Path(tmp) / size
            save_model(model_dir, *SIZES[size])
            for n in args.new_tokens:
                for nproc in args.nproc:
                    with_trl = not args.no_trl and nproc == 1
                    a, b = [], []
                    for rep in range(args.repeat):  # alternated, so a slow spell of the machine hits both
                        a.append(ours(model_dir, args.steps, n, Path(tmp) / f"store{rep}", nproc))
                        if with_trl:
                            b.append(trl(model_dir, args.steps, n, f"{tmp}/trl-{size}-{n}-{rep}"))
                    floor = flop_floor(model_dir, int(a[0]["prompt_len"]), int(a[0]["response_len"]), rate)
                    rows.append((size, n, nproc, a, b, floor))
    print(f"{PROMPTS} prompts x {GROUP} completions, {args.steps} steps, 1 thread per process, CPU, "
          f"{args.repeat} run(s) of each side: medians, and the ratio's range over runs")  # fmt: skip
    print(
        "| model | new tokens | processes | ours s/step | rollout | diagnostics | update | TRL s/step | ours / TRL | mean len ours / TRL |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for size, n, nproc, a, b, _ in rows:
        ours_med = {k: statistics.median(r[k] for r in a) for k in a[0]}
        if b:
            ratios = [x["step"] / y["step"] for x, y in zip(a, b, strict=True)]
            spread = f" ({min(ratios):.2f}-{max(ratios):.2f})" if len(ratios) > 1 else ""
            theirs = (
                f"{statistics.median(y['step'] for y in b):.2f} | {statistics.median(ratios):.2f}x{spread} | "
                f"{ours_med['len']:.1f} / {statistics.median(y['len'] for y in b):.1f}"
            )
        else:
            theirs = f"- | - | {ours_med['len']:.1f} / -"
        print(
            f"| {size} | {n} | {nproc} | {ours_med['step']:.2f} | {ours_med['rollout']:.2f} | "
            f"{ours_med['diagnostics']:.2f} | {ours_med['update']:.2f} | {theirs} |"
        )
    print(
        f"\nFLOP floor at {rate / 1e9:.1f} GFLOP/s (1-thread fp32 matmul): floor seconds (floor % of measured)"
    )
    print("| model | new tokens | processes | rollout | diagnostics | update |")
    print("|---|---|---|---|---|---|")
    for size, n, nproc, a, _, floor in rows:
        measured = {k: statistics.median(r[k] for r in a) for k in floor}
        cells = [
            f"{floor[k]:.3f} ({100 * floor[k] / measured[k]:.0f}%)"
            for k in ("rollout", "diagnostics", "update")
        ]
        print(f"| {size} | {n} | {nproc} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
