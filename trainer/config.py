"""Training configuration: one flat pydantic model, loaded from YAML plus `--set key=value` overrides."""

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from analysis.errors import UsageError


class TrainConfig(BaseModel):
    """Every knob of a run; the resolved config is saved in run.json and in every checkpoint."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=True)

    model: str = "tiny-qwen2"
    """Preset name (`tiny-qwen2`, `tiny-gpt2`, `small-qwen2`) or a local Hugging Face causal-LM directory."""
    task: str = "digit_sum"
    """`digit_sum`, `bandit`, or `jsonl:PATH` (lines with `prompt` and `answer` fields)."""
    algo: Literal["grpo", "dapo", "rloo", "dr_grpo"] = "grpo"
    """Advantage estimator + loss aggregation (DAPO: Yu et al. 2025; Dr.GRPO: Liu et al. 2025)."""
    controller: Literal[
        "none", "repo_r", "repo_d", "adapo", "entropy_bonus", "clip_cov", "kl_cov", "ce_gppo"
    ] = "none"
    """Entropy controller; `none` is plain policy gradient."""
    target_entropy: float | None = Field(default=None, ge=0)
    """Entropy setpoint in nats; None means H0, the first step's measured entropy."""
    schedule: Literal["constant", "id", "did", "od"] = "constant"
    """Setpoint schedule (Flexible Entropy Control in RLVR): constant, increase-decrease, d-i-d, oscillatory decay."""
    precision: Literal["fp32", "bf16", "bf16_fixed"] = "fp32"
    """fp32; bf16 (naive: bf16 weights and log-softmax); bf16_fixed (bf16 body, fp32 lm_head + log-softmax)."""
    steps: int = Field(default=200, ge=1)
    """Policy-gradient iterations (one rollout batch each)."""
    lr: float = Field(default=1e-3, ge=0)
    """AdamW learning rate; 0 freezes the policy (a diagnostic run)."""
    seed: int = 0
    """Seeds torch, numpy and the task's prompt sampler; CPU runs are reproducible for a seed."""
    prompts_per_step: int = Field(default=16, ge=1)
    """Prompts sampled per iteration."""
    group_size: int = Field(default=8, ge=1)
    """Completions per prompt (the GRPO group)."""
    max_new_tokens: int = Field(default=6, ge=1)
    """Longest response, in tokens."""
    temperature: float = Field(default=1.0, gt=0)
    """Sampling temperature; entropy and log-probs are those of the tempered rollout policy."""
    epochs_per_step: int = Field(default=1, ge=1)
    """Passes over each rollout batch."""
    minibatches: int = Field(default=2, ge=1)
    """Optimizer steps per epoch; the rollout batch is split into this many minibatches."""
    eps_low: float = Field(default=0.2, gt=0, lt=1)
    """Lower clip range: the ratio is clipped at 1 - eps_low."""
    eps_high: float | None = Field(default=None, gt=0)
    """Upper clip range (1 + eps_high); None means 0.28 for `dapo` (clip-higher) and eps_low otherwise."""
    checkpoint_every: int = Field(default=50, ge=0)
    """Save a checkpoint every N steps (and at the end); 0 saves only at the end."""
    mlflow: str = ""
    """MLflow tracking URI (e.g. `sqlite:///mlflow.db`); empty disables MLflow."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """`auto` picks CUDA when available."""
    warmup_steps: int = Field(default=300, ge=0)
    """Supervised warm-up steps on noisy demonstrations for preset models (cached); ignored for model=PATH."""
    warmup_correct_frac: float = Field(default=0.5, ge=0, le=1)
    """Fraction of warm-up demonstrations that carry the correct answer."""
    token_records: int = Field(default=8, ge=0)
    """Sequences per step whose per-token records go to the `tokens` table."""
    grad_clip: float = Field(default=1.0, gt=0)
    """Global gradient-norm clip."""
    entropy_chunk: int = Field(default=1024, ge=1)
    """Tokens per chunk in the full-vocabulary entropy pass (memory O(chunk x vocab))."""
    hist_bins: int = Field(default=30, ge=2)
    """Bins of the per-step entropy histogram."""

    @model_validator(mode="after")
    def _resolve_eps_high(self) -> "TrainConfig":
        if self.eps_high is None:
            # validate_assignment would recurse into this validator; set the field directly.
            object.__setattr__(self, "eps_high", 0.28 if self.algo == "dapo" else self.eps_low)
        return self


def config_help() -> str:
    """One line per config key with its default and documentation, for `entropyscope train --help`."""
    return "\n".join(
        f"  {name:<20} {f.default!r:<14} {f.description}" for name, f in TrainConfig.model_fields.items()
    )


def _format_error(err: ValidationError) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "config"
    if first["type"] == "extra_forbidden":
        valid = ", ".join(TrainConfig.model_fields)
        return f"unknown config key '{key}'; valid keys: {valid}"
    got = first.get("input")
    return f"config key '{key}': {first['msg'].lower()} (got {got!r}); fix it in the YAML file or with --set {key}=..."


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """Turn ['lr=1e-3', 'algo=dapo'] into a dict, parsing each value as YAML (numbers, bools, null)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set expects key=value, got {pair!r}")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Build a TrainConfig from an optional YAML file and `key=value` overrides; UsageError on bad input."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise UsageError(f"config file {str(p)!r} does not exist; pass the path of a YAML file")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise UsageError(f"config file {str(p)!r} is not valid YAML{where}; fix its syntax") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise UsageError(f"config file {str(p)!r} must hold a mapping of key: value pairs")
        data.update(loaded or {})
    data.update(parse_overrides(overrides or []))
    try:
        return TrainConfig(**data)
    except ValidationError as e:
        raise UsageError(_format_error(e)) from None
