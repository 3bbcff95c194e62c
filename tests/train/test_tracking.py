"""MLflow bookkeeping against a real sqlite store, read back through the MLflow client."""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient

from ecglm.config import ExperimentConfig, apply_overrides, flatten
from ecglm.config.paths import resolve_paths
from ecglm.tracking import mlflow_run


def test_run_holds_params_config_metrics_and_artifacts(tmp_path: Path) -> None:
    cfg = resolve_paths(apply_overrides(ExperimentConfig(), {"name": "t", "lora.r": 5}), tmp_path)
    run_id = mlflow_run.start_run(cfg, "unit", tags={"k": "v"})
    uri = cfg.tracking.tracking_uri
    mlflow_run.log_metrics(uri, run_id, {"train_loss": 2.0, "bad": float("nan")}, step=1)
    mlflow_run.log_metrics(uri, run_id, {"train_loss": 1.5}, step=2)
    art = tmp_path / "ck"
    art.mkdir()
    (art / "trainable.safetensors").write_bytes(b"x")
    mlflow_run.log_artifacts(uri, run_id, art, "checkpoint")
    mlflow_run.end_run(uri, run_id)

    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["lora.r"] == "5"
    assert set(run.data.params) == set(flatten(cfg))
    assert run.data.tags["k"] == "v"
    hist = client.get_metric_history(run_id, "train_loss")
    assert [(m.step, m.value) for m in hist] == [(1, 2.0), (2, 1.5)]
    assert "bad" not in run.data.metrics
    names = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.yaml", "checkpoint"} <= names
    local = mlflow_run.download_artifacts(uri, run_id, "checkpoint", tmp_path / "dl")
    assert (local / "trainable.safetensors").read_bytes() == b"x"
