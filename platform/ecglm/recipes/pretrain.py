"""``ecglm pretrain CONFIG``: contrastive ECG<->text (SigLIP) pretraining of the encoder on Ray
Train, then zero-shot superclass AUC."""

from __future__ import annotations

from typing import Any

from ecglm.config import ExperimentConfig
from ecglm.pretrain.data import PretrainDataError
from ecglm.pretrain.run import run_pretraining
from ecglm.recipes.common import ray_lifecycle
from ecglm.train.resources import check_resources


__all__ = ["PretrainDataError", "run"]


def run(cfg: ExperimentConfig) -> dict[str, Any]:
    """Pretrain; the MLflow run, the encoder file and the zero-shot metrics.

    Raises:
        PretrainDataError: a split has no record with text, or the batch does not fit.
        ResourcePlanError: the cluster cannot place the workers plus their ingest
            (``train.resource_check``).
    """
    with ray_lifecycle(cfg):
        check_resources(cfg)  # before any worker starts
        res = run_pretraining(cfg)
    return {"mlflow_run_id": res.run_id, "encoder_path": str(res.encoder_path),
            "output_dir": str(res.output_dir), "metrics": res.metrics}
