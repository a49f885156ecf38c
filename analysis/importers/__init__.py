"""Importers: other tools' logs (TensorBoard, MLflow, verl, TRL, JSONL, CSV, W&B offline) -> the run store.

One small reader module per format, each torch-free; importer.py detects the format, maps the names
(names.py, analysis/import_names.yaml) and writes through RunWriter.
"""
