"""Driver side of a training run: shards -> retrieval -> Ray Train -> MLflow -> checkpoint."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import pandas as pd

from ecglm.checkpoint import ARTIFACT_PATH
from ecglm.config import ExperimentConfig, to_dict
from ecglm.config.paths import resolve_paths
from ecglm.data.shards import ShardSet, build_shards, require_qa_dataset
from ecglm.data.tasks import TaskRows, build_task_rows
from ecglm.retrieval.build import RetrievalArtifact, build_retrieval
from ecglm.tracking.tracked import tracked_run
from ecglm.train.loop import train_loop_per_worker
from ecglm.train.runner import CheckpointScore, RunnerSpec, fit_workers
from ecglm.utils.ray_env import init_ray


class EmptySplitError(ValueError):
    """A split needed by the run holds no QA items."""


@dataclass
class Prepared:
    """Everything a run needs before training starts (all paths absolute)."""

    cfg: ExperimentConfig
    shards: ShardSet
    retrieval: RetrievalArtifact
    tasks: Optional[TaskRows] = None
    """Rows of the generation tasks (``task: report | grounding``); None for ``qa``."""

    def split_path(self, split: str) -> Optional[Path]:
        """Parquet rows of ``split`` for ``cfg.task`` (QA shards or task rows)."""
        if self.tasks is not None:
            return self.tasks.paths.get(split)
        return self.shards.qa.get(split)

    def split_count(self, split: str) -> Optional[int]:
        """Rows of ``split`` according to the manifest (None when unknown)."""
        if self.tasks is not None:
            return self.tasks.manifest.get("counts", {}).get("per_split", {}).get(split)
        return self.shards.manifest.get("counts", {}).get("per_split", {}).get(split, {}).get("qa")

    def manifest_path(self) -> Path:
        """The manifest that lists the split counts."""
        return (self.tasks.root if self.tasks is not None else self.shards.root) / "manifest.json"


@dataclass
class TrainResult:
    """Outcome of :func:`run_training`."""

    run_id: str
    checkpoint_dir: Path
    """Local copy of the best checkpoint (lowest ``val_loss``)."""
    metrics: dict[str, Any]
    prepared: Prepared


def prepare(cfg: ExperimentConfig) -> Prepared:
    """Resolve paths, start/join Ray, write (or reuse) shards and the retrieval artifact, and make
    sure the LLM folder exists (converted once, before workers start)."""
    from ecglm.models.llm import prepare_llm_dir

    cfg = resolve_paths(cfg)
    if cfg.task == "qa":
        require_qa_dataset(cfg)  # QA training/evaluation needs ECG-QA items (PTB-XL)
    init_ray(cfg.train.ray_num_cpus)
    shards = build_shards(cfg)
    tasks = build_task_rows(cfg, shards) if cfg.task != "qa" else None
    prepare_llm_dir(cfg.llm)
    retrieval = build_retrieval(cfg, shards)
    return Prepared(cfg, shards, retrieval, tasks)


def _add_neighbours(neighbours: Mapping[int, list[str]]):
    def fn(df: pd.DataFrame) -> pd.DataFrame:
        df = df.copy()
        df["retrieved_reports"] = [list(neighbours.get(int(list(ids)[0]), []))
                                   for ids in df["ecg_ids"]]
        return df

    return fn


def qa_dataset(prep: Prepared, split: str):
    """Ray Dataset of the task's rows of ``split`` (QA items, or records with a ``target`` for
    the generation tasks) with a ``retrieved_reports`` column."""
    import ray.data

    path = prep.split_path(split)
    n = prep.split_count(split)
    if path is None or not Path(path).exists() or n == 0:
        raise EmptySplitError(
            f"data: split '{split}' has no {cfg_items(prep)} (see {prep.manifest_path()}); "
            "adjust data.valid_fraction/data.test_fraction or data.qa_split"
        )
    ds = ray.data.read_parquet(str(path))
    return ds.map_batches(_add_neighbours(prep.retrieval.neighbours), batch_format="pandas")


def cfg_items(prep: Prepared) -> str:
    """What a row is, for messages."""
    return "QA items" if prep.cfg.task == "qa" else f"{prep.cfg.task} records"


def qa_rows(prep: Prepared, split: str) -> list[dict]:
    """All rows of ``split`` for ``cfg.task`` (with ``retrieved_reports``) as dicts, in shard
    order (QA items, or records with ``target`` for the generation tasks)."""
    import pyarrow.parquet as pq

    path = prep.split_path(split)
    if path is None or not Path(path).exists():
        return []
    df = pq.read_table(str(path)).to_pandas()
    df = _add_neighbours(prep.retrieval.neighbours)(df)
    return df.sort_values("sample_id", kind="stable").to_dict("records")


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

    The MLflow run ends FINISHED, or FAILED (KILLED on Ctrl-C) when anything raises
    (:func:`ecglm.tracking.tracked.tracked_run`). Returns the MLflow run id, a local copy of the
    best checkpoint (lowest ``val_loss``) and the last reported metrics.
    """
    prep = prepared or prepare(cfg)
    cfg = prep.cfg
    datasets = {"train": qa_dataset(prep, "train"), "valid": qa_dataset(prep, "valid")}
    run_tags = {"ecglm.data_source": str(prep.shards.manifest.get("kind")),
                "ecglm.task": cfg.task, "ecglm.strategy": cfg.train.strategy, **(tags or {})}
    with tracked_run(cfg, run_name or cfg.name, tags=run_tags,
                     parent_run_id=parent_run_id) as run:
        run_id = run.run_id
        run.log_dict(prep.shards.manifest, "data/manifest.json")
        if prep.tasks is not None:
            run.log_dict(prep.tasks.manifest, f"data/{cfg.task}_manifest.json")
        spec = RunnerSpec.from_train(
            cfg.train, f"{cfg.name}-{run_id[:8]}",
            CheckpointScore("val_loss", "min", num_to_keep=2), tune_report=tune_report)
        local = Path(cfg.output_dir) / cfg.name / run_id / "checkpoint"
        fitted = fit_workers(train_loop_per_worker,
                             {"config": to_dict(cfg), "mlflow_run_id": run_id}, datasets, spec,
                             local, run, ARTIFACT_PATH)
        # the retrieval artifact travels with the checkpoint: serving needs both
        shutil.copytree(prep.retrieval.folder, local.parent / "retrieval", dirs_exist_ok=True)
        run.log_artifacts(prep.retrieval.folder, "retrieval")
        run.set_tags({"ecglm.stage": "trained", "ecglm.checkpoint": str(local)})
    return TrainResult(run_id, local, fitted.metrics, prep)
