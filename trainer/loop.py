"""The training loop: rollout -> reward -> advantages -> old log-probs and diagnostics -> update -> log.

Deliberate simplifications: no reference-model KL term, no value model; the rollout and training paths
share the model weights (a colocated setup), so all drift between them is numerical and is what the
precision metrics measure. Under torchrun (or `entropyscope train --nproc N`) the same loop runs on every
rank, data-parallel (trainer/distributed.py): each rank samples and forwards its share of the batch, and
everything computed from the whole batch is computed identically everywhere.
"""

import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from analysis import run_ids, schema
from analysis.alerts import AlertEngine, load_rules
from analysis.compact import UNREADABLE, compact_run
from analysis.control import ControlWatcher
from analysis.errors import STORE_FAULTS, RunFailed, UsageError
from analysis.metrics import final_window, group_metrics
from analysis.run_seal import seal_run
from analysis.schedules import scheduled_target
from analysis.segments import sweep_run
from analysis.store_writer import RunWriter
from trainer.advantages import get_advantage, zero_advantage_frac
from trainer.checkpoint import latest_checkpoint, resume_point, save_checkpoint
from trainer.config import TrainConfig
from trainer.controllers import Controller, build_controller
from trainer.diagnostics import (
    clip_and_quadrants,
    entropy_dynamics,
    entropy_histogram,
    entropy_stats,
    precision_metrics,
    quadrants,
)
from trainer.distributed import (
    SINGLE,
    NullWriter,
    Ranks,
    check_batch,
    full_weights,
    init_ranks,
    load_optimizer_state,
    local_device,
    optimizer_state,
    wrap,
)
from trainer.entropy_delta import DeltaTracker, EntropyFn
from trainer.live_control import poll_control
from trainer.lora import add_adapter, load_adapter, save_adapter, split_weights
from trainer.models import is_preset, load_policy
from trainer.policy import as_root
from trainer.progress import Progress
from trainer.records import sample_rows, token_columns
from trainer.rollout import Rollout, RolloutEngine, sample
from trainer.tasks import make_task
from trainer.threads import torch_threads
from trainer.update import UpdateResult, minibatch_splits, policy_pass, ppo_update
from trainer.warmup import default_cache_dir, warm_start


@dataclass
class RunSummary:
    """What `train` reports at the end, and what the CLI prints."""

    run_id: str
    run_dir: Path
    steps: int
    h0: float
    entropy: float
    reward_first: float
    reward_last: float
    pass_at_k: float
    alerts: tuple[str, ...] = ()
    """Alerts firing when the run ended, as `rule [severity]`."""
    spelled_out: tuple[str, ...] = ()
    """Of those, the ones a user must not miss (a `runaway`: the controller cannot hold its target), as
    `rule: reading`."""

    def lines(self) -> list[str]:
        change = 100 * (self.entropy / self.h0 - 1) if self.h0 else float("nan")
        out = [
            f"run {self.run_id}: {self.steps} steps, store {self.run_dir}",
            f"entropy {self.h0:.3f} -> {self.entropy:.3f} nats ({change:+.0f}% vs H0)",
            f"reward {self.reward_first:.3f} -> {self.reward_last:.3f}, pass@k {self.pass_at_k:.3f}",
        ]
        if self.alerts:
            out.append(f"alerts firing at the end: {', '.join(self.alerts)}")
        out += self.spelled_out
        return out


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("device=cuda but no CUDA GPU is visible; use --set device=cpu or device=auto")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_policy(cfg: TrainConfig, device: torch.device, start_from: Path | None = None):
    """Model + tokenizer on `device`: from a checkpoint, or the preset (warm-started) / local path; with
    `lora_r` > 0 the base as the run began plus an adapter (the checkpoint's, when resuming)."""
    torch.manual_seed(cfg.seed)
    task = make_task(cfg.task, seed=cfg.seed)
    adapter_from, start_from = (start_from, None) if cfg.lora_r else (None, start_from)
    if start_from is not None:
        model, tokenizer = load_policy(str(start_from), seed=cfg.seed)
    else:
        model, tokenizer = load_policy(cfg.model, seed=cfg.seed)
        if is_preset(cfg.model) and cfg.warmup_steps:
            model = warm_start(
                model,
                tokenizer,
                task,
                steps=cfg.warmup_steps,
                correct_frac=cfg.warmup_correct_frac,
                seed=cfg.seed,
                derail_frac=cfg.warmup_derail_frac,
                cache_dir=default_cache_dir(),
            )
    if cfg.lora_r:
        add_adapter(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_targets)
        if adapter_from is not None:
            load_adapter(model, adapter_from)
    model.to(device).eval()  # eval: no dropout, so rollout and training paths see the same function
    return model, tokenizer, task


def score(task, rollout: Rollout) -> tuple[torch.Tensor, list[bool]]:
    pairs = [task.reward(p, r) for p, r in zip(rollout.prompts, rollout.responses, strict=True)]
    rewards = torch.tensor([r for r, _ in pairs], dtype=torch.float32)
    return rewards, [c for _, c in pairs]


def step_rng(cfg: TrainConfig, step: int) -> tuple[np.random.Generator, torch.Generator]:
    """Per-step generators derived from (seed, step): a resumed run draws what the original would have."""
    return np.random.default_rng([cfg.seed, step]), torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)


def step_target(cfg: TrainConfig, step: int, h0: float) -> float:
    """The entropy setpoint of `step`: the schedule applied to target_entropy (default target_fraction x H0)."""
    base = cfg.target_entropy if cfg.target_entropy is not None else cfg.target_fraction * h0
    return scheduled_target(cfg.schedule, step, cfg.steps, base, cfg.schedule_amplitude, cfg.schedule_cycles)


def build_alerts(cfg: TrainConfig) -> AlertEngine | None:
    """The live alert engine for `cfg.alerts`, or None when off."""
    if cfg.alerts == "off":
        return None
    return AlertEngine(load_rules(None if cfg.alerts == "default" else cfg.alerts))


def check_alerts(writer: RunWriter, engine: AlertEngine, step: int, metrics: dict, say) -> bool:
    """Judge the rules on one step: record and print each transition; True when the rules stop the run."""
    for t in engine.observe(step, metrics):
        writer.log_event(t.step, t.kind, t.message, severity=t.severity, payload=t.payload)
        say(f"alert: {t.line()}")
    if not engine.should_stop:
        return False
    firing = ", ".join(a.rule for a in engine.active if a.severity == "critical")
    message = f"stopped at step {step}: critical alert firing ({firing}) and the rules say on_critical: stop"
    writer.log_event(step, "stopped", message, severity="critical", payload={"alerts": firing})
    say(message)
    return True


def old_logprobs(
    model, rollout: Rollout, splits, cfg: TrainConfig, ranks: Ranks = SINGLE
) -> tuple[torch.Tensor, torch.Tensor]:
    """Training-path log-probs and entropy (B, R) before the update, on epoch 0's minibatch split so the
    first minibatch's ratio is bitwise 1 when the pipeline is numerically consistent (across ranks, each
    rank's share of each minibatch, as the update splits it)."""
    root, response_len = as_root(model), rollout.response_mask.shape[1]
    logp = torch.zeros_like(rollout.rollout_logp)
    entropy = torch.zeros_like(rollout.rollout_logp)
    with torch.no_grad():
        for rows in splits[0]:
            # the update's own forward (policy_pass), so old and new log-probs take one code path
            fwd = policy_pass(
                root, ranks, rollout.input_ids[rows], rollout.attention_mask[rows], response_len, cfg, True
            )
            logp[rows], entropy[rows] = fwd.logp, fwd.entropy
    return logp, entropy


def collect_metrics(
    cfg: TrainConfig,
    rollout: Rollout,
    rewards: torch.Tensor,
    correct: list[bool],
    seq_adv: torch.Tensor,
    train_logp: torch.Tensor,
    entropy: torch.Tensor,
    upd: UpdateResult,
    target: float,
    ent_stats: dict[str, float],
    controller_metrics: dict[str, float],
) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
    """All step metrics from the Contract, plus per-token clip sides and quadrants (B, R).

    Diagnostics use the estimator's advantages; clip sides use the clip range the controller applied.
    """
    mask = rollout.response_mask
    adv = seq_adv[:, None].expand_as(mask)
    eps_low, eps_high = (
        controller_metrics[schema.CONTROLLER_EPS_LOW],
        controller_metrics[schema.CONTROLLER_EPS_HIGH],
    )
    clip_side, quadrant, m = clip_and_quadrants(upd.ratio, adv, train_logp, entropy, mask, eps_low, eps_high)
    # Ratio statistics over every pass, not just each token's last one.
    all_ratio = torch.cat([r.flatten() for r in upd.all_ratios])
    all_mask = torch.cat([mask[rows].flatten() for rows in upd.all_rows]).bool()
    m[schema.RATIO_MEAN] = float(all_ratio[all_mask].mean())
    m[schema.RATIO_MAX] = float(all_ratio[all_mask].max())
    m.update(ent_stats)
    m.update(entropy_dynamics(train_logp, adv, mask, cfg.lr))
    m.update(precision_metrics(rollout.rollout_logp, train_logp, mask))
    m.update(group_metrics(rollout.group_ids.tolist(), rollout.responses, correct))
    m.update(upd.metrics)  # the objective's clip fractions, averaged over every minibatch pass
    m[schema.RATIO_ONPOLICY_DEV] = upd.onpolicy_dev
    m[schema.REWARD_MEAN] = float(rewards.mean())
    m[schema.REWARD_STD] = float(rewards.std(unbiased=False))
    m[schema.ADV_ZERO_FRAC] = zero_advantage_frac(rewards, rollout.group_ids.cpu())
    m[schema.RESPONSE_LEN_MEAN] = float(mask.sum(1).float().mean())
    m[schema.LR] = cfg.lr
    m[schema.ENTROPY_TARGET] = target
    m.update(controller_metrics)
    return m, clip_side, quadrant


@dataclass
class Policy:
    """Everything a step needs that lives across steps."""

    cfg: TrainConfig
    model: torch.nn.Module
    tokenizer: object
    task: object
    optimizer: torch.optim.Optimizer
    device: torch.device
    engine: RolloutEngine
    controller: Controller
    h0: float | None = None
    overrides: dict = field(default_factory=dict)  # live changes applied from control.json
    delta: DeltaTracker | None = None  # measured vs predicted batch ΔH, on the steps delta_every picks
    root: torch.nn.Module | None = None  # the training root: `model` under a LogprobModule, sharded or not
    ranks: Ranks = SINGLE


@dataclass
class StepResult:
    """One iteration's tensors and metrics, for logging."""

    metrics: dict[str, float]
    rollout: Rollout
    rewards: torch.Tensor
    correct: list[bool]
    seq_adv: torch.Tensor
    train_logp: torch.Tensor
    entropy: torch.Tensor
    ratio: torch.Tensor
    clip_side: torch.Tensor
    quadrant: torch.Tensor


def train_step(p: Policy, step: int, np_rng: np.random.Generator, gen: torch.Generator) -> StepResult:
    """rollout -> reward -> advantages -> old log-probs and entropy -> update -> metrics."""
    cfg, t0 = p.cfg, time.perf_counter()
    prompts = p.task.sample(np_rng, cfg.prompts_per_step)
    p.engine.sync()
    rollout = sample(
        p.engine.model,
        p.tokenizer,
        prompts,
        group_size=cfg.group_size,
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        precision=cfg.precision,
        generator=gen,
        ranks=p.ranks,
    )
    t_rollout = time.perf_counter()
    rewards, correct = score(p.task, rollout)
    seq_adv = get_advantage(cfg.algo)(rewards, rollout.group_ids.cpu()).to(p.device)
    splits = minibatch_splits(len(rollout.prompts), cfg, gen)
    train_logp, entropy = old_logprobs(p.root or p.model, rollout, splits, cfg, p.ranks)
    # Naive bf16 trusts the rollout engine's log-probs as the old policy; the other modes recompute them
    # on the training path, so old and new log-probs share one code path.
    old_logp = rollout.rollout_logp if cfg.precision == "bf16" else train_logp
    ent_stats = entropy_stats(entropy, rollout.response_mask)
    measured = ent_stats[schema.ENTROPY_MEAN]
    if p.h0 is None:
        p.h0 = measured
    target = step_target(cfg, step, p.h0)
    t_diag = time.perf_counter()
    ctrl = p.controller
    adv_tokens = seq_adv[:, None].expand_as(old_logp).contiguous()  # (B, R)
    adv_tokens = ctrl.advantages(adv_tokens, old_logp, entropy, rollout.response_mask)
    eps_low, eps_high = ctrl.clip_range(cfg.eps_low, cfg.eps_high)
    ctrl_metrics = ctrl.metrics(cfg.eps_low, cfg.eps_high)  # the parameters this step used
    tracker = None
    if cfg.delta_every and step % cfg.delta_every == 0:
        tracker = p.delta = p.delta or DeltaTracker(p.optimizer)
        entropy_of = EntropyFn(p.model, rollout, splits[0], cfg)
        tracker.begin(
            step, entropy_of, quadrants(seq_adv[:, None], train_logp, entropy, rollout.response_mask)
        )
    upd = ppo_update(
        p.root or p.model,
        p.optimizer,
        rollout.input_ids,
        rollout.attention_mask,
        rollout.response_mask,
        old_logp,
        adv_tokens,
        splits,
        cfg,
        eps_low,
        eps_high,
        controller=ctrl,
        generator=gen,
        tracker=tracker,
        ranks=p.ranks,
    )
    delta_metrics = tracker.end(entropy_of) if tracker else {}
    # sets the next step's parameters, aiming ahead on the schedule: entropy answers ζ with a lag
    ctrl.update(measured, step_target(cfg, step + cfg.schedule_lead, p.h0), step)
    t_update = time.perf_counter()
    metrics, clip_side, quadrant = collect_metrics(
        cfg, rollout, rewards, correct, seq_adv, train_logp, entropy, upd, target, ent_stats, ctrl_metrics
    )
    metrics.update(delta_metrics)
    t_end = time.perf_counter()
    metrics[schema.TIME_ROLLOUT] = t_rollout - t0
    metrics[schema.TIME_DIAGNOSTICS] = (t_diag - t_rollout) + (t_end - t_update)
    metrics[schema.TIME_UPDATE] = t_update - t_diag
    metrics[schema.TIME_STEP] = t_end - t0
    metrics[schema.THROUGHPUT_TOKENS] = float(rollout.response_mask.sum()) / max(t_end - t0, 1e-9)
    return StepResult(
        metrics, rollout, rewards, correct, seq_adv, train_logp, entropy, upd.ratio, clip_side, quadrant
    )


def log_step(writer: RunWriter, p: Policy, step: int, res: StepResult, np_rng: np.random.Generator) -> None:
    """Scalars, histogram, samples and a sampled subset of per-token records into the run store."""
    cfg, rollout = p.cfg, res.rollout
    base_id = step * len(rollout.prompts)
    writer.log_scalars(step, res.metrics)
    edges, counts = entropy_histogram(res.entropy, rollout.response_mask, cfg.hist_bins, len(p.tokenizer))
    writer.log_hist(step, edges, counts)
    writer.log_samples(sample_rows(step, base_id, rollout, res.rewards, res.correct, p.tokenizer))
    n_picks = min(cfg.token_records, len(rollout.prompts))
    picks = sorted(np_rng.choice(len(rollout.prompts), size=n_picks, replace=False).tolist())
    writer.log_tokens(
        token_columns(
            step,
            base_id,
            picks,
            rollout,
            res.train_logp,
            res.entropy,
            res.seq_adv,
            res.ratio,
            res.clip_side,
            res.quadrant,
        )
    )
    writer.heartbeat(step)


def train(
    cfg: TrainConfig,
    store: Path,
    run_id: str | None = None,
    resume: bool = False,
    progress: bool = True,
    meta: dict | None = None,
) -> RunSummary:
    """Train `cfg.steps` iterations, logging to `<store>/<run_id>/` (and MLflow when configured).
    meta: more top-level run.json fields (a sweep's run: its `sweep` field).

    Under torchrun (WORLD_SIZE > 1) this process is one rank of a data-parallel job (trainer/distributed.py).
    A full or read-only store stops the run with RunFailed, naming the checkpoint that resumes it."""
    if resume and not run_id:
        raise UsageError("--resume needs --run-id ID of the run to continue")
    device = pick_device(cfg.device)
    ranks = init_ranks(cfg.dist, local_device(device))
    try:
        new_id = f"{cfg.algo}-{cfg.controller}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
        run_id = ranks.share(run_id or new_id)  # one run, one id: rank 0's
        with torch_threads(cfg.threads):
            try:
                return _train(cfg, store, run_id, resume, progress, ranks, meta)
            except OSError as err:
                if err.errno not in STORE_FAULTS:
                    raise
                raise RunFailed(store_failure(Path(store) / run_id, err)) from err
    finally:
        if ranks.world > 1:
            torch.distributed.destroy_process_group()


def store_failure(run_dir: Path, err: OSError) -> str:
    """The one line for a run a full or read-only store stopped: what failed and how to go on."""
    what = f"{err.strerror or err} writing {err.filename}" if err.filename else str(err)
    ckpt = latest_checkpoint(run_dir)
    how = (
        f"then continue from {ckpt.name} with `entropyscope train CONFIG --resume --run-id {run_dir.name}`"
        if ckpt
        else "then start it again (it saved no checkpoint)"
    )
    return f"run {run_dir.name} stopped: {what}; free space or make the store writable, {how}"


def check_ranks(cfg: TrainConfig, ranks: Ranks, state: dict) -> None:
    """UsageError for what a data-parallel run cannot do, and for resuming with another process count."""
    saved = state.get("world", 1) if state else ranks.world
    if saved != ranks.world:
        raise UsageError(f"the checkpoint was saved by {saved} processes; resume it with --nproc {saved}")
    if ranks.world == 1:
        return
    if cfg.delta_every:
        raise UsageError("delta_every needs one process (its gradient split is not distributed); set it to 0")
    check_batch(cfg.prompts_per_step * cfg.group_size, cfg.minibatches, ranks.world)


def setup(cfg: TrainConfig, run_dir: Path, resume: bool, ranks: Ranks) -> tuple[Policy, ControlWatcher, dict]:
    """The policy, optimizer, controller and control watcher of a new or resumed run, and its saved state."""
    device = local_device(pick_device(cfg.device))
    if not ranks.main:  # rank 0 first: it removes partial checkpoints and fills the warm-start cache
        ranks.barrier()
    ckpt, state = resume_point(run_dir) if resume else (None, {})
    check_ranks(cfg, ranks, state)
    model, tokenizer, task = build_policy(cfg, device, start_from=ckpt)
    if ranks.main:
        ranks.barrier()
    engine = RolloutEngine(model, cfg.precision, own_copy=ranks.kind == "fsdp2" and ranks.world > 1)
    root = wrap(model, ranks, device, cfg.precision)
    trainable = [w for w in root.parameters() if w.requires_grad]  # all but a frozen LoRA base
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=0.0)
    if state:
        load_optimizer_state(root, optimizer, state["optimizer"], ranks)
    if state.get("overrides"):  # live changes made before the checkpoint stay in force
        cfg = TrainConfig(**{**cfg.model_dump(), **state["overrides"]})
    controller = build_controller(cfg)
    watcher = ControlWatcher(run_dir)
    if state:
        controller.load_state_dict(state["controller"])
        watcher.load_state_dict(state["control"])
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr
    p = Policy(cfg, model, tokenizer, task, optimizer, device, engine, controller, h0=state.get("h0"))
    p.root, p.ranks = root, ranks
    p.overrides = dict(state.get("overrides") or {})
    return p, watcher, {**state, "ckpt": ckpt}


def checkpoint(writer, p: Policy, run_dir: Path, step: int, extra: dict) -> None:
    """Save step_N (gathered from every rank under FSDP2; written by rank 0) and record it."""
    weights = full_weights(p.root, p.ranks)
    state = {
        "optimizer": optimizer_state(p.root, p.optimizer, p.ranks),
        "h0": p.h0,
        "controller": p.controller.state_dict(),
        "overrides": p.overrides,
        "world": p.ranks.world,
        **extra,
    }
    if not p.ranks.main:
        return
    files, cfg = None, p.cfg
    if cfg.lora_r:  # the merged policy as the HF model, and the adapter beside it
        sd = p.model.state_dict() if weights is None else weights
        weights, adapter = split_weights(sd, cfg.lora_r, cfg.lora_alpha)

        def files(ckpt: Path) -> None:
            save_adapter(ckpt, adapter, cfg.lora_r, cfg.lora_alpha, cfg.lora_targets, cfg.model)

    writer.flush()  # rows up to a checkpoint are on disk before it: a resume re-runs none
    path = save_checkpoint(run_dir, step, p.model, p.tokenizer, state, weights=weights, extra_files=files)
    writer.log_event(step, "checkpoint", f"saved {path.name}", payload={"path": str(path)})


def _train(
    cfg: TrainConfig, store: Path, run_id: str, resume: bool, progress: bool, ranks: Ranks, meta: dict | None
) -> RunSummary:
    run_dir = run_ids.run_dir(store, run_id)  # before a checkpoint is read: the id must stay in the store
    alerts = build_alerts(cfg)  # a bad rules file fails here, before the model is built
    p, watcher, state = setup(cfg, run_dir, resume, ranks)
    cfg = p.cfg
    if state.get("alerts") and alerts is not None:
        alerts.load_state_dict(state["alerts"])
    start = state.get("step", 0)
    config = cfg.model_dump()
    writer = RunWriter(store, run_id, config, resume=resume, meta=meta) if ranks.main else NullWriter()
    sink = None
    if cfg.mlflow and ranks.main:
        from trainer.mlflow_sink import MlflowSink

        sink = MlflowSink(cfg.mlflow, run_id, config)
    history: list[dict[str, float]] = []
    stopped = False
    bar = Progress(range(start + 1, cfg.steps + 1), run_id, enabled=progress and ranks.main)
    try:
        with writer:
            if resume:
                ckpt = state["ckpt"]
                writer.log_event(start, "resumed", f"resumed from {ckpt or 'scratch'} at step {start}")
                if ckpt is None and ranks.main:  # not only in the store: the user expected to go on
                    bar.write(
                        f"resume: run {run_id} has no checkpoint in {run_dir / 'checkpoints'}; starting from step 0"
                    )
            for step in bar:
                np_rng, gen = step_rng(cfg, step)
                res = train_step(p, step, np_rng, gen)
                if ranks.main:
                    log_step(writer, p, step, res, np_rng)
                poll_control(writer, p, watcher, step)
                if sink:
                    sink.log(step, res.metrics)
                history.append(res.metrics)
                stopped = alerts is not None and check_alerts(writer, alerts, step, res.metrics, bar.write)
                stopped = ranks.share(stopped)  # decided on rank 0's metrics (time/* differ across ranks)
                bar.report(
                    step,
                    reward=f"{res.metrics[schema.REWARD_MEAN]:.2f}",
                    entropy=f"{res.metrics[schema.ENTROPY_MEAN]:.3f}",
                )
                if (
                    stopped
                    or step == cfg.steps
                    or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0)
                ):
                    extra = {
                        "config": config,
                        "control": watcher.state_dict(),
                        "alerts": alerts.state_dict() if alerts is not None else None,
                    }
                    checkpoint(writer, p, run_dir, step, extra)
                if stopped:
                    break
    finally:
        bar.close()
        if sink:
            sink.close("finished" if stopped or len(history) == cfg.steps - start else "failed")
    if ranks.main:
        compact_finished(run_dir)
    active = alerts.active if alerts is not None else []
    firing = tuple(f"{a.rule} [{a.severity}]" for a in active)
    summary = summarize(run_id, run_dir, start + len(history), p.h0, history, firing)
    summary.spelled_out = tuple(f"{a.rule}: {a.text}" for a in active if a.rule_kind == "runaway")
    return summary


def compact_finished(run_dir: Path) -> bool:
    """Merge a finished run's segments into one per table (a store's listing scans every segment of every
    run), then seal it (analysis.run_seal: its listing values, so no reader scans it again); on an
    unreadable segment keep them all and warn."""
    try:
        compact_run(run_dir)
        sweep_run(run_dir)  # parts an earlier compaction (before a resume) superseded
    except UNREADABLE as err:
        warnings.warn(
            f"kept {run_dir}'s segments unmerged (one is unreadable: {err})", RuntimeWarning, stacklevel=2
        )
        return False
    seal_run(run_dir)
    return True


def summarize(
    run_id: str,
    run_dir: Path,
    steps: int,
    h0: float | None,
    history: list[dict[str, float]],
    alerts: tuple[str, ...] = (),
) -> RunSummary:
    """First and last tenth of the run (analysis.metrics.final_window), averaged, so one noisy step does not
    decide the headline."""
    if not history:
        nan = float("nan")
        return RunSummary(run_id, run_dir, steps, h0 or nan, nan, nan, nan, nan)
    n = final_window(len(history))

    def avg(rows: list[dict[str, float]], key: str) -> float:
        return float(np.mean([r[key] for r in rows]))

    return RunSummary(
        run_id=run_id,
        run_dir=run_dir,
        steps=steps,
        h0=h0 if h0 is not None else float("nan"),
        entropy=avg(history[-n:], schema.ENTROPY_MEAN),
        reward_first=avg(history[:n], schema.REWARD_MEAN),
        reward_last=avg(history[-n:], schema.REWARD_MEAN),
        pass_at_k=avg(history[-n:], schema.PASS_AT_K),
        alerts=alerts,
    )
