"""Driver side of a training run: shards -> retrieval -> Ray Train -> MLflow -> checkpoint."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import pandas as pd
import pyarrow.parquet as pq
import ray.data
import ray.train
from ray.train.torch import TorchTrainer

from ecglm.config import ExperimentConfig, to_dict
from ecglm.config.paths import resolve_paths
from ecglm.data.rows import ECGRow
from ecglm.data.shards import ShardSet, build_shards
from ecglm.models.llm import prepare_llm_dir
from ecglm.retrieval.build import RetrievalArtifact, build_retrieval
from ecglm.tasks import EmptySplitError, Task, TaskData, get_task
from ecglm.tracking import mlflow_run
from ecglm.train.loop import train_loop_per_worker


@dataclass
class Prepared:
    """Everything a run needs before training starts (all paths absolute)."""

    cfg: ExperimentConfig
    shards: ShardSet
    retrieval: RetrievalArtifact
    data: TaskData
    """The task's rows per split (:meth:`ecglm.tasks.base.Task.build_data`)."""

    @property
    def task(self) -> Task:
        return get_task(self.cfg.task)


@dataclass
class TrainResult:
    """Outcome of :func:`run_training`."""

    run_id: str
    checkpoint_dir: Path
    """Local copy of the best checkpoint (lowest ``val_loss``)."""
    metrics: dict[str, Any]
    prepared: Prepared


def prepare(cfg: ExperimentConfig) -> Prepared:
    """Resolve paths, write (or reuse) shards, the task's rows and the retrieval artifact, and
    make sure the LLM folder exists (converted once, before workers start). Ray must be
    running (the recipe starts it)."""
    cfg = resolve_paths(cfg)
    task = get_task(cfg.task)
    task.check_config(cfg)
    shards = build_shards(cfg)
    data = task.build_data(cfg, shards)
    prepare_llm_dir(cfg.llm)
    retrieval = build_retrieval(cfg, shards)
    return Prepared(cfg, shards, retrieval, data)


def _add_neighbours(neighbours: Mapping[int, list[str]]):
    def fn(df: pd.DataFrame) -> pd.DataFrame:
        df = df.copy()
        df["retrieved_reports"] = [list(neighbours.get(int(list(ids)[0]), []))
                                   for ids in df["ecg_ids"]]
        return df

    return fn


def split_dataset(prep: Prepared, split: str) -> ray.data.Dataset:
    """Ray Dataset of the task's rows of ``split`` with a ``retrieved_reports`` column.

    Raises:
        EmptySplitError: the split has no rows (the message names the manifest).
    """
    path = prep.data.paths.get(split)
    if path is None or not Path(path).exists() or prep.data.count(split) == 0:
        raise EmptySplitError(
            f"data: split '{split}' has no {prep.task.items} (see {prep.data.manifest_path}); "
            "adjust data.valid_fraction/data.test_fraction or data.qa_split"
        )
    ds = ray.data.read_parquet(str(path))
    return ds.map_batches(_add_neighbours(prep.retrieval.neighbours), batch_format="pandas")


def split_rows(prep: Prepared, split: str) -> list[ECGRow]:
    """All typed rows of ``split`` (with retrieved reports), in shard order."""
    path = prep.data.paths.get(split)
    if path is None or not Path(path).exists():
        return []
    df = pq.read_table(str(path)).to_pandas()
    df = _add_neighbours(prep.retrieval.neighbours)(df)
    return prep.task.rows(df.sort_values("sample_id", kind="stable").to_dict("records"))


def run_training(
    cfg: ExperimentConfig,
    *,
    run_name: Optional[str] = None,
    parent_run_id: Optional[str] = None,
    tags: Optional[Mapping[str, str]] = None,
    tune_report: bool = False,
    prepared: Optional[Prepared] = None,
) -> TrainResult:
    """Train with Ray Train (``train.strategy``) and track the run in MLflow.

    Returns the MLflow run id, a local copy of the best checkpoint and the final metrics.
    """
    prep = prepared or prepare(cfg)
    cfg = prep.cfg
    datasets = {"train": split_dataset(prep, "train"), "valid": split_dataset(prep, "valid")}
    run_id = mlflow_run.start_run(
        cfg, run_name or cfg.name, parent_run_id=parent_run_id,
        tags={"ecglm.data_source": str(prep.shards.manifest.get("kind")), "ecglm.task": cfg.task,
              "ecglm.strategy": cfg.train.strategy, **(tags or {})},
    )
    uri = cfg.tracking.tracking_uri
    mlflow_run.log_dict(uri, run_id, prep.shards.manifest, "data/manifest.json")
    if prep.data.root != prep.shards.root:  # rows built for the task beside the shards
        mlflow_run.log_dict(uri, run_id, prep.data.manifest.to_json(),
                            f"data/{cfg.task}_manifest.json")
    callbacks = []
    if tune_report:
        from ray.tune.integration.ray_train import TuneReportCallback

        callbacks.append(TuneReportCallback())
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": to_dict(cfg), "mlflow_run_id": run_id},
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.train.num_workers, use_gpu=cfg.train.use_gpu,
            resources_per_worker={"CPU": cfg.train.cpus_per_worker},
        ),
        run_config=ray.train.RunConfig(
            name=f"{cfg.name}-{run_id[:8]}",
            storage_path=cfg.train.storage_path,
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=2, checkpoint_score_attribute="val_loss",
                checkpoint_score_order="min",
            ),
            callbacks=callbacks,
            # fail (not hang) when workers cannot be placed: 3 x 60 s start-up timeouts
            failure_config=ray.train.FailureConfig(max_failures=0, controller_failure_limit=3),
        ),
        datasets=datasets,
    )
    try:
        result = trainer.fit()
    except BaseException:
        mlflow_run.end_run(uri, run_id, "FAILED")
        raise
    best = result.best_checkpoints[0][0] if result.best_checkpoints else result.checkpoint
    if best is None:
        mlflow_run.end_run(uri, run_id, "FAILED")
        raise RuntimeError(f"run {run_id}: training reported no checkpoint")
    local = Path(cfg.output_dir) / cfg.name / run_id / "checkpoint"
    if local.exists():
        shutil.rmtree(local)
    best.to_directory(str(local))
    # the retrieval artifact travels with the checkpoint: serving needs both
    shutil.copytree(prep.retrieval.folder, local.parent / "retrieval", dirs_exist_ok=True)
    mlflow_run.log_artifacts(uri, run_id, local, "checkpoint")
    mlflow_run.log_artifacts(uri, run_id, prep.retrieval.folder, "retrieval")
    metrics = dict(result.metrics or {})
    mlflow_run.set_tags(uri, run_id, {"ecglm.stage": "trained",
                                      "ecglm.checkpoint": str(local)})
    mlflow_run.end_run(uri, run_id)
    return TrainResult(run_id, local, metrics, prep)
