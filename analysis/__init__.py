"""Torch-free core shared by the trainer and the dashboard: run store, schema, metrics."""
