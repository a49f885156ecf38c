"""The rollout engine's weight copy per precision mode, for untied (Qwen2) and tied (GPT-2) heads."""

import pytest
import torch

from trainer.models import load_policy
from trainer.rollout import RolloutEngine, exponential_noise


@pytest.mark.parametrize("preset", ["tiny-qwen2", "tiny-gpt2"])
def test_bf16_fixed_engine_keeps_head_fp32_and_body_bf16_after_sync(preset):
    model, _ = load_policy(preset, seed=0)
    engine = RolloutEngine(model, "bf16_fixed")
    head, embed = engine.model.get_output_embeddings(), engine.model.get_input_embeddings()
    assert head.weight.dtype == torch.float32 and embed.weight.dtype == torch.bfloat16
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 1e-2)  # an update, as the optimizer would make it
    engine.sync()
    assert torch.equal(head.weight, model.get_output_embeddings().weight)
    assert torch.equal(embed.weight, model.get_input_embeddings().weight.bfloat16())
    # The trainer's own model is untouched: still fp32, still tied where it was.
    assert all(p.dtype == torch.float32 for p in model.parameters())
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert tied == (preset == "tiny-gpt2")


def test_fp32_engine_is_the_training_model():
    model, _ = load_policy("tiny-qwen2", seed=0)
    assert RolloutEngine(model, "fp32").model is model


def test_cpu_noise_is_bitwise_torchs_exponential_and_leaves_the_generator_where_it_would():
    """The sampler's noise, drawn the faster way, is the draw torch's exponential_ makes: same tokens per seed."""
    ours, theirs = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    for shape in [(3, 50), (128, 1000), (1, 1)]:
        fast = exponential_noise(shape, ours, torch.device("cpu"))
        assert fast.dtype == torch.float32 and fast.shape == shape and (fast >= 0).all()
        assert torch.equal(fast, torch.empty(shape).exponential_(generator=theirs))
    assert torch.equal(ours.get_state(), theirs.get_state())
