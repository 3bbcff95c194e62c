"""``ecglm eval CONFIG --checkpoint X``: score a checkpoint folder or an MLflow run's
checkpoint with the task's metrics."""

from __future__ import annotations

from typing import Any

from ecglm.config import ExperimentConfig
from ecglm.checkpoint import resolve_checkpoint
from ecglm.recipes.common import evaluate_prepared, ray_lifecycle
from ecglm.recipes.eval_worker import eval_resources
from ecglm.train.resources import check_eval_task
from ecglm.train.run import prepare


def run(cfg: ExperimentConfig, checkpoint: str) -> dict[str, Any]:
    """Prepare the data of ``cfg``, resolve ``checkpoint`` and evaluate it."""
    with ray_lifecycle(cfg):
        check_eval_task(cfg, eval_resources(cfg))  # train.resource_check: never wait forever
        prep = prepare(cfg)
        ckpt, run_id = resolve_checkpoint(prep.cfg, checkpoint)
        return {"mlflow_run_id": run_id, "checkpoint": str(ckpt),
                **evaluate_prepared(prep, ckpt, run_id)}
