import os

import pytest

# Warm-up checkpoints are cached across tests (and runs) in one place per session.
os.environ.setdefault(
    "ENTROPYSCOPE_CACHE", os.path.join(os.path.dirname(__file__), "..", ".cache", "entropyscope")
)

TINY = [
    "steps=3",
    "prompts_per_step=4",
    "group_size=4",
    "warmup_steps=40",
    "checkpoint_every=1",
    "minibatches=2",
]


@pytest.fixture
def tiny_overrides() -> list[str]:
    """A run small enough for seconds on CPU that still exercises every part of the loop."""
    return list(TINY)
