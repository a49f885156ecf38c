"""entropyscope inside Hugging Face TRL's GRPOTrainer: per-token diagnostics, alerts and live entropy control.

    from trainer.integrations.trl import EntropyScopeGRPOTrainer   # instead of trl.GRPOTrainer

    trainer = EntropyScopeGRPOTrainer(model=..., reward_funcs=..., args=GRPOConfig(...), train_dataset=...,
                                      store="runs", scope={"controller": "repo_r"})
    trainer.train()

Each optimizer step (`state.global_step`, TRL's own step axis) writes the run store as our trainer does: entropy
mean and percentiles, clip fractions by side and quadrant, ratio statistics and `ratio/onpolicy_dev` from TRL's
training forward (its log-probs and full-vocabulary entropy: no second forward), reward, `adv/zero_frac` and,
for a 0/1 reward, pass@1/pass@k from the rollout, sampler-vs-trainer precision metrics when vLLM samples, and
the `tokens`, `samples` and `hists` tables. control.json and the alert rules are read once per step.

What it simplifies: rollout metrics (reward, pass@k, samples) are logged at the step that generated them, so
with `steps_per_generation * num_iterations > gradient_accumulation_steps` the steps reusing a rollout have
no reward rows (TRL logs none there either); resuming a TRL checkpoint starts a new run in the store.

TRL has no public hook for advantages or per-token tensors, so this subclass overrides four private methods
of GRPOTrainer, all in the block marked below; they are checked against TRL's source for the version range
`SUPPORTED_TRL`, and any other version is refused at construction.
"""

import json
import sys
import time
import uuid
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from analysis import schema
from analysis.errors import UsageError
from analysis.store_writer import RunWriter
from trainer.config import TrainConfig, _format_error
from trainer.integrations.background import BackgroundWriter, Worker
from trainer.integrations.session import CONTROLLERS, Session
from trainer.integrations.step_stats import StepStats, rollout_metrics
from trainer.records import sample_rows
from trainer.rollout import Rollout
from trainer.tasks import Prompt

try:
    import trl
    from accelerate.utils import broadcast_object_list, gather_object
    from packaging.version import Version
    from transformers import TrainerCallback
    from trl import GRPOTrainer
except ImportError as err:  # pragma: no cover - depends on the environment
    raise UsageError(
        f"the TRL integration needs TRL ({err.name} is missing); install it with pip install 'entropyscope[trl]'"
    ) from None

SUPPORTED_TRL = (">=1.16", "<1.17")
"""TRL versions whose GRPOTrainer private methods this module was checked against (pyproject's `trl` extra)."""

SCOPE_KEYS = (
    "controller", "target_entropy", "schedule", "schedule_amplitude", "schedule_cycles", "zeta_min",
    "zeta_max", "control_deadband", "zeta_ki", "zeta_kp", "adapo_gain", "eps_high_min", "eps_high_max",
    "bonus_coef_init", "bonus_gain", "bonus_kp", "bonus_coef_max", "bonus_coef_min", "bonus_token_cap", "alerts",
    "token_records", "hist_bins",
)  # fmt: skip
"""Our config keys a TRL run takes (everything else, learning rate and clip range included, is TRL's)."""

ALGOS = {"grpo": "grpo", "dapo": "dapo", "dr_grpo": "dr_grpo"}
"""TRL loss_type -> our algo name where we have the same one (run.json keeps TRL's own in source.config)."""


def check_trl_version(version: str | None = None) -> None:
    """UsageError naming the supported range unless TRL `version` (default: the installed one) is in it."""
    version = version or trl.__version__
    lo, hi = (Version(s[2:]) if s[1] == "=" else Version(s[1:]) for s in SUPPORTED_TRL)
    if not lo <= Version(version) < hi:
        raise UsageError(
            f"TRL {version} is not supported by entropyscope's TRL integration; install trl{','.join(SUPPORTED_TRL)}"
            " (pip install 'entropyscope[trl]')"
        )


def check_scope(scope: dict[str, Any] | None) -> dict[str, Any]:
    """The entropyscope knobs of a TRL run, validated; UsageError with the first problem."""
    knobs = dict(scope or {})
    unknown = sorted(set(knobs) - set(SCOPE_KEYS))
    if unknown:
        raise UsageError(f"unknown scope key {unknown[0]!r}; valid keys: {', '.join(SCOPE_KEYS)}")
    if knobs.get("controller", "none") not in CONTROLLERS:
        raise UsageError(
            f"controller {knobs['controller']!r} is not available inside TRL; valid: {', '.join(CONTROLLERS)}"
        )
    try:
        TrainConfig(**knobs)
    except ValidationError as e:
        raise UsageError(_format_error(e)) from None
    return knobs


def run_config(trainer: GRPOTrainer, knobs: dict[str, Any], steps: int) -> TrainConfig:
    """Our config of a TRL run: TRL's settings under our names, plus the entropyscope knobs."""
    a = trainer.args
    seqs = a.per_device_train_batch_size * a.gradient_accumulation_steps * trainer.accelerator.num_processes
    precision = ("bf16_fixed" if a.cast_lm_head_to_fp32 else "bf16") if a.bf16 else "fp32"
    return TrainConfig(
        model=str(getattr(trainer.model.config, "_name_or_path", "") or type(trainer.model).__name__),
        task="trl",
        algo=ALGOS.get(a.loss_type, "grpo"),
        steps=max(1, steps),
        lr=a.learning_rate,
        seed=a.seed,
        prompts_per_step=max(1, seqs // trainer.num_generations),
        group_size=trainer.num_generations,
        max_new_tokens=a.max_completion_length,
        temperature=a.temperature,
        epochs_per_step=trainer.num_iterations,
        minibatches=max(1, a.steps_per_generation // a.gradient_accumulation_steps),
        eps_low=trainer.epsilon_low,
        eps_high=trainer.epsilon_high,
        precision=precision,
        checkpoint_every=0,
        warmup_steps=0,
        **knobs,
    )


class EntropyScopeGRPOTrainer(GRPOTrainer):
    """TRL's GRPOTrainer writing the entropyscope run store and following its control file and alert rules.

    store: the run store directory; run_id: the run's folder (default: trl-<controller>-<time>-<tag>);
    scope: entropyscope knobs (`SCOPE_KEYS`: controller, target_entropy, schedule, alerts, ...)."""

    def __init__(self, *args: Any, store: str | Path = "runs", run_id: str | None = None,
                 scope: dict[str, Any] | None = None, **kwargs: Any) -> None:  # fmt: skip
        check_trl_version()
        knobs = check_scope(scope)
        super().__init__(*args, **kwargs)
        controller = knobs.get("controller", "none")
        self.es_store = Path(store)
        self.es_run_id = run_id or f"trl-{controller}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
        self._es_knobs = knobs
        self._es: Session | None = None
        self._es_writer: BackgroundWriter | None = None  # the main rank's
        self._es_worker: Worker | None = None  # the main rank's bookkeeping thread
        self._es_stats = StepStats(
            knobs.get("token_records", TrainConfig.model_fields["token_records"].default)
        )
        self._es_inputs: dict | None = None  # the micro-batch whose loss TRL is computing
        self._es_rewards: torch.Tensor | None = None
        self._es_rollout: Future | None = None  # -> (rollout metrics, samples rows), on the main rank
        self._es_generations = 0
        self._es_first_pass = False
        self._es_time = 0.0  # seconds spent in this module during the step
        self._es_step_t0 = time.perf_counter()
        self.add_callback(_StepHooks(self))

    # ---- the run ------------------------------------------------------------------------------------

    def train(self, *args: Any, **kwargs: Any) -> Any:
        """TRL's train, with the run's writer open: a crash marks the run failed, a normal end finished."""
        main = self.accelerator.is_main_process
        cfg = run_config(self, self._es_knobs, self.args.max_steps)
        if main:
            meta = {"source": {"kind": "trl", "trainer": trl_class(type(self)), "live": True,
                               "version": trl.__version__, "config": _jsonable(self.args.to_dict())}}  # fmt: skip
            self._es_worker = Worker()
            writer = RunWriter(self.es_store, self.es_run_id, cfg.model_dump(), meta=meta)
            self._es_writer = BackgroundWriter(writer, self._es_worker)
        run_dir = self.es_store / self.es_run_id
        self._es = Session(cfg, self._es_writer, run_dir, None, self._broadcast)
        if self._es_writer is None:
            out = super().train(*args, **kwargs)
        else:
            with self._es_writer:
                out = super().train(*args, **kwargs)
        self._es.close(run_dir)
        return out

    def _es_begin(self, max_steps: int) -> None:
        """At TRL's on_train_begin: the step count is known and the optimizer exists."""
        s = self._es
        if max_steps != s.cfg.steps:
            s.cfg = run_config(self, self._es_knobs, max_steps)
            if self._es_writer is not None:
                self._es_writer.set_meta({"config": s.cfg.model_dump()})
        s.optimizer = self.optimizer
        self._es_push()
        self._es_step_t0 = time.perf_counter()

    def _es_push(self) -> None:
        """Hand the controller's parameters and live config to TRL for the next step."""
        cfg, ctrl = self._es.cfg, self._es.controller
        self.epsilon_low, self.epsilon_high = ctrl.clip_range(cfg.eps_low, cfg.eps_high)
        if cfg.controller == "entropy_bonus":
            self.entropy_coef = ctrl.value
            self._entropy_bonus_enabled = True  # TRL fixes it at construction from entropy_coef != 0
            self.use_adaptive_entropy = False  # TRL's own controller would fight ours
        if "lr" in self._es.overrides and self.lr_scheduler is not None:
            self.lr_scheduler.base_lrs = [cfg.lr] * len(self.lr_scheduler.base_lrs)

    def _es_step_end(self, step: int) -> bool:
        """Log one optimizer step, update the controller, read control.json and judge alerts; True to stop.
        Collective: every rank calls it at every step."""
        t0 = time.perf_counter()
        s, cfg = self._es, self._es.cfg
        if self._es_stats.empty:
            return False
        metrics, hist = self._es_stats.finish(
            self._gather, self._reduce_max, self.epsilon_low, self.epsilon_high, cfg.lr, cfg.hist_bins,
            self.model.config.vocab_size,
        )  # fmt: skip
        rollout, samples = self._es_rollout.result() if self._es_rollout is not None else ({}, [])
        self._es_rollout = None
        metrics.update(rollout)
        metrics[schema.ENTROPY_TARGET] = s.target(step, metrics[schema.ENTROPY_MEAN])
        metrics.update(s.controller_metrics())
        if cfg.controller == "none" and self.use_adaptive_entropy:
            # TRL's own controller steers: its setpoint, and its coefficient as TRL logs it (after the update)
            metrics[schema.ENTROPY_TARGET] = float(self.args.entropy_target)
            metrics[schema.CONTROLLER_COEF] = float(self.entropy_coef)
        metrics[schema.LR] = float(self.optimizer.param_groups[0]["lr"])
        tokens = self._es_stats.token_rows(step, self.epsilon_low, self.epsilon_high)
        w = self._es_writer
        if w is not None:
            now = time.perf_counter()
            metrics[schema.TIME_STEP] = now - self._es_step_t0
            metrics[schema.TIME_DIAGNOSTICS] = self._es_time + (now - t0)
            w.log_scalars(step, metrics)
            w.log_hist(step, *hist)
            w.log_samples(samples)
            w.log_tokens(tokens)
            w.heartbeat(step)
        stop = s.end_step(step, metrics, lambda line: print(line, file=sys.stderr))
        self._es_push()
        self._es_time, self._es_step_t0 = 0.0, time.perf_counter()
        return stop

    def _es_record_rollout(self, out: dict[str, Any]) -> torch.Tensor:
        """Rollout metrics and samples of a fresh generation batch (made on the main rank's worker thread);
        returns the rows' run-unique sample ids."""
        t0 = time.perf_counter()
        acc = self.accelerator
        n_local = len(out["completion_ids"])
        n_all = n_local * acc.num_processes
        base = self._es_generations * n_all
        self._es_generations += 1
        self._es_first_pass = True
        ids = base + acc.process_index * n_local + torch.arange(n_local, device=out["completion_ids"].device)
        per_func, self._es_rewards = self._es_rewards.cpu(), None
        rewards = (per_func * self.reward_weights.cpu()[None]).nansum(1)
        rewards[torch.isnan(per_func).all(1)] = torch.nan  # unscorable, as TRL counts them
        prompt_ids = [
            r[m.bool()].tolist() for r, m in zip(out["prompt_ids"], out["prompt_mask"], strict=True)
        ]
        completion = [
            r[m.bool()].tolist() for r, m in zip(out["completion_ids"], out["completion_mask"], strict=True)
        ]
        if acc.num_processes > 1:
            prompt_ids, completion = gather_object(prompt_ids), gather_object(completion)
        if self._es_worker is not None:
            step = self.state.global_step + 1  # the optimizer step this rollout trains first
            self._es_rollout = self._es_worker.submit(
                _rollout_records, step, base, prompt_ids, completion, rewards, self.num_generations,
                self.processing_class,
            )  # fmt: skip
        self._es_time += time.perf_counter() - t0
        return ids

    def _es_record_forward(self, inputs: dict, logps: torch.Tensor, entropies: torch.Tensor) -> None:
        """Keep the training forward's tensors of one micro-batch; REPO shapes its advantages here."""
        t0 = time.perf_counter()
        mask = (
            inputs["completion_mask"]
            if "tool_mask" not in inputs
            else inputs["completion_mask"] * inputs["tool_mask"]
        )
        old = inputs.get("old_per_token_logps")
        old = logps.detach() if old is None else old
        adv = inputs["advantages"]
        self._es_stats.add(
            inputs["es_sample_id"], inputs["completion_ids"], mask, logps, entropies, old, adv,
            inputs.get("sampling_per_token_logps"), self._es_first_pass,
        )  # fmt: skip
        self._es_first_pass = False
        if adv.dim() == 1:
            tokens = adv[:, None].expand_as(old).contiguous()  # (B, T)
            shaped = self._es.controller.advantages(tokens, old, entropies.detach(), mask)
            if shaped is not tokens:
                inputs["advantages"] = shaped  # TRL takes (B, T) advantages as they are
        self._es_time += time.perf_counter() - t0

    # ---- ranks --------------------------------------------------------------------------------------

    def _gather(self, x: torch.Tensor) -> torch.Tensor:
        """Flat tensors of different lengths, concatenated over ranks in rank order."""
        acc = self.accelerator
        if acc.num_processes == 1:
            return x
        sizes = acc.gather(torch.tensor([x.numel()], device=x.device)).tolist()
        rows = acc.gather(acc.pad_across_processes(x, dim=0)).view(acc.num_processes, -1)
        return torch.cat([rows[i, :n] for i, n in enumerate(sizes)])

    def _reduce_max(self, value: float) -> float:
        if self.accelerator.num_processes == 1:
            return value
        return float(self.accelerator.gather(torch.tensor([value], device=self.accelerator.device)).max())

    def _broadcast(self, obj: Any) -> Any:
        if self.accelerator.num_processes == 1:
            return obj
        return broadcast_object_list([obj], from_process=0)[0]

    # ---- TRL's private methods: the whole surface this integration depends on ------------------------

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._es_rewards = rewards_per_func  # (all ranks' rows, reward functions)
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        if self.model.training and self._es is not None:
            out["es_sample_id"] = self._es_record_rollout(out)  # travels with its row through TRL's shuffle
        return out

    def _compute_loss(self, model, inputs):
        if "es_sample_id" not in inputs or not self.model.training:
            return super()._compute_loss(model, inputs)
        advantages, self._es_inputs = inputs["advantages"], inputs
        try:
            return super()._compute_loss(model, inputs)
        finally:  # the buffered micro-batch is trained on again when num_iterations > 1: unshaped
            inputs["advantages"], self._es_inputs = advantages, None

    def _get_per_token_logps_and_entropies(
        self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs
    ):
        logps, entropies, aux = super()._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, logits_to_keep, *args, **kwargs
        )
        if (
            self._es_inputs is not None and entropies is not None
        ):  # the loss's forward (it reads advantages next)
            self._es_record_forward(self._es_inputs, logps, entropies)
            cfg = self._es.cfg
            if cfg.controller == "entropy_bonus" and cfg.bonus_token_cap is not None:
                # TRL's bonus term is the only user of the entropies' gradient: tokens at or above the cap
                # earn none, as in our trainer; the values (what TRL logs) stay as they are.
                entropies = torch.where(
                    entropies.detach() < cfg.bonus_token_cap, entropies, entropies.detach()
                )
        return logps, entropies, aux


class _StepHooks(TrainerCallback):
    """TRL's step boundaries: start, end of each optimizer step (where a stop is asked for)."""

    def __init__(self, trainer: EntropyScopeGRPOTrainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        self.trainer._es_begin(state.max_steps)

    def on_step_end(self, args, state, control, **kwargs):
        if self.trainer._es_step_end(state.global_step):
            control.should_training_stop = True
        return control


def _rollout_records(
    step: int,
    base: int,
    prompt_ids: list[list[int]],
    completion: list[list[int]],
    rewards: torch.Tensor,
    group_size: int,
    tokenizer: Any,
) -> tuple[dict[str, float], list[dict]]:
    """(rollout metrics, `samples` rows) of one generation batch, all ranks' rows; sample ids from `base`."""
    responses = tokenizer.batch_decode(completion, skip_special_tokens=True)
    group_ids = (torch.arange(len(completion)) + base) // group_size
    lengths = torch.tensor([len(c) for c in completion])
    metrics, correct = rollout_metrics(rewards, group_ids, responses, lengths)
    view = _rollout_view(prompt_ids, completion, responses, group_ids, tokenizer.pad_token_id)
    return metrics, sample_rows(step, base, view, rewards.nan_to_num(0.0), correct, tokenizer)  # fmt: skip


def _rollout_view(
    prompt_ids: list[list[int]],
    completion: list[list[int]],
    responses: list[str],
    group_ids: torch.Tensor,
    pad: int,
) -> Rollout:
    """The rows as our Rollout (left-padded prompt, then response), for trainer/records.py."""
    p, r = max(map(len, prompt_ids)), max(1, max(map(len, completion)))
    ids = torch.full((len(completion), p + r), pad, dtype=torch.long)
    attn = torch.zeros_like(ids)
    for i, (a, b) in enumerate(zip(prompt_ids, completion, strict=True)):
        ids[i, p - len(a) : p + len(b)] = torch.tensor(a + b, dtype=torch.long)
        attn[i, p - len(a) : p + len(b)] = 1
    return Rollout(
        input_ids=ids,
        attention_mask=attn,
        response_mask=attn[:, p:],
        rollout_logp=torch.zeros(ids.shape[0], r),
        group_ids=group_ids,
        prompts=[Prompt(text="", answer="") for _ in completion],
        responses=responses,
    )


def trl_class(cls: type) -> str:
    """The name of TRL's own trainer class that `cls` derives from (a user's subclass of ours included)."""
    return next(c.__name__ for c in cls.__mro__ if c.__module__.split(".")[0] == "trl")


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    """TRL's config as plain JSON (enums, paths and callables as text)."""
    return json.loads(json.dumps(d, default=str))
