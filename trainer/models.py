"""Policies: tiny presets built from a transformers config (random init, no download) or a local HF directory.

Presets use the project's character tokenizer and are tiny enough to train on two CPU cores in seconds.
Both kinds go through transformers' own classes, so a checkpoint of a preset run (save_pretrained) loads
back as `model=PATH` with identical logits.
"""

import json
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Qwen2Config,
)

from analysis.errors import UsageError
from trainer.tokenizer import build_char_tokenizer

# Eager attention: deterministic on CPU and robust to fully masked (left-pad) query rows, where SDPA
# kernels can return NaN; at these sizes it costs nothing.
ATTN_IMPLEMENTATION = "eager"
MAX_POSITIONS = 256


def _qwen2(vocab: int, pad: int, bos: int, eos: int, hidden: int = 64, layers: int = 2) -> PretrainedConfig:
    # Untied head: the output layer is its own parameter, so precision modes can keep lm_head in fp32
    # without also changing the input embeddings, and diagnostics on the head see only the head.
    return Qwen2Config(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=4 * hidden,
        max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=False,
        pad_token_id=pad,
        bos_token_id=bos,
        eos_token_id=eos,
    )


def _gpt2(vocab: int, pad: int, bos: int, eos: int) -> PretrainedConfig:
    # GPT-2 keeps its standard tied embeddings; dropout is off so train() and eval() compute the same function.
    return GPT2Config(
        vocab_size=vocab,
        n_embd=64,
        n_layer=2,
        n_head=4,
        n_positions=MAX_POSITIONS,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        pad_token_id=pad,
        bos_token_id=bos,
        eos_token_id=eos,
    )


PRESETS: dict[str, Callable[[int, int, int, int], PretrainedConfig]] = {
    "tiny-qwen2": _qwen2,
    "tiny-gpt2": _gpt2,
    # Wider and deeper: realistic enough logit scales for bf16 drift to show (bench/precision_drift.py).
    "small-qwen2": lambda vocab, pad, bos, eos: _qwen2(vocab, pad, bos, eos, hidden=256, layers=4),
}


def is_preset(name: str) -> bool:
    return name in PRESETS


def preset_config(name: str, tokenizer: PreTrainedTokenizerBase) -> PretrainedConfig:
    """The transformers config of preset `name`, sized to `tokenizer`."""
    ids = (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id)
    return PRESETS[name](len(tokenizer), *ids)


def load_policy(
    name_or_path: str, *, seed: int, device: torch.device | str = "cpu"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(model, tokenizer) in fp32 on `device`: a preset randomly initialised from `seed`, or a local HF directory."""
    if is_preset(name_or_path):
        tokenizer = build_char_tokenizer()
        config = preset_config(name_or_path, tokenizer)
        with torch.random.fork_rng(devices=[]):  # seed the init without disturbing the caller's RNG stream
            torch.manual_seed(seed)
            model = AutoModelForCausalLM.from_config(
                config, attn_implementation=ATTN_IMPLEMENTATION, dtype=torch.float32
            )
    else:
        model, tokenizer = _load_directory(name_or_path)
    return model.to(device), tokenizer


def _load_directory(path: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    where = Path(path)
    hint = "pass a preset name or a local Hugging Face model directory"
    if not where.is_dir():
        raise UsageError(f"model {path!r}: not a preset ({', '.join(PRESETS)}) and no such directory; {hint}")
    config_file = where / "config.json"
    if not config_file.is_file():
        raise UsageError(f"model {path!r}: directory has no config.json; {hint} (saved with save_pretrained)")
    try:
        json.loads(config_file.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise UsageError(
            f"model {path!r}: config.json is not valid JSON ({_first_line(e)}); fix or re-save it"
        ) from None
    try:
        model = AutoModelForCausalLM.from_pretrained(
            where, dtype=torch.float32, attn_implementation=ATTN_IMPLEMENTATION, local_files_only=True
        )
    # transformers raises many types here (OSError, ValueError, KeyError, safetensors errors).
    except Exception as e:
        raise UsageError(
            f"model {path!r}: cannot load a causal LM from it ({_first_line(e)}); {hint}"
        ) from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=True)
    except Exception as e:
        raise UsageError(
            f"model {path!r}: cannot load its tokenizer ({_first_line(e)}); save one next to the model"
        ) from None
    tokenizer.padding_side = "left"  # rollouts batch prompts of different lengths and generate on the right
    if tokenizer.eos_token is None:
        raise UsageError(
            f"model {path!r}: its tokenizer has no eos token, so responses cannot end; set eos_token"
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def _first_line(err: Exception) -> str:
    """The first sentence of an exception's message: enough to say why, short enough for one line."""
    lines = str(err).strip().splitlines()
    first = lines[0].split(". ")[0].rstrip(".") if lines else type(err).__name__
    return first[:160]
