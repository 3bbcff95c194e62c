"""Evaluation inside a Ray worker, never in the driver.

The driver of ``ecglm train``/``eval``/``demo`` may be a laptop or a cluster's head node
without a GPU, so everything that uses a model (loading the checkpoint, generation, encoder
embeddings of the optional sections, BERTScore, a local judge) runs in one Ray task with
:func:`eval_resources`: ``evaluation.num_cpus`` CPUs (default ``train.cpus_per_worker``) and
``evaluation.num_gpus`` GPUs (default 1 with ``train.use_gpu``, else 0). The model goes to the
task's GPU when Ray assigned it one.

The task reads the run's rows, retrieval artifact and checkpoint folder by their absolute
paths (:func:`ecglm.config.paths.resolve_paths`), so on a cluster ``data.shard_dir``,
``llm.cache_dir`` and ``output_dir`` must be on storage every node mounts at the same path.
It returns the :class:`~ecglm.evaluation.writer.EvalOutcome` (metrics, tables, figures,
report) to the driver, which writes the files and logs them to MLflow exactly where it did
before (:func:`ecglm.recipes.common.evaluate_prepared`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import ray
import torch

from ecglm.checkpoint import read_state
from ecglm.config import ExperimentConfig
from ecglm.evaluation.resources import default_cache_root
from ecglm.evaluation.sections import SectionInputs, build_sections
from ecglm.evaluation.writer import EvalOutcome, EvalSection, render_figures
from ecglm.models.from_checkpoint import load_model
from ecglm.tasks.base import EvalContext
from ecglm.train.run import Prepared, split_rows
from ecglm.utils.ray_env import set_process_env


@dataclass(frozen=True)
class EvalPlacement:
    """Where the evaluation ran (reported back to the driver and printed in the CLI JSON)."""

    pid: int
    """Process id of the Ray worker."""
    node_id: str
    """Ray node id of the worker's node (hex)."""
    device: str
    """Torch device of the model: ``cpu`` or ``cuda`` (the GPU Ray assigned)."""
    gpu_ids: tuple[str, ...]
    """GPU ids Ray assigned to the task (empty on CPU)."""
    num_cpus: float
    num_gpus: float
    model_loaded: bool
    """Whether the task built the model (False when nothing needed it)."""


@dataclass
class WorkerEvaluation:
    """What the evaluation task returns to the driver."""

    outcome: EvalOutcome
    """The task's outcome, figures already rendered to PNG bytes."""
    sections: list[EvalSection]
    checkpoint_step: Optional[int]
    placement: EvalPlacement


def eval_resources(cfg: ExperimentConfig) -> dict[str, float]:
    """``{"num_cpus", "num_gpus"}`` of the evaluation task (see the module docstring)."""
    ev = cfg.evaluation
    cpus = ev.num_cpus if ev.num_cpus is not None else cfg.train.cpus_per_worker
    gpus = ev.num_gpus if ev.num_gpus is not None else (1.0 if cfg.train.use_gpu else 0.0)
    return {"num_cpus": float(cpus), "num_gpus": float(gpus)}


def _device() -> torch.device:
    """The GPU Ray assigned to this task (Ray narrows ``CUDA_VISIBLE_DEVICES`` to it), else
    the CPU."""
    if ray.get_gpu_ids() and torch.cuda.is_available():
        return torch.device("cuda", 0)
    return torch.device("cpu")


def evaluate_in_worker(prep: Prepared, checkpoint_dir: str, run_id: Optional[str],
                       resources: dict[str, float]) -> WorkerEvaluation:
    """Body of the evaluation task: build the sections and run the task's evaluation with the
    checkpoint's model on this worker's device.

    Raises:
        FileNotFoundError: the checkpoint folder is not visible on this node (names the node
            and the setting to fix).
    """
    set_process_env()
    cfg = prep.cfg
    node_id = ray.get_runtime_context().get_node_id()
    ckpt = Path(checkpoint_dir)
    if not ckpt.is_dir():
        raise FileNotFoundError(
            f"checkpoint folder {ckpt} is not visible on Ray node {node_id}: on a cluster, "
            "output_dir must be on storage every node mounts at the same path")
    torch.set_num_threads(max(1, int(resources["num_cpus"])))
    device = _device()
    cache: dict[str, Any] = {}

    def model() -> Any:
        if "model" not in cache:
            cache["model"] = load_model(cfg, ckpt).to(device)
        return cache["model"]

    sections = build_sections(SectionInputs(
        cfg, Path(prep.shards.records), str(prep.shards.manifest.get("source", "")),
        prep.retrieval.neighbours, Path(prep.retrieval.folder),
        lambda: model().encoder.eval()))
    step = read_state(ckpt).step
    # rows are read in batches as the task iterates them; the baselines' training rows
    # without their signals (they fit on answers and labels only)
    train_rows = split_rows(prep, "train", signals=False) if cfg.evaluation.baselines else []
    ctx = EvalContext(cfg, split_rows(prep, cfg.evaluation.split), train_rows,
                      prep.retrieval.neighbour_ids, model, sections, str(ckpt), step, run_id)
    outcome = prep.task.evaluate(ctx)
    placement = EvalPlacement(os.getpid(), node_id, device.type,
                              tuple(str(g) for g in ray.get_gpu_ids()),
                              resources["num_cpus"], resources["num_gpus"], "model" in cache)
    return WorkerEvaluation(render_figures(outcome), sections, step, placement)


_evaluate_task = ray.remote(max_retries=0)(evaluate_in_worker)


def run_in_worker(prep: Prepared, checkpoint_dir: Path, run_id: Optional[str]
                  ) -> WorkerEvaluation:
    """Run :func:`evaluate_in_worker` as a Ray task with :func:`eval_resources` and wait for
    it. Ray must be running. The metric resources cache (``$ECGLM_CACHE``, WordNet) is the
    driver's, passed on as an absolute path.

    Raises:
        The task's own exception (a config, file or checkpoint error keeps its type; the
        worker's traceback is chained).
    """
    resources = eval_resources(prep.cfg)
    task = _evaluate_task.options(
        num_cpus=resources["num_cpus"], num_gpus=resources["num_gpus"],
        runtime_env={"env_vars": {"ECGLM_CACHE": str(default_cache_root())}})
    try:
        return ray.get(task.remote(prep, str(checkpoint_dir), run_id, resources))
    except ray.exceptions.RayTaskError as err:
        cause = err.cause
        if isinstance(cause, Exception):
            raise cause from err
        raise
