"""StepStats, the per-step diagnostics an integration feeds from another trainer's forward: token-weighted over
micro-batches, sampler-vs-trainer precision when a sampler's log-probs come with the batch."""

import torch

from analysis import schema
from trainer.integrations.step_stats import StepStats


def micro_batch(lengths: list[int], seed: int, sampler_noise: float | None = None) -> dict:
    g = torch.Generator().manual_seed(seed)
    b, t = len(lengths), max(lengths)
    mask = (torch.arange(t)[None] < torch.tensor(lengths)[:, None]).long()  # (B, T)
    logp = -torch.rand(b, t, generator=g) * 3
    sampling = None if sampler_noise is None else logp + sampler_noise * torch.randn(b, t, generator=g)
    return dict(sample_ids=torch.arange(b), completion_ids=torch.randint(0, 50, (b, t), generator=g), mask=mask,
                logp=logp, entropy=torch.rand(b, t, generator=g) * 2, old_logp=logp.clone(),
                advantages=torch.randn(b, generator=g), sampling_logp=sampling)  # fmt: skip


def finish(stats: StepStats) -> dict:
    metrics, _ = stats.finish(lambda x: x, lambda v: v, 0.2, 0.2, 1e-3, 10, 50)
    return metrics


def test_means_are_token_weighted_over_micro_batches() -> None:
    a, b = micro_batch([1, 1], seed=0), micro_batch([6, 6, 6], seed=1)
    stats = StepStats(token_records=0)
    stats.add(**a, first_pass=True)
    stats.add(**b, first_pass=False)
    m = finish(stats)
    tokens = torch.cat([a["entropy"][a["mask"].bool()], b["entropy"][b["mask"].bool()]]).double()
    assert abs(m[schema.ENTROPY_MEAN] - float(tokens.mean())) < 1e-12
    seqs = [
        float(r[: int(n)].double().mean())
        for x in (a, b)
        for r, n in zip(x["entropy"], x["mask"].sum(1), strict=True)
    ]
    assert abs(m[schema.ENTROPY_SEQ_MEAN] - sum(seqs) / len(seqs)) < 1e-6  # per-sequence means in float32
    assert m[schema.RATIO_ONPOLICY_DEV] == 0.0 and schema.PRECISION_PROB_DIFF_MAX not in m
    assert stats.empty and schema.RATIO_ONPOLICY_DEV not in finish_second(stats, b)


def finish_second(stats: StepStats, batch: dict) -> dict:
    """A step that only reuses a rollout measures no on-policy deviation."""
    stats.add(**batch, first_pass=False)
    return finish(stats)


def test_a_samplers_logprobs_give_the_precision_metrics() -> None:
    stats = StepStats(token_records=0)
    stats.add(**micro_batch([4, 3], seed=2, sampler_noise=1e-3), first_pass=True)
    m = finish(stats)
    assert 0 < m[schema.PRECISION_LOGP_DIFF_MEAN] < m[schema.PRECISION_LOGP_DIFF_MAX] < 5e-3
    assert m[schema.PRECISION_PEARSON] > 0.99
