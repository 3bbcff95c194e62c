"""Driver side of a training run: shards -> retrieval -> Ray Train -> MLflow -> checkpoint.

Resume (``train.resume_from`` / ``ecglm train --resume``): the reference is resolved
(:func:`ecglm.checkpoint.resolve_resume`) before anything starts; the run logs into the MLflow
run that wrote the checkpoint (reopened, no duplicate run) and the workers continue from it
under a new Ray Train run folder ``<name>-<run id[:8]>-from<step>``.

At the end the best checkpoint is logged as an MLflow pyfunc model (artifact ``model``,
``tracking.log_model``) and registered (``tracking.register_as``/``register_alias``); sweep
trials skip both (the sweep publishes its winner).
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import pandas as pd
import pyarrow.parquet as pq
import ray.data

from ecglm.checkpoint import (ARTIFACT_PATH, RAY_RUN_DIR_TAG, RESUME_CHECKPOINT_TAG, ResumePoint,
                              resolve_resume)
from ecglm.config import ExperimentConfig, to_dict
from ecglm.config.paths import resolve_paths
from ecglm.data.rows import ECGRow
from ecglm.data.shards import ShardSet, build_shards
from ecglm.evaluation.stream import ParquetRows, parquet_files
from ecglm.models.llm import prepare_llm_dir
from ecglm.retrieval.build import RetrievalArtifact, build_retrieval
from ecglm.serving.pyfunc import log_model, register_run
from ecglm.tasks import EmptySplitError, Task, TaskData, get_task
from ecglm.tracking import mlflow_run
from ecglm.tracking.tracked import tracked_run
from ecglm.train.failure import partial_checkpoint_on_failure
from ecglm.train.loop import train_loop_per_worker
from ecglm.train.runner import CheckpointScore, RunnerSpec, fit_workers
from ecglm.tuning.report import cost_section_html


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


@dataclass(frozen=True)
class TrainCost:
    """What a training run cost and how fast it went (the report's "Throughput and cost")."""

    wall_s: float
    """Seconds the Ray Train run took (workers started to last checkpoint)."""
    num_workers: int
    steps: int
    """Optimizer steps run by this attempt."""
    examples_per_s: Optional[float]
    tokens_per_s: Optional[float]
    """Input tokens (attention mask) per second over all workers, as rank 0 last logged it."""
    device: str

    @property
    def worker_hours(self) -> float:
        return self.num_workers * self.wall_s / 3600.0

    def section(self) -> tuple[str, str]:
        """``(heading, html)`` of the report section (:func:`ecglm.tuning.report.
        cost_section_html`)."""
        return cost_section_html(wall_s=self.wall_s, num_workers=self.num_workers,
                                 worker_hours=self.worker_hours,
                                 examples_per_s=self.examples_per_s,
                                 tokens_per_s=self.tokens_per_s, steps=self.steps,
                                 device=self.device)


def _cost(cfg: ExperimentConfig, run_id: str, wall_s: float, metrics: Mapping[str, Any],
          start_step: int) -> TrainCost:
    """The run's :class:`TrainCost` from its last reported step and logged throughput."""
    uri = cfg.tracking.tracking_uri

    def last(key: str) -> Optional[float]:
        points = mlflow_run.metric_history(uri, run_id, key)
        return points[-1][1] if points else None

    steps = int(metrics.get("step") or start_step) - start_step
    return TrainCost(wall_s, cfg.train.num_workers, steps, last("examples_per_s"),
                     last("tokens_per_s"), "cuda" if cfg.train.use_gpu else "cpu")


@dataclass
class TrainResult:
    """Outcome of :func:`run_training`."""

    run_id: str
    checkpoint_dir: Path
    """Local copy of the best checkpoint (lowest ``val_loss``)."""
    metrics: dict[str, Any]
    prepared: Prepared
    ray_run_dir: str = ""
    """The Ray Train run folder (``storage_path/<name>``) holding this run's checkpoints."""
    cost: Optional[TrainCost] = None


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


def split_rows(prep: Prepared, split: str, signals: bool = True) -> Sequence[ECGRow]:
    """Typed rows of ``split`` (with retrieved reports) in ``sample_id`` order, read in
    batches as they are iterated (:class:`~ecglm.evaluation.stream.ParquetRows`; slicing and
    indexing read only those rows). ``signals=False`` leaves the signal column unread (rows
    carry empty ``signals``: for baselines, which read labels and answers only). Empty when
    the split has no rows file."""
    path = prep.data.paths.get(split)
    if path is None or not Path(path).exists():
        return []
    neighbours = prep.retrieval.neighbours
    task = prep.task

    def to_rows(records: list[dict[str, Any]]) -> list[ECGRow]:
        for r in records:
            r["retrieved_reports"] = list(neighbours.get(int(list(r["ecg_ids"])[0]), []))
            if not signals:
                r["signals"] = b""
        return task.rows(records)

    columns = None
    if not signals:
        names = pq.read_schema(parquet_files(Path(path))[0]).names
        columns = [c for c in names if c != "signals"]
    return ParquetRows(Path(path), to_rows, columns)


FAULT_ENV = "ECGLM_TEST_KILL_AT"
"""Test-only fault injection: ``"<rank>:<step>:<marker file>"`` makes that Train worker end its
process (``os._exit(1)``) after optimizer step ``step``, once (the marker file remembers)."""


def fault_from_env() -> Optional[dict[str, Any]]:
    """The :data:`FAULT_ENV` hook as the loop's ``fault`` entry (None when unset).

    Raises:
        ValueError: the value is not ``rank:step:marker``.
    """
    value = os.environ.get(FAULT_ENV)
    if not value:
        return None
    parts = value.split(":", 2)
    if len(parts) != 3:
        raise ValueError(f"{FAULT_ENV}: expected 'rank:step:marker', got {value!r}")
    return {"rank": int(parts[0]), "step": int(parts[1]), "marker": parts[2]}


def _existing_run(cfg: ExperimentConfig, run_id: Optional[str]) -> Optional[str]:
    """``run_id`` when that run exists in ``tracking.tracking_uri`` (else None: a checkpoint
    copied from another tracking store starts a new run)."""
    from mlflow.exceptions import MlflowException  # deferred on purpose (see mlflow_run)

    if not run_id:
        return None
    try:
        mlflow_run.run_tags(cfg.tracking.tracking_uri, run_id)
    except MlflowException:
        return None
    return run_id


def run_training(
    cfg: ExperimentConfig,
    *,
    run_name: Optional[str] = None,
    parent_run_id: Optional[str] = None,
    tags: Optional[Mapping[str, str]] = None,
    tune_report: bool = False,
    prepared: Optional[Prepared] = None,
    stop_at_step: Optional[int] = None,
    run_id: Optional[str] = None,
    report_callback: Optional[Any] = None,
    publish: Optional[bool] = None,
) -> TrainResult:
    """Train with Ray Train (``train.strategy``) and track the run in MLflow.

    The MLflow run ends FINISHED, or FAILED (KILLED on Ctrl-C) when anything raises
    (:func:`ecglm.tracking.tracked.tracked_run`: error tags, ``error.txt``); when the workers
    fail, the latest resumable checkpoint is tagged and printed with the resume command
    (:mod:`ecglm.train.failure`). Returns the MLflow run id, a local copy of the
    best checkpoint (lowest ``val_loss``) and the last reported metrics.

    Args:
        stop_at_step: end after this optimizer step (a resumable checkpoint is written there;
            the schedule still spans ``train.max_steps``): continue with ``resume_from``.
        run_id: log into this existing MLflow run (reopened) rather than a new one or the
            run that wrote ``train.resume_from`` (a sweep trial that continues).
        report_callback: the Train run's Tune report callback (implies ``tune_report``).
        publish: log/register the model at the end (``tracking.log_model``/``register_as``);
            None: unless ``tune_report`` or ``report_callback`` (sweep trials skip it).

    Raises:
        CheckpointFileError: ``train.resume_from`` names no resumable checkpoint.
    """
    resume: Optional[ResumePoint] = (resolve_resume(cfg, cfg.train.resume_from)
                                     if cfg.train.resume_from else None)
    prep = prepared or prepare(cfg)
    cfg = prep.cfg
    datasets = {"train": split_dataset(prep, "train"), "valid": split_dataset(prep, "valid")}
    run_tags = {"ecglm.data_source": str(prep.shards.manifest.get("kind")),
                "ecglm.task": cfg.task, "ecglm.strategy": cfg.train.strategy, **(tags or {})}
    resumed_run = run_id or (_existing_run(cfg, resume.run_id) if resume else None)
    tune_report = tune_report or report_callback is not None
    if publish is None:
        publish = not tune_report
    with tracked_run(cfg, run_name or cfg.name, tags=run_tags,
                     parent_run_id=parent_run_id, run_id=resumed_run) as run:
        run_id = run.run_id
        run.log_dict(prep.shards.manifest, "data/manifest.json")
        if prep.data.root != prep.shards.root:  # rows built for the task beside the shards
            run.log_dict(prep.data.manifest.to_json(), f"data/{cfg.task}_manifest.json")
        # a resumed run gets a fresh Ray folder (Ray would otherwise restore that folder's own
        # latest checkpoint instead of the one asked for)
        name = f"{cfg.name}-{run_id[:8]}" + (f"-from{resume.step}-{uuid.uuid4().hex[:6]}"
                                             if resume else "")
        ray_run_dir = f"{str(cfg.train.storage_path).rstrip('/')}/{name}"
        run.set_tags({RAY_RUN_DIR_TAG: ray_run_dir,
                      **({RESUME_CHECKPOINT_TAG: resume.checkpoint} if resume else {})})
        spec = RunnerSpec.from_train(
            cfg.train, name,
            CheckpointScore("val_loss", "min", num_to_keep=cfg.train.keep_checkpoints),
            tune_report=tune_report, report_callback=report_callback)
        local = Path(cfg.output_dir) / cfg.name / run_id / "checkpoint"
        loop_config = {"config": to_dict(cfg), "mlflow_run_id": run_id,
                       "resume_from": resume.checkpoint if resume else None,
                       "stop_at_step": stop_at_step, "fault": fault_from_env()}
        # on failure: tag and print the latest resumable checkpoint (ecglm.train.failure)
        t0 = time.perf_counter()
        with partial_checkpoint_on_failure(run, ray_run_dir):
            fitted = fit_workers(train_loop_per_worker, loop_config, datasets, spec,
                                 local, run, ARTIFACT_PATH)
        cost = _cost(cfg, run_id, time.perf_counter() - t0, fitted.metrics,
                     resume.step if resume else 0)
        run.log_metrics({"cost/wall_s": cost.wall_s, "cost/worker_hours": cost.worker_hours})
        # the retrieval artifact travels with the checkpoint: serving needs both
        shutil.copytree(prep.retrieval.folder, local.parent / "retrieval", dirs_exist_ok=True)
        run.log_artifacts(prep.retrieval.folder, "retrieval")
        if publish:  # sweep trials skip it: the sweep logs and registers its winner
            publish_model(cfg, run_id, local, prep.retrieval.folder)
        run.set_tags({"ecglm.stage": "trained", "ecglm.checkpoint": str(local)})
    return TrainResult(run_id, local, fitted.metrics, prep, ray_run_dir, cost)


def publish_model(cfg: ExperimentConfig, run_id: str, checkpoint_dir: Path,
                  retrieval_folder: Path) -> None:
    """End of a training run: log the pyfunc model of ``checkpoint_dir`` as artifact ``model``
    (``tracking.log_model``), then register it as a new version of ``tracking.register_as``
    with alias ``tracking.register_alias`` (when set; the run gets
    ``ecglm.registered_name``/``ecglm.registered_version`` tags)."""
    uri = cfg.tracking.tracking_uri
    if cfg.tracking.log_model or cfg.tracking.register_as:
        log_model(uri, run_id, checkpoint_dir, cfg, retrieval_folder)
    if cfg.tracking.register_as:
        register_run(uri, run_id, cfg.tracking.register_as, cfg.tracking.register_alias,
                     Path(cfg.output_dir) / "downloads")
