"""The rollout engine's weight copy per precision mode, for untied (Qwen2) and tied (GPT-2) heads."""

import pytest
import torch

from trainer.models import load_policy
from trainer.rollout import RolloutEngine


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
