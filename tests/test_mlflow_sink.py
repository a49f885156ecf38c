"""A run with mlflow=sqlite:///... reads back through MLflow's own client under the store's metric names."""

import mlflow
import pytest

from analysis import schema
from analysis.store_reader import StoreReader
from trainer.config import load_config
from trainer.loop import train
from trainer.mlflow_sink import mlflow_metric_name


@pytest.mark.slow
def test_mlflow_gets_the_same_metrics_and_params(tmp_path, tiny_overrides):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config(None, [*tiny_overrides, f"mlflow={uri}"])
    train(cfg, tmp_path / "store", run_id="ml", progress=False)

    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("entropyscope")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["algo"] == "grpo" and run.data.params["steps"] == "3"
    assert set(run.data.metrics) == {mlflow_metric_name(k) for k in schema.METRIC_KEYS}
    history = client.get_metric_history(run.info.run_id, schema.ENTROPY_MEAN)
    stored = StoreReader(tmp_path / "store").scalars(["ml"], [schema.ENTROPY_MEAN]).sort_values("step")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == stored["step"].tolist()
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(stored["value"].tolist())


def test_only_the_at_sign_is_renamed():
    assert mlflow_metric_name("pass@k") == "pass_at_k"
    assert mlflow_metric_name(schema.ENTROPY_MEAN) == schema.ENTROPY_MEAN
