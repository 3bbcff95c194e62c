"""The metric a sweep ranks trials on, measured on the validation split as ``ecglm eval`` does.

``tune.metric: task`` (the default) is the task's own metric (:attr:`ecglm.tasks.base.Task.
tune_metric`: QA exact match, classify macro AUC, reports ROUGE-L); another key of the task's
evaluation metrics works the same way; ``val_loss`` is the training loop's validation loss.

An evaluation metric is computed for every checkpoint the trial reports at an evaluation step
(``train.eval_every`` and the last step): :class:`ValidationReportCallback` runs in the Ray
Train controller of the trial, loads the checkpoint, evaluates it on at most
``tune.eval_max_items`` validation items (:func:`validation_config`: no baselines, report,
judge, noise or extra sections), adds ``val/<key>`` to the metrics Tune receives and logs it
to the trial's MLflow run at that step. Reports without evaluation (``train.checkpoint_every``)
carry NaN, as ``val_loss`` does there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY, TuneReportCallback

from ecglm.config import ConfigError, ExperimentConfig, apply_overrides
from ecglm.tasks import get_task
from ecglm.tracking import mlflow_run

LOSS_METRICS = ("val_loss", "train_loss")
"""``tune.metric`` values the training loop reports itself (no evaluation needed)."""
REPORTED_PREFIX = "val/"
"""Prefix of an evaluation metric in Tune results and MLflow (``val/em/overall``)."""


@dataclass(frozen=True)
class SweepMetric:
    """What trials are ranked on.

    Attributes:
        name: the key in Tune results and MLflow metrics (``val_loss``, ``val/em/overall``).
        eval_key: the task's evaluation metric key (``em/overall``); None for a loss.
        mode: ``min`` or ``max``.
    """

    name: str
    eval_key: Optional[str]
    mode: str


def sweep_metric(cfg: ExperimentConfig) -> SweepMetric:
    """``tune.metric``/``tune.mode`` resolved for ``cfg.task``."""
    metric = cfg.tune.metric
    if metric in LOSS_METRICS:
        return SweepMetric(metric, None, cfg.tune.resolved_mode)
    key = get_task(cfg.task).tune_metric if metric == "task" else metric
    return SweepMetric(REPORTED_PREFIX + key, key, cfg.tune.resolved_mode)


def validation_config(cfg: ExperimentConfig) -> ExperimentConfig:
    """``cfg`` evaluating ``tune.eval_max_items`` validation items and nothing else."""
    return apply_overrides(cfg, {
        "evaluation.split": "valid", "evaluation.max_items": cfg.tune.eval_max_items,
        "evaluation.baselines": False, "evaluation.report": False,
        "evaluation.noise_snr_db": [], "evaluation.judge": "none",
        "evaluation.report_metrics": False, "evaluation.classification": False,
        "evaluation.transfer": None})


def validation_prep(prep: Any) -> Any:
    """A :class:`~ecglm.train.run.Prepared` whose config is :func:`validation_config`
    (same shards, retrieval and rows)."""
    return replace(prep, cfg=validation_config(prep.cfg))


def evaluate_checkpoint(prep: Any, checkpoint_dir: str | Path, metric: SweepMetric,
                        run_id: Optional[str], step: int) -> float:
    """``metric.eval_key`` of ``checkpoint_dir`` evaluated in this process with ``prep``
    (from :func:`validation_prep`), logged to MLflow run ``run_id`` (when given) at ``step``.

    Raises:
        ConfigError: the task's evaluation has no such metric (names those it has).
    """
    from ecglm.recipes.eval_worker import evaluate_in_worker  # deferred: imports torch models

    cpus = float(prep.cfg.evaluation.num_cpus or prep.cfg.train.cpus_per_worker)
    done = evaluate_in_worker(prep, str(checkpoint_dir), run_id,
                              {"num_cpus": cpus, "num_gpus": 0.0})
    metrics = done.outcome.metrics
    if metric.eval_key not in metrics:
        raise ConfigError(f"tune.metric: the {prep.cfg.task} evaluation has no metric "
                          f"{metric.eval_key!r}; it has {sorted(metrics)}")
    value = float(metrics[metric.eval_key])
    if run_id:
        mlflow_run.log_metrics(prep.cfg.tracking.tracking_uri, run_id, {metric.name: value},
                               step)
    print(f"[tune] step {step}: {metric.name} = {value:.4f}", flush=True)
    return value


class ValidationReportCallback(TuneReportCallback):
    """``TuneReportCallback`` that adds the sweep metric of each evaluated checkpoint.

    Runs in the trial's Ray Train controller (created in the trial, so inside its Tune
    session). ``prep`` is the trial's :func:`validation_prep`.
    """

    def __init__(self, prep: Any, metric: SweepMetric) -> None:
        super().__init__()
        self._prep = prep
        self._metric = metric

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]],
                     checkpoint: Optional[Any]) -> None:
        out = metrics[0].copy()
        if self._metric.eval_key is not None:
            value = math.nan
            val_loss = out.get("val_loss")
            evaluated = isinstance(val_loss, float) and math.isfinite(val_loss)
            if checkpoint is not None and evaluated:
                run_id = str(out.get("mlflow_run_id") or "") or None
                with checkpoint.as_directory() as folder:
                    value = evaluate_checkpoint(self._prep, folder, self._metric, run_id,
                                                int(out["step"]))
            out[self._metric.name] = value
        if checkpoint is not None:
            out[CHECKPOINT_PATH_KEY] = checkpoint.path
        self._training_actor_item_queue.put(out)
