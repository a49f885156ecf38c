"""Torch side of entropyscope: models, tasks, rollout, objectives, diagnostics, training loop, CLI."""
