"""``ecglm tune CONFIG``: a Ray Tune sweep over ``tune.search_space`` (one MLflow child run per
trial under a parent run)."""

from __future__ import annotations

from typing import Any, Optional

from ecglm.config import ExperimentConfig
from ecglm.plan.preflight import check_memory
from ecglm.recipes.common import ray_lifecycle
from ecglm.train.resources import check_resources
from ecglm.tuning.sweep import run_sweep


def run(cfg: ExperimentConfig, resume: Optional[str] = None) -> dict[str, Any]:
    """Run the sweep (or continue the interrupted one ``resume`` names: its parent MLflow
    run id or Tune folder); the best trial's overrides, metric and MLflow runs."""
    with ray_lifecycle(cfg):
        check_memory(cfg)  # train.memory_check: refuse before any worker starts
        check_resources(cfg, sweep=True)  # tune.max_concurrent_trials x (workers + ingest)
        res = run_sweep(cfg, resume=resume)
    return {"best": res.best_overrides, "metric": res.metric, "best_metric": res.best_metric,
            "best_mlflow_run_id": res.best_mlflow_run_id,
            "sweep_mlflow_run_id": res.parent_run_id, "report": res.report,
            "trials": res.table}
