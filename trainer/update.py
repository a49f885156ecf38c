"""The policy update: epochs x minibatches of the clipped surrogate over one rollout batch."""

from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel

from analysis import schema
from trainer.config import TrainConfig
from trainer.controllers import Controller
from trainer.diagnostics import onpolicy_deviation
from trainer.distributed import SINGLE, Ranks, full_value
from trainer.entropy_delta import DeltaTracker
from trainer.objectives import OBJECTIVE_AGG, get_objective
from trainer.policy import as_root


@dataclass
class UpdateResult:
    """What the update measured; ratios are those of each token's last pass, shape (B, R)."""

    ratio: torch.Tensor
    all_ratios: list[torch.Tensor] = field(default_factory=list)  # one (b, R) tensor per minibatch pass
    all_rows: list[torch.Tensor] = field(default_factory=list)  # the batch rows of each pass
    onpolicy_dev: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)


def minibatch_splits(batch: int, cfg: TrainConfig, generator: torch.Generator) -> list[list[torch.Tensor]]:
    """Row indices per epoch and minibatch; drawn up front so old log-probs use epoch 0's exact split."""
    return [
        list(torch.randperm(batch, generator=generator).chunk(cfg.minibatches))
        for _ in range(cfg.epochs_per_step)
    ]


@dataclass
class Pass:
    """One minibatch's log-probs and entropy (b, R) over all its rows and, across ranks, this rank's rows
    of it with their outputs still on the autograd graph."""

    logp: torch.Tensor
    entropy: torch.Tensor | None
    rows: torch.Tensor | None = None
    local: list[torch.Tensor] = field(default_factory=list)
    world: int = 1

    def backward(self, loss: torch.Tensor) -> None:
        """Backpropagate `loss`; across ranks, through each rank's own rows, with the gradient scaled by N
        because DDP and FSDP2 average (not sum) the ranks' gradients."""
        loss.backward()
        if self.rows is None:
            return
        pairs = [(out, full.grad) for out, full in zip(self.local, (self.logp, self.entropy), strict=False)]
        pairs = [(out, g) for out, g in pairs if g is not None and out.requires_grad]
        torch.autograd.backward([o for o, _ in pairs], [g[self.rows] * self.world for _, g in pairs])


def policy_pass(
    root: torch.nn.Module,
    ranks: Ranks,
    input_ids: torch.Tensor,  # (b, T)
    attention_mask: torch.Tensor,  # (b, T)
    response_len: int,
    cfg: TrainConfig,
    entropy: bool,
) -> Pass:
    """Forward one minibatch; across ranks each computes its rows and the results are assembled into
    leaves that the loss (computed identically on every rank) differentiates."""
    kw = dict(
        temperature=cfg.temperature,
        precision=cfg.precision,
        chunk_size=cfg.entropy_chunk,
        with_entropy=entropy,
        entropy_grad=entropy,
    )
    if ranks.world == 1:
        return Pass(*root(input_ids, attention_mask, response_len, **kw))
    n, rows = input_ids.shape[0], ranks.rows(input_ids.shape[0])
    local = [t for t in root(input_ids[rows], attention_mask[rows], response_len, **kw) if t is not None]
    full = [ranks.assemble(t.detach(), n).requires_grad_(t.requires_grad) for t in local]
    return Pass(full[0], full[1] if len(full) > 1 else None, rows, local, ranks.world)


def ppo_update(
    model: PreTrainedModel,
    optimizer: torch.optim.Optimizer,
    input_ids: torch.Tensor,  # (B, T)
    attention_mask: torch.Tensor,  # (B, T)
    response_mask: torch.Tensor,  # (B, R)
    old_logp: torch.Tensor,  # (B, R)
    advantages: torch.Tensor,  # (B, R)
    splits: list[list[torch.Tensor]],
    cfg: TrainConfig,
    eps_low: float,
    eps_high: float,
    controller: Controller | None = None,
    generator: torch.Generator | None = None,
    tracker: DeltaTracker | None = None,
    ranks: Ranks = SINGLE,
) -> UpdateResult:
    """Run every minibatch of every epoch; metrics are means over minibatches.

    The controller's hooks shape each minibatch's surrogate (objective kwargs) and add its loss term. An
    active `tracker` splits each step's gradient by quadrant (extra backward passes; the step is unchanged).
    Across `ranks`, each forwards its share of every minibatch (trainer/distributed.py); the loss, metrics
    and every decision are computed from the whole minibatch on every rank.
    """
    objective = get_objective(cfg.algo)
    root = as_root(model)
    controller = controller or Controller()
    response_len = response_mask.shape[1]
    result = UpdateResult(ratio=torch.ones_like(old_logp))
    sums: dict[str, float] = {}
    for epoch, epoch_splits in enumerate(splits):
        for i, rows in enumerate(epoch_splits):
            fwd = policy_pass(
                root,
                ranks,
                input_ids[rows],
                attention_mask[rows],
                response_len,
                cfg,
                controller.needs_entropy_grad,
            )
            logp, entropy = fwd.logp, fwd.entropy
            adv, mask = advantages[rows], response_mask[rows]
            mods = controller.objective_kwargs(logp, old_logp[rows], adv, mask, generator)
            loss, metrics = objective(
                logp, old_logp[rows], adv, mask, eps_low=eps_low, eps_high=eps_high, **mods
            )
            extra, extra_metrics = controller.extra_loss(
                logp, old_logp[rows], adv, mask, entropy, OBJECTIVE_AGG[cfg.algo]
            )
            if extra is not None:
                loss = loss + extra
            metrics.update(extra_metrics)
            split = tracker.split_grads(loss, [logp, entropy], rows) if tracker is not None else None
            optimizer.zero_grad(set_to_none=True)
            fwd.backward(loss)
            grad_norm = float(full_value(torch.nn.utils.clip_grad_norm_(root.parameters(), cfg.grad_clip)))
            metrics[schema.GRAD_NORM] = grad_norm
            optimizer.step()
            if tracker is not None:
                # clip_grad_norm_'s own factor, so the parts scale as the gradient the optimizer saw.
                tracker.after_step(split, min(1.0, cfg.grad_clip / (grad_norm + 1e-6)))
            ratio = torch.exp(logp.detach().float() - old_logp[rows])
            if epoch == 0 and i == 0:
                # The policy has not moved yet: any deviation from 1 is numerical drift.
                result.onpolicy_dev = onpolicy_deviation(ratio, response_mask[rows])
            result.ratio[rows] = ratio
            result.all_ratios.append(ratio)
            result.all_rows.append(rows)
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + float(v)
    passes = sum(len(s) for s in splits)
    result.metrics = {k: v / passes for k, v in sums.items()}
    return result
