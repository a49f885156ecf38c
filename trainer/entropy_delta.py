"""ΔH that means something: one iteration's change of batch entropy, measured and predicted, by quadrant.

- Measured (`entropy/delta_batch`): the token-mean entropy over the step's own rollout states (same contexts,
  same response positions) after the update minus before, on the training path. The states are fixed, so
  there is no sampling noise in it.
- Predicted: Δθ is the parameter change the optimizer actually applied over all of the iteration's optimizer
  steps (a snapshot diff: any optimizer, momentum, clipping and weight decay included).
  `entropy/delta_pred_first` = ∇H̄(θ0) · Δθ, first order; `entropy/delta_pred` = ḡ · Δθ with ḡ the Simpson
  average of ∇H̄ at θ0, the midpoint and θ1, i.e. the path integral of ∇H̄ · dθ along the straight step.
- Parts (`entropy/delta_pred_e1`..`_e4`): ḡ · Δθ_q, Δθ_q the part of the update from quadrant q's tokens.
  Each optimizer step's gradient is split by the quadrant of its tokens (extra backward passes); each part
  is then run through the optimizer as it stood at that step. Adam's update  -lr/bc1 · m / (sqrt(v/bc2) +
  eps)  is linear in the momentum m once v is fixed, so with v the state actually reached (set by the whole
  gradient) and one momentum buffer per quadrant, m_q <- β1 m_q + (1 - β1) c g_q  (c: the step's
  gradient-clip factor), the parts add up to the applied update, up to weight decay and rounding. The
  buffers follow momentum across consecutive measured iterations; momentum carried from unmeasured ones,
  and the gradient of tokens outside E1-E4 (zero advantage), is `entropy/delta_pred_other`.

docs/entropy_dynamics.md says what each number approximates and what it costs. The training itself is
untouched: the optimizer sees the same gradients, bit for bit, with the measurement on or off.
"""

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from analysis import schema
from trainer.config import TrainConfig
from trainer.policy import response_logprobs
from trainer.rollout import Rollout

PART_KEYS = (
    schema.ENTROPY_DELTA_PRED_E1,
    schema.ENTROPY_DELTA_PRED_E2,
    schema.ENTROPY_DELTA_PRED_E3,
    schema.ENTROPY_DELTA_PRED_E4,
)


def _dot(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return float(sum((x.double() * y.double()).sum() for x, y in zip(a, b, strict=True)))


@dataclass
class Split:
    """One optimizer step's gradient, split: E1..E3's shares, and the sum of every share but E4's."""

    parts: list[list[torch.Tensor]]  # per quadrant E1..E3, per parameter
    known: list[torch.Tensor]  # per parameter


class DeltaTracker:
    """Measures and predicts the batch-entropy change of the iterations it is asked to (`begin` ... `end`).

    `begin` takes g and the parameter snapshot, `split_grads` + `after_step` run around each optimizer step
    inside the update, `end` measures the entropy after the update and returns the step metrics.
    """

    def __init__(self, optimizer: torch.optim.Optimizer):
        self.optimizer = optimizer
        self.params = [p for g in optimizer.param_groups for p in g["params"] if p.requires_grad]
        self.active = False
        self.momenta: list[list[torch.Tensor]] | None = None  # per quadrant, per parameter
        self.last_step: int | None = None
        self.supported = _splittable(optimizer)
        self.groups = {id(p): g for g in optimizer.param_groups for p in g["params"]}

    def begin(
        self,
        step: int,
        entropy_of: "EntropyFn",
        quadrant: torch.Tensor,  # (B, R) int8
    ) -> None:
        """Before the update: g = ∇θ H̄(batch), the parameter snapshot, and the batch's token quadrants."""
        t0 = time.perf_counter()
        self.active, self.quadrant = True, quadrant
        self.grad_h, entropy = entropy_grad(self.params, entropy_of)
        self.h_before = _token_mean(entropy, entropy_of.response_mask)
        self.before = [p.detach().clone() for p in self.params]
        if self.last_step != step - 1 or self.momenta is None:
            # Attribution starts afresh: momentum from unmeasured iterations stays unattributed (in "other").
            self.momenta = [[torch.zeros_like(p) for p in self.params] for _ in PART_KEYS]
        self.shares = [[torch.zeros_like(p) for p in self.params] for _ in PART_KEYS]
        self.last_step = step
        self.seconds = time.perf_counter() - t0

    def split_grads(
        self, loss: torch.Tensor, outputs: list[torch.Tensor], rows: torch.Tensor
    ) -> Split | None:
        """Parameter gradients of `loss` from the quadrants of minibatch `rows`' tokens; call before backward.

        The loss depends on the parameters only through the per-token `outputs` (B_mb, R) (log-probs, and
        entropy under a bonus), so restricting d loss / d outputs to a quadrant's tokens and back-propagating
        gives exactly that quadrant's share of the gradient. E4's share is left for `after_step` to take
        from the whole gradient: one backward pass fewer.
        """
        if not (self.active and self.supported):
            return None
        t0 = time.perf_counter()
        outputs = [o for o in outputs if o is not None and o.requires_grad]
        d_out = torch.autograd.grad(loss, outputs, retain_graph=True)
        quadrant = self.quadrant[rows]
        split = Split([], [torch.zeros_like(p) for p in self.params])
        # E1..E3 and, where the loss reaches them (an entropy bonus), the tokens outside every quadrant.
        for q in (1, 2, 3, 0):
            sel = quadrant == q
            grads = self._grads(outputs, [d * sel for d in d_out]) if sel.any() else None
            if q == 0 and grads is None:
                continue
            if q:
                split.parts.append(grads or [torch.zeros_like(p) for p in self.params])
            for acc, g in zip(split.known, grads or [], strict=False):
                acc.add_(g)
        self.seconds += time.perf_counter() - t0
        return split

    def _grads(
        self, outputs: list[torch.Tensor], grad_outputs: list[torch.Tensor]
    ) -> list[torch.Tensor] | None:
        """d (outputs · grad_outputs) / d params, zeros for unused parameters; None when grad_outputs are all 0."""
        if not any(bool(g.any()) for g in grad_outputs):
            return None
        grads = torch.autograd.grad(
            outputs, self.params, grad_outputs=grad_outputs, retain_graph=True, allow_unused=True
        )
        return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, self.params, strict=True)]

    def after_step(self, split: Split | None, clip_coef: float) -> None:
        """After optimizer.step(): advance each quadrant's momentum and add its share of this step's update.

        `clip_coef` is the factor the gradient clip applied; the parameters' .grad still hold the clipped
        gradient the optimizer used, from which E4's share is what the other parts leave.
        """
        if split is None:
            return
        t0 = time.perf_counter()
        for i, p in enumerate(self.params):
            scale, beta = self._precondition(p)
            grad = torch.zeros_like(p) if p.grad is None else p.grad
            clipped = [clip_coef * g[i] for g in split.parts] + [grad - clip_coef * split.known[i]]
            for q, g in enumerate(clipped):
                m = self.momenta[q][i]
                m.mul_(beta).add_(g, alpha=1.0 - beta)
                self.shares[q][i].add_(m.double() * scale)
        self.seconds += time.perf_counter() - t0

    def _precondition(self, p: torch.Tensor) -> tuple[torch.Tensor | float, float]:
        """(S, β) with this step's update = S * m, m <- β m + (1 - β) grad (SGD: β = 0, m = grad)."""
        group = self.groups[id(p)]
        lr = group["lr"]
        if isinstance(self.optimizer, torch.optim.SGD):
            return -lr, 0.0
        state = self.optimizer.state[p]
        beta1, beta2 = group["betas"]
        t = float(state["step"])
        denom = (state["exp_avg_sq"].double() / (1.0 - beta2**t)).sqrt_().add_(group["eps"])
        return -lr / (1.0 - beta1**t) / denom, beta1

    def _grad_at_midpoint(self, entropy_of: "EntropyFn") -> list[torch.Tensor]:
        """∇H̄ at (θ0 + θ1) / 2; the parameters are back at θ1, bit for bit, afterwards."""
        after = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, b in zip(self.params, self.before, strict=True):
                p.add_(b).mul_(0.5)
        try:
            return entropy_grad(self.params, entropy_of)[0]
        finally:
            with torch.no_grad():
                for p, a in zip(self.params, after, strict=True):
                    p.copy_(a)

    def end(self, entropy_of: "EntropyFn") -> dict[str, float]:
        """After the update: measured and predicted ΔH of the batch, and the quadrant parts."""
        t0 = time.perf_counter()
        self.active = False
        grad_after, entropy = entropy_grad(self.params, entropy_of)
        delta = [p.detach() - b for p, b in zip(self.params, self.before, strict=True)]
        grad_mid = self._grad_at_midpoint(entropy_of)
        # Simpson's rule for the integral of ∇H̄ · dθ along the straight line θ0 -> θ1: the weights of the
        # gradients at its start, middle and end.
        grad_mean = [
            (g0 + 4 * gm + g1) / 6 for g0, gm, g1 in zip(self.grad_h, grad_mid, grad_after, strict=True)
        ]
        pred = _dot(grad_mean, delta)
        metrics = {
            schema.ENTROPY_DELTA_BATCH: _token_mean(entropy, entropy_of.response_mask) - self.h_before,
            schema.ENTROPY_DELTA_PRED: pred,
            schema.ENTROPY_DELTA_PRED_FIRST: _dot(self.grad_h, delta),
        }
        if self.supported:
            parts = [_dot(grad_mean, share) for share in self.shares]
            metrics.update(zip(PART_KEYS, parts, strict=True))
            metrics[schema.ENTROPY_DELTA_PRED_OTHER] = pred - sum(parts)
        del self.before, self.grad_h, self.shares
        metrics[schema.TIME_DELTA] = self.seconds + time.perf_counter() - t0
        return metrics


def _splittable(optimizer: torch.optim.Optimizer) -> bool:
    """Adam/AdamW without amsgrad, or SGD without momentum: optimizers whose update the parts reproduce."""
    groups = optimizer.param_groups
    if isinstance(optimizer, torch.optim.Adam | torch.optim.AdamW):
        return not any(g.get("amsgrad") or g.get("maximize") for g in groups)
    if isinstance(optimizer, torch.optim.SGD):
        return not any(g.get("momentum") or g.get("maximize") for g in groups)
    return False


def _token_mean(entropy: torch.Tensor, mask: torch.Tensor) -> float:
    """Token-mean entropy (B, R) over the mask, in float64 as entropy_stats computes `entropy/mean`."""
    values = entropy.detach().double()[mask.bool()]
    return float(values.mean()) if values.numel() else math.nan


class EntropyFn:
    """Per-token entropy (B, R) of a rollout batch under the current parameters, with gradient, on the
    training path (the formula an entropy bonus differentiates), minibatch by minibatch (`rows`)."""

    def __init__(self, model: torch.nn.Module, rollout: Rollout, rows: list[torch.Tensor], cfg: TrainConfig):
        self.model, self.rollout, self.rows, self.cfg = model, rollout, rows, cfg
        self.response_mask = rollout.response_mask

    def chunks(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(rows, entropy (b, R)) per minibatch."""
        for rows in self.rows:
            _, ent = response_logprobs(
                self.model,
                self.rollout.input_ids[rows],
                self.rollout.attention_mask[rows],
                self.response_mask.shape[1],
                temperature=self.cfg.temperature,
                precision=self.cfg.precision,
                chunk_size=self.cfg.entropy_chunk,
                with_entropy=True,
                entropy_grad=True,
            )
            yield rows, ent


def entropy_grad(
    params: list[torch.Tensor], entropy_of: EntropyFn
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """∇θ of the token-mean entropy H̄ over the batch's response tokens, minibatch by minibatch, and the
    per-token entropy (B, R) it differentiated."""
    mask = entropy_of.response_mask
    n = max(int(mask.sum()), 1)
    grad = [torch.zeros_like(p) for p in params]
    entropy = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
    with torch.enable_grad():
        for rows, ent in entropy_of.chunks():
            entropy[rows] = ent.detach().float()
            part = (ent.float() * mask[rows]).sum() / n
            if not part.requires_grad:
                continue
            for acc, g in zip(grad, torch.autograd.grad(part, params, allow_unused=True), strict=True):
                if g is not None:
                    acc.add_(g)
    return grad, entropy
