"""Driver side of the one Ray Train runner used by training and pretraining.

:func:`fit_workers` builds a ``TorchTrainer`` for a worker loop (``train.num_workers`` workers,
``train.cpus_per_worker`` CPUs each, GPU or not, results under ``train.storage_path``; the Ray
Data ingest capped at ``train.data_cpus`` CPUs), fits it,
picks the checkpoint to keep (lowest/highest score attribute, or the last one), copies it into a
local folder and, given an MLflow run, logs it as an artifact. Workers use
:mod:`ecglm.train.worker`.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Optional, Sequence, Union

import ray.train
from ray.data import ExecutionResources
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from ecglm.config.schema import TrainConfig
from ecglm.tracking.tracked import TrackedRun


@dataclass(frozen=True)
class CheckpointScore:
    """Which reported checkpoints Ray keeps, and which one the run keeps."""

    attribute: Optional[str] = None
    """Reported metric to rank by (None: keep the latest)."""
    order: Literal["min", "max"] = "min"
    num_to_keep: int = 1
    """Checkpoints Ray keeps under ``storage_path``."""


@dataclass(frozen=True)
class RunnerSpec:
    """How to run the workers: scaling, storage, checkpoint scoring, Tune reporting."""

    name: str
    """Ray Train run name (folder under ``storage_path``)."""
    num_workers: int
    use_gpu: bool
    cpus_per_worker: float
    storage_path: str
    score: CheckpointScore = CheckpointScore()
    tune_report: bool = False
    """Feed reported metrics to the enclosing Ray Tune trial (``TuneReportCallback``)."""
    report_callback: Optional[Any] = None
    """A ``TuneReportCallback`` (subclass) to use instead of the plain one (a sweep's
    validation metric, :mod:`ecglm.tuning.trial_metric`); implies ``tune_report``."""
    datasets_to_split: Union[Literal["all"], Sequence[str]] = "all"
    """Datasets split across workers; the others go whole to every worker."""
    placement_strategy: str = "PACK"
    """Ray placement strategy of the workers' bundles (``train.placement_strategy``)."""
    max_failures: int = 0
    """Worker-group restarts after a worker failure (``FailureConfig``; -1: no limit). The
    loop must resume from ``ray.train.get_checkpoint()`` for a restart to keep progress."""
    data_cpus: float = 1.0
    """CPUs the Ray Data ingest may use beside the workers (``train.data_cpus``): Ray Data's
    ``resource_limits``; the preflight (:mod:`ecglm.train.resources`) checks they are free."""

    @classmethod
    def from_train(cls, train: TrainConfig, name: str, score: CheckpointScore, *,
                   tune_report: bool = False, report_callback: Optional[Any] = None,
                   datasets_to_split: Union[Literal["all"], Sequence[str]] = "all"
                   ) -> "RunnerSpec":
        """Scaling, storage and ``train.max_failures`` from the ``train`` section."""
        return cls(name, train.num_workers, train.use_gpu, train.cpus_per_worker,
                   train.storage_path, score, tune_report, report_callback, datasets_to_split,
                   train.placement_strategy, train.max_failures, train.data_cpus)


@dataclass
class Fitted:
    """Outcome of :func:`fit_workers`."""

    result: Any
    """The ``ray.train.Result``."""
    checkpoint_dir: Path
    """Local copy of the kept checkpoint."""
    metrics: dict[str, Any]
    """The last reported metrics."""


def build_trainer(loop: Callable[[dict], None], loop_config: Mapping[str, Any],
                  datasets: Mapping[str, Any], spec: RunnerSpec) -> TorchTrainer:
    """The ``TorchTrainer`` running ``loop(loop_config)`` on every worker."""
    score = spec.score
    return TorchTrainer(
        loop,
        train_loop_config=dict(loop_config),
        scaling_config=ray.train.ScalingConfig(
            num_workers=spec.num_workers, use_gpu=spec.use_gpu,
            resources_per_worker={"CPU": spec.cpus_per_worker},
            placement_strategy=spec.placement_strategy),
        run_config=ray.train.RunConfig(
            name=spec.name, storage_path=spec.storage_path,
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=score.num_to_keep, checkpoint_score_attribute=score.attribute,
                checkpoint_score_order=score.order),
            callbacks=_callbacks(spec),
            # fail (not hang) when workers cannot be placed: 3 x 60 s start-up timeouts
            failure_config=ray.train.FailureConfig(max_failures=spec.max_failures,
                                                   controller_failure_limit=3)),
        datasets=dict(datasets),
        dataset_config=ray.train.DataConfig(
            datasets_to_split=(spec.datasets_to_split if spec.datasets_to_split == "all"
                               else list(spec.datasets_to_split)),
            execution_options=ingest_options(spec.data_cpus)),
    )


def _callbacks(spec: RunnerSpec) -> list[Any]:
    """The Train run's callbacks: the spec's report callback, else a plain
    ``TuneReportCallback`` inside a Tune trial, else none."""
    if spec.report_callback is not None:
        return [spec.report_callback]
    return [TuneReportCallback()] if spec.tune_report else []


def ingest_options(data_cpus: Optional[float] = None) -> Any:
    """Ray Train's default ingest options with ``preserve_order``: blocks reach the split in a
    fixed order, so every worker's shard (and its seeded shuffles) is the same in every run --
    what exact resume (re-iterate a pass, skip the consumed batches) relies on.

    Args:
        data_cpus: cap on the CPUs each dataset's ingest uses (``train.data_cpus``; Ray Data's
            ``resource_limits.cpu``, never above a limit already set in the ``DataContext``);
            None: no cap.
    """
    options = ray.train.DataConfig.default_ingest_options()
    options.preserve_order = True
    if data_cpus is not None:
        options.resource_limits = options.resource_limits.min(
            ExecutionResources.for_limits(cpu=float(data_cpus)))
    return options


def pick_best(candidates: Sequence[tuple[Any, Mapping[str, Any]]],
              score: CheckpointScore) -> Optional[Any]:
    """The checkpoint of ``(checkpoint, metrics)`` pairs whose finite ``score.attribute`` is
    lowest (``min``) or highest (``max``); among equal scores the later one; None when no
    candidate has a finite score."""
    best, best_value = None, None
    sign = 1.0 if score.order == "min" else -1.0
    for checkpoint, metrics in candidates:
        value = metrics.get(score.attribute) if score.attribute else None
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        if best_value is None or sign * value <= sign * best_value:
            best, best_value = checkpoint, value
    return best


def kept_checkpoint(result: Any, score: CheckpointScore, name: str) -> Any:
    """The checkpoint to keep: the best by ``score`` among those Ray kept, else (no score
    attribute, or no finite score) the latest.

    Raises:
        RuntimeError: the workers reported no checkpoint.
    """
    best = pick_best(result.best_checkpoints or [], score) if score.attribute else None
    best = best or result.checkpoint
    if best is None:
        raise RuntimeError(f"Ray Train run {name}: the workers reported no checkpoint")
    return best


def fit_workers(loop: Callable[[dict], None], loop_config: Mapping[str, Any],
                datasets: Mapping[str, Any], spec: RunnerSpec, local_dir: Path,
                run: Optional[TrackedRun] = None, artifact_path: Optional[str] = None) -> Fitted:
    """Fit ``loop`` on the workers and keep one checkpoint.

    Args:
        loop_config: passed to every worker (include ``config`` and ``mlflow_run_id``).
        datasets: Ray Datasets by name (``ray.train.get_dataset_shard(name)`` in workers).
        local_dir: where the kept checkpoint is copied (replaced if it exists).
        run, artifact_path: when both are given, the copy is logged to ``run`` under
            ``artifact_path``.

    Raises:
        RuntimeError: no checkpoint was reported. Errors of the workers propagate.
    """
    result = build_trainer(loop, loop_config, datasets, spec).fit()
    best = kept_checkpoint(result, spec.score, spec.name)
    local_dir = Path(local_dir)
    if local_dir.exists():
        shutil.rmtree(local_dir)
    best.to_directory(str(local_dir))
    if run is not None and artifact_path:
        run.log_artifacts(local_dir, artifact_path)
    return Fitted(result, local_dir, dict(result.metrics or {}))
