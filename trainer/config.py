"""Training configuration: one flat pydantic model, loaded from YAML plus `--set key=value` overrides."""

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from analysis.errors import UsageError

# Algorithms whose baseline comes from the other completions of the same prompt, and what one completion does.
GROUP_RELATIVE = {
    "grpo": "each reward is compared with its own group's mean, so every advantage is 0",
    "dapo": "each reward is compared with its own group's mean, so every advantage is 0",
    "dr_grpo": "each reward is compared with its own group's mean, so every advantage is 0",
    "rloo": "the leave-one-out baseline needs another completion of the same prompt",
}


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
    """Entropy setpoint in nats; None means target_fraction x H0, H0 being the first step's measured entropy."""
    target_fraction: float = Field(default=1.0, gt=0, le=10)
    """Setpoint as a multiple of H0 when target_entropy is None: each seed aims at its own starting entropy (sweep it for setpoints relative to H0)."""
    schedule: Literal["constant", "id", "did", "od"] = "constant"
    """Setpoint schedule (Flexible Entropy Control in RLVR): constant, increase-decrease, d-i-d, oscillatory decay."""
    schedule_amplitude: float = Field(default=0.5, ge=0, le=1)
    """Relative amplitude a of the `id`/`did`/`od` schedules: the target stays in target x [1-a, 1+a]."""
    schedule_cycles: int = Field(default=3, ge=1, le=100)
    """Oscillation periods over the run for the `od` schedule."""
    schedule_lead: int = Field(default=10, ge=0, le=10_000)
    """Steps ahead on the schedule that the controller aims at: the entropy follows the controller with a lag of ~10 steps, so a controller chasing today's target arrives late (docs/controllers.md#schedules); the logged entropy/target stays the schedule's value at the step."""
    zeta_min: float | None = Field(default=None, gt=0)
    """REPO setpoint controller: smallest abs(ζ) before the sign flips; None: 0.05 (repo_r: 4.3 doublings to zeta_max instead of 6.6 from 0.01, so ζ acts before GRPO's decline and crosses zero sooner; swept over seeds in docs/controller_defaults.md), 1e-3 (repo_d, paper)."""
    zeta_max: float | None = Field(default=None, gt=0)
    """REPO: largest abs(ζ); None: 1.25 for repo_r (the paper's 0.05 does nothing at toy scale; at 1 it ended under 2x GRPO's entropy at 6 of 11 tuning seeds (1.25: at 3); at 2 the sign clamp zeroes most negative advantages and entropy falls again; swept in docs/controller_defaults.md), 10 for repo_d (paper)."""
    control_deadband: float = Field(default=0.0, ge=0, lt=1)
    """REPO: relative band around the target within which the integral part of the damped ζ law is held; 0 disables."""
    zeta_ki: float = Field(default=2.0, gt=0)
    """REPO: integral gain of the damped ζ law, in ladder rungs (doublings) per step per unit relative error (capped at one rung per step)."""
    zeta_kp: float = Field(default=3.0, ge=0)
    """REPO: proportional gain of the damped ζ law, in rungs of immediate offset per unit relative error; 0 gives the paper's pure doubling law."""
    adapo_gain: float = Field(default=0.5, gt=0)
    """ADAPO: eps_high <- eps_high * exp(gain * (target - H) / target) once per step."""
    eps_high_min: float = Field(default=0.1, gt=0)
    """ADAPO: lower bound of the adapted eps_high."""
    eps_high_max: float = Field(default=2.0, gt=0)
    """ADAPO: upper bound of the adapted eps_high."""
    bonus_coef_init: float = Field(default=0.005, gt=0)
    """Entropy bonus: initial coefficient α (auto-tuned as SAC's temperature, Haarnoja et al. 2018)."""
    bonus_gain: float = Field(default=0.3, gt=0)
    """Entropy bonus: integral I <- I + gain * bonus_coef_max * (target - H) / target once per step (plus a P term)."""
    bonus_kp: float = Field(default=1.0, ge=0)
    """Entropy bonus: proportional gain, α = I + kp * bonus_coef_max * (target - H) / target (clipped to [bonus_coef_min, bonus_coef_max])."""
    bonus_coef_max: float = Field(default=0.1, gt=0)
    """Entropy bonus: upper bound of α. Default 0.1, not 0.2: the bonus's reward over 11 tuning seeds averaged 0.98x GRPO's instead of 0.93x, with the entropy still within 0.6-1.3x its target at each (docs/controller_defaults.md)."""
    bonus_coef_min: float = Field(default=-0.05, le=0)
    """Entropy bonus: lower bound of α; below 0 the bonus turns into a penalty while entropy is above target. Default -0.05: with 0 the bonus cannot pull a widening policy back (measured: +153% over target at seed 31337; docs/controller_defaults.md)."""
    bonus_token_cap: float | None = Field(default=1.0, gt=0)
    """Entropy bonus: only tokens whose entropy is below this many nats earn the bonus; None: every token (which also widens contexts the reward does not constrain, and the entropy bursts)."""
    clip_cov_frac: float = Field(default=0.23, ge=0, le=1)
    """Clip-Cov (Cui et al. 2025): fraction r of tokens whose gradient is detached; paper 2e-4 (0 tokens at toy batch sizes). Measured on the demo config: 0.22 collapses as GRPO, 0.24 runs entropy away above H0."""
    clip_cov_lb: float = 0.1
    """Clip-Cov: lower bound of the centred covariance of candidate tokens (paper: 1, which at toy scale admits almost only A<0 unlikely tokens)."""
    clip_cov_ub: float = 5.0
    """Clip-Cov: upper bound of the centred covariance of candidate tokens (paper: 5)."""
    kl_cov_frac: float = Field(default=0.2, ge=0, le=1)
    """KL-Cov (Cui et al. 2025): fraction k of tokens, largest covariance first, under the KL penalty; paper 2e-3 (0.02 had no effect at toy scale, measured)."""
    kl_cov_coef: float = Field(default=2.0, ge=0)
    """KL-Cov: coefficient λ of abs(log π - log π_old) on the selected tokens (paper: 1)."""
    gppo_beta_low: float = Field(default=0.0, ge=0)
    """CE-GPPO (Su et al. 2025): gradient weight β1 kept on low-side clipped tokens (A < 0, r < 1 - eps_low); 0.5 drove every group all-wrong at toy scale (measured)."""
    gppo_beta_high: float = Field(default=10.0, ge=0)
    """CE-GPPO: gradient weight β2 kept on high-side clipped tokens (A > 0, r > 1 + eps_high); paper ~1, which at toy scale (clip binds on ~1% of tokens) ends at GRPO's entropy (measured)."""
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
    """Completions per prompt (the GRPO group); at least 2 for every algorithm (each is group-relative)."""
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
    """Upper clip range (1 + eps_high); None means 0.28 for `dapo` or `adapo` (clip-higher), else eps_low."""
    checkpoint_every: int = Field(default=50, ge=0)
    """Save a checkpoint every N steps (and at the end); 0 saves only at the end."""
    mlflow: str = ""
    """MLflow tracking URI (e.g. `sqlite:///mlflow.db`); empty disables MLflow."""
    alerts: str = "default"
    """Alert rules evaluated live each step: `default` (analysis/default_alerts.yaml), a YAML file, or `off`."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """`auto` picks CUDA when available."""
    dist: Literal["fsdp2", "ddp"] = "fsdp2"
    """With several processes (`--nproc N` or torchrun): FSDP2 (fully_shard per decoder layer, then the root) or DDP."""
    lora_r: int = Field(default=0, ge=0)
    """LoRA rank (Hu et al. 2021, with peft): train low-rank adapters only; 0 trains every weight."""
    lora_alpha: float = Field(default=16.0, gt=0)
    """LoRA scaling numerator: the adapter adds (lora_alpha / lora_r) B A to each target weight."""
    lora_targets: str = "all-linear"
    """LoRA target modules: `all-linear` (every linear layer but the head) or names such as `q_proj,v_proj`."""
    threads: int = Field(default=0, ge=0)
    """torch CPU threads for this run; 0: torch's default (one per core). Give each of several trainings sharing a machine 1: two default-threaded runs on 2 cores took 3.8x as long as with 1 thread each (measured)."""
    warmup_steps: int = Field(default=300, ge=0)
    """Supervised warm-up steps on noisy demonstrations for preset models (cached); ignored for model=PATH."""
    warmup_correct_frac: float = Field(default=0.5, ge=0, le=1)
    """Fraction of warm-up demonstrations that carry the correct answer."""
    warmup_derail_frac: float = Field(default=0.0, ge=0, le=1)
    """Fraction of warm-up demonstrations cut after one random (unlabelled) token and ended with eos: the policy learns to stop after a slip instead of emitting near-uniform noise up to max_new_tokens."""
    token_records: int = Field(default=8, ge=0)
    """Sequences per step whose per-token records go to the `tokens` table."""
    grad_clip: float = Field(default=1.0, gt=0)
    """Global gradient-norm clip."""
    entropy_chunk: int = Field(default=1024, ge=1)
    """Tokens per chunk in the full-vocabulary entropy pass (memory O(chunk x vocab))."""
    hist_bins: int = Field(default=30, ge=2)
    """Bins of the per-step entropy histogram."""
    delta_every: int = Field(default=0, ge=0)
    """Measure and predict the batch-entropy change (entropy/delta_*) every N steps; 0 turns it off. A measured step adds three forward + backward passes over the batch (∇H̄ before, halfway through and after the update) and three backward passes per optimizer step (the gradient split by quadrant): see docs/entropy_dynamics.md for its cost."""

    @field_validator("alerts", mode="before")
    @classmethod
    def _alerts_switch(cls, v: Any) -> Any:
        # YAML reads `alerts: off` (and --set alerts=off) as the boolean false.
        return {False: "off", True: "default"}.get(v, v) if isinstance(v, bool) else v

    @model_validator(mode="after")
    def _resolve_eps_high(self) -> "TrainConfig":
        if self.eps_high is None:
            # validate_assignment would recurse into this validator; set the field directly.
            clip_higher = self.algo == "dapo" or self.controller == "adapo"
            object.__setattr__(self, "eps_high", 0.28 if clip_higher else self.eps_low)
        if self.eps_high_min > self.eps_high_max:
            raise ValueError(f"eps_high_min {self.eps_high_min} exceeds eps_high_max {self.eps_high_max}")
        if self.zeta_min is not None and self.zeta_max is not None and self.zeta_min > self.zeta_max:
            raise ValueError(f"zeta_min {self.zeta_min} exceeds zeta_max {self.zeta_max}")
        if self.clip_cov_lb >= self.clip_cov_ub:
            raise ValueError(f"clip_cov_lb {self.clip_cov_lb} must be below clip_cov_ub {self.clip_cov_ub}")
        if self.group_size < 2 and self.algo in GROUP_RELATIVE:
            raise ValueError(
                f"group_size={self.group_size} with algo={self.algo}: {GROUP_RELATIVE[self.algo]}, so the policy "
                "would get no gradient; set group_size to 2 or more (8 is the default)"
            )
        return self


def config_help() -> str:
    """One line per config key with its default and documentation, for `entropyscope train --help`."""
    return "\n".join(
        f"  {name:<20} {f.default!r:<14} {f.description}" for name, f in TrainConfig.model_fields.items()
    )


def _format_error(err: ValidationError) -> str:
    first = err.errors()[0]
    if not first["loc"]:  # a check across keys (model validator): its own message names them
        return f"config: {first['msg'].removeprefix('Value error, ')}"
    key = ".".join(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden":
        valid = ", ".join(TrainConfig.model_fields)
        return f"unknown config key {key!r}; valid keys: {valid}"
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
    data = read_config_file(path) if path is not None else {}
    data.update(parse_overrides(overrides or []))
    return validate_config(data)


def read_config_file(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """The `key: value` mapping of a YAML file (not yet validated); UsageError when it is not one."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{what} {str(p)!r} does not exist; pass the path of a YAML file")
    try:
        loaded = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UsageError(f"{what} {str(p)!r} is not valid YAML{where}; fix its syntax") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise UsageError(f"{what} {str(p)!r} must hold a mapping of key: value pairs")
    bad = [k for k in loaded or {} if not isinstance(k, str)]
    if bad:
        raise UsageError(f"{what} {str(p)!r}: key {bad[0]!r} is not a name; write keys as `name: value`")
    return dict(loaded or {})


def validate_config(data: dict[str, Any]) -> TrainConfig:
    """A TrainConfig from config keys; UsageError naming the first bad key or value."""
    try:
        return TrainConfig(**data)
    except ValidationError as e:
        raise UsageError(_format_error(e)) from None
