"""``ecglm tune``: a Ray Tune sweep whose trials are Ray Train runs, each with its own MLflow run.

Search-space keys are the config's dotted keys (``lora.r``, ``train.lr``). Each trial applies its
values as overrides, runs :func:`ecglm.train.run.run_training` with a ``TuneReportCallback`` (Ray
Train V2's way to feed Tune) and is stopped early by ASHA on ``tune.metric``.

Trials log no pyfunc model (it would cost every trial); after the sweep the best trial's run
gets one (``tracking.log_model``; a winner the scheduler stopped before it logged its
checkpoint first gets the latest checkpoint of its Ray Train folder) and, with ``tracking.register_as``, becomes a new registered
version with alias ``tracking.register_alias``; the parent run is tagged with the registered
name and version.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import ray.train
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from ecglm.checkpoint import (ARTIFACT_PATH, RAY_RUN_DIR_TAG, CheckpointFileError,
                              latest_resumable)
from ecglm.config import ConfigError, ExperimentConfig, apply_overrides, flatten
from ecglm.config.search_space import Dimension, parse_search_space
from ecglm.serving.pyfunc import (REGISTERED_NAME_TAG, REGISTERED_VERSION_TAG,
                                  RETRIEVAL_RUN_ARTIFACT, ensure_model, register_run)
from ecglm.tracking import mlflow_run
from ecglm.tracking.registry import ResolvedVersion, has_artifact
from ecglm.tracking.tracked import close_stopped_trial, tracked_run
from ecglm.train.resources import TRIAL_CPUS
from ecglm.train.run import Prepared, prepare, run_training
from ecglm.tuning.space import tune_space

#: Overrides in these sections change shards or the retrieval index: the trial re-prepares.
_PREPARE_SECTIONS = ("data.", "encoder.", "retrieval.", "targets.", "task", "seed")


@dataclass
class SweepResult:
    """Best trial of a sweep."""

    best_overrides: dict[str, Any]
    best_metric: float
    best_mlflow_run_id: str
    parent_run_id: str
    n_trials: int
    table: list[dict[str, Any]]
    """One row per trial: its overrides, metric and MLflow run id."""
    registered: Optional[ResolvedVersion] = None
    """The winner's registered version (``tracking.register_as``), else None."""


def _check_keys(cfg: ExperimentConfig) -> dict[str, Dimension]:
    known = flatten(cfg)
    for key in cfg.tune.trial_overrides:
        if key not in known or key.startswith("tune."):
            raise ConfigError(f"tune.trial_overrides.{key}: unknown or not allowed config key")
    dims = parse_search_space(cfg.tune.search_space, cfg.tune.search)
    for key, dim in dims.items():
        if key not in known or key.startswith("tune."):
            raise ConfigError(f"tune.search_space.{key}: unknown or not allowed config key")
        for v in dim.probe_values():  # every choice (both ends of a range) must be valid
            try:
                apply_overrides(cfg, {key: v})
            except ConfigError as exc:
                raise ConfigError(f"tune.search_space.{key}: value {v!r} ({dim.kind}) gives an "
                                  f"invalid config: {exc}") from exc
    return dims


def _trial(trial_config: dict[str, Any], prep: Prepared, keys: list[str],
           parent_run_id: str) -> None:
    overrides = {k: trial_config[k] for k in keys}
    cfg = apply_overrides(prep.cfg, overrides)
    if any(k.startswith(_PREPARE_SECTIONS) for k in keys):
        prep_t = prepare(cfg)
    else:
        prep_t = Prepared(cfg, prep.shards, prep.retrieval, prep.data)
    name = "trial-" + "-".join(f"{k.split('.')[-1]}={v}" for k, v in overrides.items())
    run_training(cfg, run_name=name, parent_run_id=parent_run_id, tune_report=True,
                 prepared=prep_t, tags={"ecglm.trial": name})


def _trial_rows(grid: Any, keys: list[str], metric: str) -> list[dict[str, Any]]:
    """One row per trial: its overrides, ``metric``, MLflow run id, step and iterations."""
    table = []
    for res in grid:
        m = res.metrics or {}
        table.append({**{k: res.config.get(k) for k in keys}, metric: m.get(metric),
                      "mlflow_run_id": m.get("mlflow_run_id"), "step": m.get("step"),
                      "iterations": m.get("training_iteration"), "early_stopped": False})
    return table


def _close_stopped_trials(tracking_uri: str, table: list[dict[str, Any]]) -> None:
    """Close the MLflow runs of trials the scheduler interrupted as KILLED.

    Trials that raised are in ``grid.errors`` (the sweep fails before this), so a run that is
    not FINISHED here was interrupted by the scheduler: ASHA stops losers at a rung and every
    trial at max_t, possibly while run_training is still finishing up. Its actor is stopped
    inside the ``tracked_run`` block, so the run is still RUNNING or, when the stop surfaced as
    an error inside ``trainer.fit()``, FAILED; both become KILLED with ``ecglm.early_stopped``.
    """
    for row in table:
        if not row["mlflow_run_id"]:
            continue
        if mlflow_run.run_status(tracking_uri, row["mlflow_run_id"]) in ("RUNNING", "FAILED"):
            close_stopped_trial(tracking_uri, row["mlflow_run_id"])
            row["early_stopped"] = True


def run_sweep(cfg: ExperimentConfig) -> SweepResult:
    """Run the sweep described by ``cfg.tune``; log the best trial to a parent MLflow run."""
    dims = _check_keys(cfg)  # trial_overrides never touch tune.*: the space stays the same
    if cfg.tune.trial_overrides:
        cfg = apply_overrides(cfg, cfg.tune.trial_overrides)
    prep = prepare(cfg)
    cfg = prep.cfg
    keys = list(cfg.tune.search_space)
    space = tune_space(dims, cfg.tune.search)
    uri = cfg.tracking.tracking_uri
    with tracked_run(cfg, f"{cfg.name}-sweep", tags={"ecglm.kind": "sweep"}) as parent_run:
        parent = parent_run.run_id
        n_reports = (max(1, cfg.train.max_steps // cfg.train.eval_every)
                     if cfg.train.eval_every else 1)
        scheduler = (
            ASHAScheduler(time_attr="training_iteration", max_t=n_reports,
                          grace_period=min(cfg.tune.grace_period, n_reports), reduction_factor=2)
            if cfg.tune.scheduler == "asha" else FIFOScheduler()
        )
        tuner = tune.Tuner(
            tune.with_resources(
                tune.with_parameters(_trial, prep=prep, keys=keys, parent_run_id=parent),
                {"CPU": TRIAL_CPUS},
            ),
            param_space=space,
            tune_config=tune.TuneConfig(metric=cfg.tune.metric, mode=cfg.tune.mode,
                                        scheduler=scheduler, num_samples=cfg.tune.num_samples,
                                        max_concurrent_trials=cfg.tune.max_concurrent_trials),
            run_config=tune.RunConfig(name=f"{cfg.name}-sweep-{parent[:8]}",
                                      storage_path=cfg.train.storage_path),
        )
        grid = tuner.fit()
        if grid.errors:
            raise RuntimeError(f"{len(grid.errors)} trial(s) failed: {grid.errors[0]}")
        best = grid.get_best_result(metric=cfg.tune.metric, mode=cfg.tune.mode)
        table = _trial_rows(grid, keys, cfg.tune.metric)
        _close_stopped_trials(uri, table)
        best_over = {k: best.config[k] for k in keys}
        best_metric = float(best.metrics[cfg.tune.metric])
        best_run = str(best.metrics.get("mlflow_run_id", ""))
        parent_run.log_metrics({f"best_{cfg.tune.metric}": best_metric})
        parent_run.log_dict({"best": best_over, "best_run_id": best_run, "trials": table},
                            "sweep.json")
        parent_run.set_tags({"ecglm.best_run_id": best_run})
        if best_run and (cfg.tracking.log_model or cfg.tracking.register_as):
            _complete_winner(prep, best_run, best_over)
        registered = _publish_winner(cfg, best_run)
        if registered is not None:
            parent_run.set_tags({REGISTERED_NAME_TAG: registered.name,
                                 REGISTERED_VERSION_TAG: registered.version})
    return SweepResult(best_over, best_metric, best_run, parent, len(table), table, registered)


def _complete_winner(prep: Prepared, run_id: str, overrides: dict[str, Any]) -> None:
    """Give the winner's run its ``checkpoint`` and ``retrieval`` artifacts when the scheduler
    stopped the trial before ``run_training`` logged them (ASHA stops every trial at
    ``max_t``, possibly while it is finishing): the latest checkpoint of its Ray Train folder
    (MLflow tag ``ecglm.ray_run_dir``; the one whose report Tune ranked last) and the trial's
    retrieval folder.

    Raises:
        CheckpointFileError: the run has no checkpoint artifact and its Ray folder none.
    """
    cfg = prep.cfg
    uri = cfg.tracking.tracking_uri
    if not has_artifact(uri, run_id, ARTIFACT_PATH):
        run_dir = mlflow_run.run_tags(uri, run_id).get(RAY_RUN_DIR_TAG)
        found = latest_resumable(run_dir) if run_dir else None
        if found is None:
            raise CheckpointFileError(f"sweep winner {run_id}: no '{ARTIFACT_PATH}' artifact "
                                      f"and no checkpoint in its Ray folder {run_dir}")
        local = Path(cfg.output_dir) / cfg.name / run_id / ARTIFACT_PATH
        ray.train.Checkpoint(found[0]).to_directory(str(local))
        mlflow_run.log_artifacts(uri, run_id, local, ARTIFACT_PATH)
    if not has_artifact(uri, run_id, RETRIEVAL_RUN_ARTIFACT):
        keys = list(overrides)
        prep_w = (prepare(apply_overrides(cfg, overrides))
                  if any(k.startswith(_PREPARE_SECTIONS) for k in keys) else prep)
        mlflow_run.log_artifacts(uri, run_id, prep_w.retrieval.folder, RETRIEVAL_RUN_ARTIFACT)


def _publish_winner(cfg: ExperimentConfig, best_run: str) -> Optional[ResolvedVersion]:
    """Log the pyfunc model of the best trial's run (trials skip it to save time; built from
    the run's ``checkpoint`` and ``retrieval`` artifacts) when ``tracking.log_model`` or
    ``tracking.register_as``, and register it as ``register_as`` with ``register_alias``."""
    uri = cfg.tracking.tracking_uri
    work = Path(cfg.output_dir) / "downloads"
    if not best_run or not (cfg.tracking.log_model or cfg.tracking.register_as):
        return None
    if not cfg.tracking.register_as:
        ensure_model(uri, best_run, work)
        return None
    return register_run(uri, best_run, cfg.tracking.register_as, cfg.tracking.register_alias,
                        work)
