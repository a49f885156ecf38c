"""Supervised warm-up: turn a randomly initialised preset into a policy with partial skill and moderate entropy.

RL from uniform noise says little about entropy dynamics; RL from a base model does. So before RL, a preset
is fine-tuned on task demonstrations of which only `correct_frac` carry the right answer: it learns the
format and part of the task, and keeps a spread over plausible answers, like a base model. With `derail_frac`
some demonstrations also show stopping right after a slip (see `derail`).
The result is cached on disk under a key of everything that determines it, so repeated runs start at once.

Sequence format, shared with the RL rollout: the model sees `<bos> + prompt + response + <eos>` and is
prompted with `<bos> + prompt` (see `encode_prompt`). The loss covers only the response tokens and eos.
"""

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_model, save_model
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from trainer.tasks import Task
from trainer.threads import torch_threads

log = logging.getLogger(__name__)

# The recipe is part of the cache key: change any of these and old caches are ignored.
BATCH_SIZE = 32
LR = 3e-3
WEIGHT_DECAY = 0.01
RECIPE = f"v1 adamw lr={LR} wd={WEIGHT_DECAY} bs={BATCH_SIZE} cosine"
WEIGHTS_FILE = "model.safetensors"


def default_cache_dir() -> Path:
    """`$ENTROPYSCOPE_CACHE`, else `~/.cache/entropyscope`."""
    env = os.environ.get("ENTROPYSCOPE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "entropyscope"


def encode_prompt(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Ids the policy is prompted with: <bos> (if the tokenizer has one) + the prompt text, nothing else added."""
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    return bos + tokenizer.encode(text, add_special_tokens=False)


def encode_example(tokenizer: PreTrainedTokenizerBase, prompt: str, response: str) -> tuple[list[int], int]:
    """(ids of prompt + response + <eos>, prompt length); the response is encoded on its own, as the rollout
    generates it token by token after the prompt."""
    head = encode_prompt(tokenizer, prompt)
    return head + tokenizer.encode(response, add_special_tokens=False) + [tokenizer.eos_token_id], len(head)


def cache_key(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, task: Task, **settings) -> str:
    """Hash of everything the warm-started weights depend on (the init is fixed by config + seed)."""
    parts = {
        "recipe": RECIPE,
        "config": model.config.to_json_string(use_diff=False),
        "task": task.name,
        "task_digest": getattr(task, "digest", ""),  # jsonl tasks: the file's content
        "vocab": sorted(tokenizer.get_vocab().items()),
        **settings,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def warm_start(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    task: Task,
    *,
    steps: int,
    correct_frac: float,
    seed: int,
    cache_dir: Path,
    derail_frac: float = 0.0,
) -> PreTrainedModel:
    """Fine-tune `model` in place on noisy demonstrations of `task`, or load the cached result; returns it."""
    settings = {"steps": steps, "correct_frac": correct_frac, "seed": seed}
    if derail_frac:  # only when set, so caches made before the option existed stay valid
        settings["derail_frac"] = derail_frac
    key = cache_key(model, tokenizer, task, **settings)
    target = Path(cache_dir) / key
    if (target / WEIGHTS_FILE).is_file():
        load_model(model, target / WEIGHTS_FILE, device=str(next(model.parameters()).device))
        log.info("warm-up cache hit: %s", target)
        return model
    start = time.perf_counter()
    # One thread on CPU: the presets' matmuls are too small to split and extra threads only spin-wait; on
    # two busy shared cores 300 steps took 30-50 s with two threads and ~4 s with one.
    on_cpu = next(model.parameters()).device.type == "cpu"
    with torch_threads(1 if on_cpu else 0):
        train_demonstrations(
            model, tokenizer, task, steps=steps, correct_frac=correct_frac, seed=seed, derail_frac=derail_frac
        )
    _save_atomically(model, target)
    log.info("warm-up trained %d steps in %.1fs, cached at %s", steps, time.perf_counter() - start, target)
    return model


def train_demonstrations(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    task: Task,
    *,
    steps: int,
    correct_frac: float,
    seed: int,
    derail_frac: float = 0.0,
) -> None:
    """AdamW with cosine decay on response-token cross-entropy; batches drawn from `seed` alone."""
    rng = np.random.default_rng([seed, 0x3A7])  # own stream: independent of the RL run's prompt draws
    device = next(model.parameters()).device
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + np.cos(np.pi * s / max(steps, 1))))
    was_training = model.training
    model.train()
    for _ in range(steps):
        ids, labels, mask = demo_batch(tokenizer, task, rng, BATCH_SIZE, correct_frac, derail_frac)
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits  # (B, T, V)
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten().to(device), ignore_index=-100
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    model.train(was_training)


def demo_batch(
    tokenizer: PreTrainedTokenizerBase,
    task: Task,
    rng: np.random.Generator,
    n: int,
    correct_frac: float,
    derail_frac: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, labels, attention_mask), each (n, T), right-padded; labels are -100 outside response + eos and
    on the off-path token of a derailed example."""
    prompts = task.sample(rng, n)
    correct = rng.random(n) < correct_frac
    # Drawn only when asked for, so warm-ups without derailing keep their random stream (and their caches).
    derailed = rng.random(n) < derail_frac if derail_frac else np.zeros(n, dtype=bool)
    examples = [
        encode_example(tokenizer, p.text, task.demonstration(p, rng, bool(c)))
        for p, c in zip(prompts, correct, strict=True)
    ]
    ordinary = ordinary_ids(tokenizer) if derailed.any() else []
    slips = [
        derail(tokenizer, *ex, rng, ordinary) if d else (*ex, -1)
        for ex, d in zip(examples, derailed, strict=True)
    ]
    width = max(len(ids) for ids, _, _ in slips)
    # Right padding keeps real tokens at positions 0.., as the rollout's left padding + position_ids does.
    ids = torch.full((n, width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((n, width), -100, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    for i, (seq, plen, slip) in enumerate(slips):
        ids[i, : len(seq)] = torch.tensor(seq)
        labels[i, plen : len(seq)] = torch.tensor(seq[plen:])
        if slip >= 0:
            labels[i, slip] = -100
        mask[i, : len(seq)] = 1
    return ids, labels, mask


def ordinary_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Every token id that is not a special token."""
    special = set(tokenizer.all_special_ids)
    return [i for i in range(len(tokenizer)) if i not in special]


def derail(
    tokenizer: PreTrainedTokenizerBase,
    seq: list[int],
    plen: int,
    rng: np.random.Generator,
    ordinary: list[int],
) -> tuple[list[int], int, int]:
    """(ids, prompt length, slip position): the response cut at a random point, one random token from
    `ordinary` (the slip) and <eos>. The slip is not a label, so the model does not learn to slip, only to
    stop after one instead of emitting near-uniform noise up to max_new_tokens."""
    cut = plen + int(rng.integers(len(seq) - plen))  # keeps 0 .. len(response) tokens; seq[-1] is eos
    slip = ordinary[int(rng.integers(len(ordinary)))]
    return [*seq[:cut], slip, tokenizer.eos_token_id], plen, cut


def _save_atomically(model: PreTrainedModel, target: Path) -> None:
    """Write into a temp dir beside `target`, then rename: readers see a whole cache entry or none."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        save_model(model, str(tmp / WEIGHTS_FILE))  # handles GPT-2's tied embedding/head
        (tmp / "config.json").write_text(model.config.to_json_string())
        os.replace(tmp, target)
    except OSError:
        if not (target / WEIGHTS_FILE).is_file():  # a concurrent run that won the rename is fine
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
