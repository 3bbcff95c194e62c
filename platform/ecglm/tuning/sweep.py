"""``ecglm tune``: a Ray Tune sweep whose trials are Ray Train runs, each with its own MLflow run.

Search-space keys are the config's dotted keys (``lora.r``, ``train.lr``); values are lists or
distributions (:mod:`ecglm.config.search_space`). ``tune.search`` (grid, random, Optuna TPE)
proposes trials and ``tune.scheduler`` (ASHA, FIFO, PBT; :mod:`ecglm.tuning.algorithms`) stops
or perturbs them; every trial is a multi-worker Ray Train run (:mod:`ecglm.tuning.trial`)
ranked on ``tune.metric`` measured on the validation split (:mod:`ecglm.tuning.trial_metric`).

MLflow: the sweep is a parent run (its config as params, ``search_space.json``, the best
config, ``sweep.json`` and the report :mod:`ecglm.tuning.dashboard` writes); each trial is a
nested child run with the same dotted param names and step metrics, tagged with its Tune trial
id. A trial that used its whole budget ends FINISHED, one the scheduler stopped early KILLED
(``ecglm.early_stopped``); the best child is tagged ``ecglm.best_trial``.

Trials log no pyfunc model (it would cost every trial); after the sweep the best trial's run
gets one (``tracking.log_model``; a winner the scheduler stopped before it logged its
checkpoint first gets the latest checkpoint of its Ray Train folder) and, with
``tracking.register_as``, becomes a new registered version with alias
``tracking.register_alias``; the parent run is tagged with the registered name and version.

Interrupting a sweep (Ctrl-C, SIGUSR1) saves Tune's state, closes the running trials' runs
KILLED (``ecglm.interrupted``) and raises :class:`SweepInterrupted`; ``ecglm tune CONFIG
--resume <parent run id | Tune folder>`` continues it (:func:`run_sweep` ``resume``) in the
same parent run: finished trials are not rerun and unfinished ones continue in their own runs.
"""

from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import ray.train
from ray import tune

from ecglm.checkpoint import (ARTIFACT_PATH, RAY_RUN_DIR_TAG, CheckpointFileError,
                              latest_resumable)
from ecglm.config import ConfigError, ExperimentConfig, apply_overrides, flatten
from ecglm.config.search_space import Dimension, parse_search_space
from ecglm.serving.pyfunc import (REGISTERED_NAME_TAG, REGISTERED_VERSION_TAG,
                                  RETRIEVAL_RUN_ARTIFACT, ensure_model, register_run)
from ecglm.tracking import mlflow_run
from ecglm.tracking.registry import ResolvedVersion, has_artifact
from ecglm.tracking.tracked import (FINISHED, Interrupted, close_run, close_stopped_trial,
                                    tracked_run)
from ecglm.train.resources import TRIAL_CPUS
from ecglm.train.run import Prepared, prepare
from ecglm.tuning.algorithms import make_scheduler, make_search, pbt_interval
from ecglm.tuning.choices import trial_overrides
from ecglm.tuning.dashboard import publish_dashboard
from ecglm.tuning.space import tune_space
from ecglm.tuning.trial import PREPARE_SECTIONS, TrialSettings, run_trial
from ecglm.tuning.trial_metric import sweep_metric

SWEEP_PATH_TAG = "ecglm.tune_path"
"""Parent run tag: the Tune experiment folder (what ``--resume`` restores)."""
SWEEP_INFO_FILE = "ecglm_sweep.json"
"""In the Tune experiment folder: ``{"parent_run_id", "search_space"}`` (``--resume FOLDER``)."""
BEST_TRIAL_TAG = "ecglm.best_trial"
INTERRUPTED_TAG = "ecglm.interrupted"
INTERRUPT_ENV = "ECGLM_TEST_INTERRUPT_SWEEP_AFTER"
"""Test hook: after this many trials completed, the sweep interrupts itself (SIGUSR1, the
signal Tune handles like Ctrl-C)."""


class SweepInterrupted(Interrupted):
    """The sweep stopped before every trial finished; the message names the resume command."""


@dataclass
class SweepResult:
    """Best trial of a sweep."""

    best_overrides: dict[str, Any]
    best_metric: float
    best_mlflow_run_id: str
    parent_run_id: str
    n_trials: int
    table: list[dict[str, Any]]
    """One row per trial: its overrides, metric, MLflow run id, step, status."""
    registered: Optional[ResolvedVersion] = None
    """The winner's registered version (``tracking.register_as``), else None."""
    metric: str = ""
    """The Tune result key trials were ranked on (``val/em/overall``, ``val_loss``)."""
    report: str = ""
    """Local path of ``sweep_report.html`` (also an artifact of the parent run)."""


class InterruptAfter(tune.Callback):
    """Test hook (:data:`INTERRUPT_ENV`): interrupt the sweep after N completed trials."""

    def __init__(self) -> None:
        self.completed = 0

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.completed += 1
        limit = os.environ.get(INTERRUPT_ENV)
        if limit and self.completed >= int(limit):
            os.kill(os.getpid(), signal.SIGUSR1)


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


def _trial_rows(grid: Any, keys: tuple[str, ...], metric: str) -> list[dict[str, Any]]:
    """One row per trial: its overrides, ``metric``, MLflow run id, step, iterations, seconds
    (Tune's ``time_total_s``) and ``done`` (the trial finished or its scheduler stopped it;
    False: interrupted)."""
    terminated = _terminated_ids(grid)
    table = []
    for res in grid:
        m = res.metrics or {}
        done = m.get("trial_id") in terminated if terminated is not None else m.get("done")
        table.append({**trial_overrides(res.config, keys), "val_loss": m.get("val_loss"),
                      metric: m.get(metric),
                      "mlflow_run_id": m.get("mlflow_run_id"), "step": m.get("step"),
                      "iterations": m.get("training_iteration"),
                      "time_total_s": m.get("time_total_s"), "done": bool(done),
                      "early_stopped": False, "status": ""})
    return table


def _terminated_ids(grid: Any) -> Optional[set[str]]:
    """Ids of the trials Tune holds as TERMINATED (finished, or stopped by the scheduler),
    from the grid's experiment analysis; None when this Ray version does not expose it (the
    rows then fall back on the last result's ``done`` flag, which a trial restored by
    ``--resume`` may lack)."""
    analysis = getattr(grid, "_experiment_analysis", None)
    trials = getattr(analysis, "trials", None)
    if trials is None:
        return None
    return {t.trial_id for t in trials if t.status == "TERMINATED"}


def _close_trials(tracking_uri: str, table: list[dict[str, Any]], max_steps: int) -> None:
    """Give every trial's run its final status: FINISHED when it trained all ``max_steps``
    steps (ASHA also "stops" a trial at its last report, and a trial stopped at a rung may
    finish before the stop reaches it), else KILLED with ``ecglm.early_stopped`` (the
    scheduler stopped it at a rung).

    A trial stopped by the scheduler dies with its actor inside the ``tracked_run`` block, so
    its run is still RUNNING or, when the stop surfaced as an error inside ``trainer.fit()``,
    FAILED. Trials that raised are in ``grid.errors`` (the sweep fails before this).
    """
    for row in table:
        run_id = row["mlflow_run_id"]
        if not run_id:
            continue
        status = mlflow_run.run_status(tracking_uri, run_id)
        logged = [step for step, _ in mlflow_run.metric_history(tracking_uri, run_id,
                                                                 "val_loss")]
        if max([int(row["step"] or 0), *logged]) >= max_steps:  # its whole budget
            if status != FINISHED:
                close_run(tracking_uri, run_id, FINISHED)
        elif status in ("RUNNING", "FAILED"):
            close_stopped_trial(tracking_uri, run_id)
            row["early_stopped"] = True
        else:
            row["early_stopped"] = status == "KILLED"
        row["status"] = mlflow_run.run_status(tracking_uri, run_id)


def _close_interrupted(tracking_uri: str, parent_run_id: str, done: set[str]) -> int:
    """Close the still-running child runs of an interrupted sweep KILLED (``ecglm.interrupted``;
    a resumed sweep reopens them), except those of the trials in ``done``. Returns how many."""
    n = 0
    for run_id in mlflow_run.search_child_runs(tracking_uri, parent_run_id):
        if run_id not in done and mlflow_run.run_status(tracking_uri, run_id) == "RUNNING":
            close_run(tracking_uri, run_id, "KILLED", {INTERRUPTED_TAG: "true"})
            n += 1
    return n


def _write_info(folder: str, info: dict[str, Any]) -> None:
    """Write :data:`SWEEP_INFO_FILE` into the Tune folder (a local path or a storage URI)."""
    import pyarrow.fs  # deferred: only sweeps need it

    fs, root = pyarrow.fs.FileSystem.from_uri(folder if "://" in folder
                                              else str(Path(folder).resolve()))
    fs.create_dir(root, recursive=True)
    with fs.open_output_stream(f"{root}/{SWEEP_INFO_FILE}") as out:
        out.write(json.dumps(info).encode())


def _read_info(folder: str) -> dict[str, Any]:
    """:data:`SWEEP_INFO_FILE` of a Tune folder (a local path or a storage URI)."""
    import pyarrow.fs  # deferred: only sweeps need it

    fs, root = pyarrow.fs.FileSystem.from_uri(folder if "://" in folder
                                              else str(Path(folder).resolve()))
    with fs.open_input_stream(f"{root}/{SWEEP_INFO_FILE}") as src:
        return dict(json.loads(src.read().decode()))


def expected_trials(cfg: ExperimentConfig, dims: dict[str, Dimension]) -> int:
    """Trials a complete sweep has: ``num_samples`` times the grid's combinations."""
    n = cfg.tune.num_samples
    for dim in dims.values():
        if dim.kind == "grid" or (dim.kind == "choice" and cfg.tune.search == "grid"):
            n *= len(dim.values)
    return n


def resolve_sweep(cfg: ExperimentConfig, ref: str) -> tuple[str, str]:
    """``(parent run id, Tune folder)`` of the sweep ``ref`` names: a parent run id (tag
    :data:`SWEEP_PATH_TAG`) or the Tune folder (:data:`SWEEP_INFO_FILE`).

    Raises:
        ConfigError: ``ref`` names no resumable sweep, or the config's search space differs
            from the one the sweep started with.
    """
    folder = Path(ref)
    if folder.is_dir():
        info_path = folder / SWEEP_INFO_FILE
        if not info_path.exists():
            raise ConfigError(f"--resume {ref}: no {SWEEP_INFO_FILE} in that folder (not an "
                              "ecglm sweep)")
        info = json.loads(info_path.read_text())
        parent, path = str(info["parent_run_id"]), str(folder.resolve())
    else:
        from mlflow.exceptions import MlflowException  # deferred on purpose (see mlflow_run)

        try:
            path = mlflow_run.run_tags(cfg.tracking.tracking_uri, ref).get(SWEEP_PATH_TAG, "")
        except MlflowException as exc:
            raise ConfigError(f"--resume {ref}: neither a folder nor a run of "
                              f"{cfg.tracking.tracking_uri} ({exc})") from exc
        if not path:
            raise ConfigError(f"--resume {ref}: that run is not a sweep (no {SWEEP_PATH_TAG})")
        parent = ref
        info = _read_info(path)
    if not tune.Tuner.can_restore(path):
        raise ConfigError(f"--resume {ref}: {path} holds no Tune experiment state")
    if info.get("search_space") != cfg.tune.search_space:
        raise ConfigError(f"tune.search_space: differs from the one sweep {parent} started with "
                          f"({info.get('search_space')}); resume with the same config")
    return parent, path


def run_sweep(cfg: ExperimentConfig, resume: Optional[str] = None) -> SweepResult:
    """Run the sweep described by ``cfg.tune`` (or continue the interrupted sweep ``resume``
    names); log the trials and the best one to a parent MLflow run.

    Raises:
        SweepInterrupted: stopped (Ctrl-C) before every trial finished.
    """
    dims = _check_keys(cfg)  # trial_overrides never touch tune.*: the space stays the same
    if cfg.tune.trial_overrides:
        cfg = apply_overrides(cfg, cfg.tune.trial_overrides)
    resumed = resolve_sweep(cfg, resume) if resume else None
    prep = prepare(cfg)
    cfg = prep.cfg
    metric = sweep_metric(cfg)
    keys = tuple(cfg.tune.search_space)
    space = tune_space(dims, cfg.tune.search)
    uri = cfg.tracking.tracking_uri
    with tracked_run(cfg, f"{cfg.name}-sweep", tags={"ecglm.kind": "sweep"},
                     run_id=resumed[0] if resumed else None) as parent_run:
        parent = parent_run.run_id
        settings = TrialSettings(keys, parent, metric,
                                 pbt_interval(cfg) if cfg.tune.scheduler == "pbt" else None)
        trainable = tune.with_resources(
            tune.with_parameters(run_trial, prep=prep, settings=settings), {"CPU": TRIAL_CPUS})
        if resumed:
            tuner = tune.Tuner.restore(resumed[1], trainable, resume_unfinished=True,
                                       resume_errored=True, param_space=space)
        else:
            tuner = _new_tuner(cfg, dims, trainable, space, parent_run, metric.name,
                               metric.mode)
        grid = tuner.fit()
        table = _trial_rows(grid, keys, metric.name)
        done = [row for row in table if row["done"]]
        _close_trials(uri, done, cfg.train.max_steps)
        expected = max(len(grid), expected_trials(cfg, dims))
        if len(done) + grid.num_errors < expected:
            killed = _close_interrupted(uri, parent, {row["mlflow_run_id"] for row in done})
            raise SweepInterrupted(
                f"sweep {parent}: {len(done)} of {expected} trials finished, {killed} "
                f"interrupted; continue with: ecglm tune <config> --resume {parent}")
        if grid.errors:
            raise RuntimeError(f"{len(grid.errors)} trial(s) failed: {grid.errors[0]}")
        best = grid.get_best_result(metric=metric.name, mode=metric.mode)
        best_over = trial_overrides(best.config, keys)
        best_metric = float(best.metrics[metric.name])
        best_run = str(best.metrics.get("mlflow_run_id", ""))
        parent_run.log_metrics({f"best_{metric.name}": best_metric})
        parent_run.log_dict({"metric": metric.name, "mode": metric.mode, "best": best_over,
                             "best_run_id": best_run, "trials": table}, "sweep.json")
        parent_run.set_tags({"ecglm.best_run_id": best_run})
        if best_run:
            mlflow_run.set_tags(uri, best_run, {BEST_TRIAL_TAG: "true"})
        report = publish_dashboard(cfg, parent_run, table, metric, best_run, best_over)
        if best_run and (cfg.tracking.log_model or cfg.tracking.register_as):
            _complete_winner(prep, best_run, best_over)
        registered = _publish_winner(cfg, best_run)
        if registered is not None:
            parent_run.set_tags({REGISTERED_NAME_TAG: registered.name,
                                 REGISTERED_VERSION_TAG: registered.version})
    return SweepResult(best_over, best_metric, best_run, parent, len(table), table, registered,
                       metric.name, str(report))


def _new_tuner(cfg: ExperimentConfig, dims: dict[str, Dimension], trainable: Any,
               space: dict[str, Any], parent_run: Any, metric: str, mode: str) -> tune.Tuner:
    """A fresh ``Tuner``; its folder gets :data:`SWEEP_INFO_FILE` and the parent run the
    search space and :data:`SWEEP_PATH_TAG`."""
    parent = parent_run.run_id
    name = f"{cfg.name}-sweep-{parent[:8]}"
    path = f"{str(cfg.train.storage_path).rstrip('/')}/{name}"
    _write_info(path, {"parent_run_id": parent, "search_space": cfg.tune.search_space})
    parent_run.set_tags({SWEEP_PATH_TAG: path})
    parent_run.log_dict({"search_space": cfg.tune.search_space, "search": cfg.tune.search,
                         "scheduler": cfg.tune.scheduler, "metric": metric, "mode": mode,
                         "num_samples": cfg.tune.num_samples,
                         "trial_overrides": cfg.tune.trial_overrides}, "search_space.json")
    return tune.Tuner(
        trainable, param_space=space,
        tune_config=tune.TuneConfig(metric=metric, mode=mode,
                                    search_alg=make_search(cfg, metric, mode),
                                    scheduler=make_scheduler(cfg, dims),
                                    num_samples=cfg.tune.num_samples,
                                    max_concurrent_trials=cfg.tune.max_concurrent_trials),
        run_config=tune.RunConfig(name=name, storage_path=cfg.train.storage_path,
                                  callbacks=[InterruptAfter()]))


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
                  if any(k.startswith(PREPARE_SECTIONS) for k in keys) else prep)
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
