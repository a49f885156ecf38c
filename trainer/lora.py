"""LoRA with peft: low-rank adapters injected into the policy's linear layers; only the adapters train.

The adapters live inside the transformers model (peft's `inject_adapter_in_model`), so the rollout, the
chunked log-prob and entropy code, FSDP2 and DDP all see one ordinary module: entropy and log-probs are
the adapted policy's.

What a LoRA run's checkpoint holds (docs/distributed.md, "LoRA"): `step_N/` is the merged policy
W + (lora_alpha / lora_r) B A as a plain Hugging Face model, so `model=PATH` (or any HF tool) loads the
adapted policy; `step_N/adapter/` is the adapter alone in PEFT's layout (`PeftModel.from_pretrained(base,
PATH/adapter)`). The base weights are not stored again: they never change during the run, and `--resume`
rebuilds them from `model` as the run began (preset and cached warm-up, or the same directory) and loads the
adapter onto them.
"""

from pathlib import Path

import torch
from torch import nn

from analysis.errors import UsageError

ADAPTER_DIR = "adapter"
_NAME = "default"  # peft's adapter name inside the modules
_PEFT_PREFIX = "base_model.model."  # key prefix of a PeftModel's saved adapter


def _peft():
    try:
        import peft
    except ImportError:
        raise UsageError("lora_r > 0 needs peft; pip install 'entropyscope[peft]'") from None
    return peft


def lora_config(r: int, alpha: float, targets: str):
    """The peft LoraConfig of the run: `targets` is `all-linear` (every linear layer but the head) or a
    comma-separated list of module names (e.g. `q_proj,v_proj`)."""
    modules = targets if targets == "all-linear" else [t.strip() for t in targets.split(",") if t.strip()]
    return _peft().LoraConfig(r=r, lora_alpha=alpha, target_modules=modules, lora_dropout=0.0)


def add_adapter(model: nn.Module, r: int, alpha: float, targets: str) -> nn.Module:
    """Inject a fresh adapter (B = 0: the policy is unchanged until the first update) and freeze the rest."""
    try:
        _peft().inject_adapter_in_model(lora_config(r, alpha, targets), model)
    except ValueError as e:  # no module matched lora_targets
        raise UsageError(f"lora_targets {targets!r}: {str(e).splitlines()[0][:200]}") from None
    return model


def split_weights(sd: dict[str, torch.Tensor], r: int, alpha: float) -> tuple[dict, dict]:
    """(merged Hugging Face state dict, adapter state dict in PEFT's key layout) from a LoRA model's
    whole state dict."""
    merged, adapter = {}, {}
    for key, value in sd.items():
        if f".lora_A.{_NAME}." in key or f".lora_B.{_NAME}." in key:
            adapter[_PEFT_PREFIX + key.replace(f".{_NAME}.", ".")] = value.detach().contiguous()
        else:
            merged[key.replace(".base_layer.", ".")] = value.detach()
    for key in sd:
        if not key.endswith(f".lora_A.{_NAME}.weight"):
            continue
        layer = key.removesuffix(f".lora_A.{_NAME}.weight")
        delta = (alpha / r) * (sd[f"{layer}.lora_B.{_NAME}.weight"] @ sd[key])  # (out, in)
        weight = merged[f"{layer}.weight"]
        merged[f"{layer}.weight"] = weight + (
            delta if delta.shape == weight.shape else delta.T
        )  # GPT-2 Conv1D
    return merged, adapter


def save_adapter(ckpt: Path, adapter: dict[str, torch.Tensor], r: int, alpha: float, targets: str, base: str):
    """Write `ckpt/adapter/` in PEFT's layout."""
    from safetensors.torch import save_file

    out = ckpt / ADAPTER_DIR
    config = lora_config(r, alpha, targets)
    config.base_model_name_or_path = base
    config.save_pretrained(str(out))
    save_file({k: v.cpu() for k, v in adapter.items()}, str(out / "adapter_model.safetensors"))


def load_adapter(model: nn.Module, ckpt: Path) -> None:
    """Load `ckpt/adapter/` into a model that has the same (injected) adapter."""
    from safetensors.torch import load_file

    saved = load_file(str(ckpt / ADAPTER_DIR / "adapter_model.safetensors"))
    ours = {}
    for key, value in saved.items():
        head, _, tail = key.removeprefix(_PEFT_PREFIX).rpartition(".")  # ...lora_A + weight
        ours[f"{head}.{_NAME}.{tail}"] = value
    missing, unexpected = model.load_state_dict(ours, strict=False)
    lost = [k for k in missing if ".lora_" in k]
    if unexpected or lost:
        raise UsageError(
            f"checkpoint {ckpt}: its adapter does not fit this run's lora_r / lora_targets "
            f"({(unexpected or lost)[0]}); resume with the run's own config"
        )
