"""``ecglm train CONFIG``: shards -> Ray Train (+ MLflow) -> evaluation on
``evaluation.split``."""

from __future__ import annotations

from typing import Any

from ecglm.config import ExperimentConfig
from ecglm.plan.preflight import check_memory
from ecglm.recipes.common import evaluate_prepared, ray_lifecycle
from ecglm.recipes.eval_worker import eval_resources
from ecglm.train.resources import check_resources
from ecglm.train.run import TrainResult, run_training


def run(cfg: ExperimentConfig, evaluate: bool = True) -> dict[str, Any]:
    """Train, then (``evaluate``) score the best checkpoint with the task's metrics."""
    with ray_lifecycle(cfg):
        check_memory(cfg)  # train.memory_check: refuse before any worker starts
        # train.resource_check: workers + ingest (+ the evaluation task) must be placeable
        check_resources(cfg, eval_task=eval_resources(cfg) if evaluate else None)
        res: TrainResult = run_training(cfg)
        out: dict[str, Any] = {
            "mlflow_run_id": res.run_id,
            "checkpoint": str(res.checkpoint_dir),
            "val_loss": res.metrics.get("val_loss"),
            "data_source": res.prepared.shards.manifest.get("kind"),
            "tracking_uri": res.prepared.cfg.tracking.tracking_uri,
        }
        if evaluate:
            out["eval"] = evaluate_prepared(res.prepared, res.checkpoint_dir, res.run_id,
                                            extra_sections=[res.cost.section()] if res.cost
                                            else [])
    return out
