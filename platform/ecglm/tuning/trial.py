"""One Ray Tune trial of ``ecglm tune``: a multi-worker Ray Train run and its MLflow child run.

A trial applies its sampled values (:func:`trial_overrides`) as config overrides and trains
with :func:`ecglm.train.run.run_training`; its metrics reach Tune through
:class:`~ecglm.tuning.trial_metric.ValidationReportCallback` (the validation metric of every
evaluated checkpoint).

Each trial owns exactly one MLflow run, found again by the tag :data:`TRIAL_ID_TAG` (the Tune
trial id) whenever the trial function starts over: after ``ecglm tune --resume`` (the run is
reopened and training continues from the latest checkpoint of its Ray Train folder, so no run
is duplicated and no step is redone) and after a PBT exploit.

PBT (``tune.scheduler: pbt``) runs a trial in segments of ``tune.perturbation_interval``
steps, each an exact resume of the previous one (``train.resume_from`` + ``stop_at_step``).
After a segment the trial reports the metric with a small Tune checkpoint that points at the
resumable training checkpoint (:data:`POINTER_FILE`); when PBT makes a weak trial copy a strong
one, the weak trial restarts from the strong one's pointer with the strong one's config and a
perturbed ``train.lr`` (:func:`ecglm.train.worker.set_base_lr` applies it after the restore).
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from ray import tune

from ecglm.checkpoint import (CheckpointFileError, ResumePoint, latest_resumable, read_state,
                              resolve_resume)
from ecglm.config import ExperimentConfig, apply_overrides
from ecglm.tracking import mlflow_run
from ecglm.tuning.choices import trial_overrides
from ecglm.train.run import Prepared, prepare, run_training
from ecglm.tuning.trial_metric import (SweepMetric, ValidationReportCallback,
                                       evaluate_checkpoint, validation_prep)

TRIAL_ID_TAG = "ecglm.tune_trial_id"
"""MLflow tag of a trial's run: the Tune trial id (one run per trial, across restarts)."""
TRIAL_TAG = "ecglm.trial"
"""MLflow tag of a trial's run: its name (``trial-r=8-lr=0.0003``)."""
POINTER_FILE = "training_checkpoint.json"
"""File of a PBT trial's Tune checkpoint: ``{"checkpoint", "step", "run_id"}``."""
PREPARE_SECTIONS = ("data.", "encoder.", "retrieval.", "targets.", "task", "seed")
"""Overrides in these sections change shards or the retrieval index: the trial re-prepares."""
@dataclass(frozen=True)
class TrialSettings:
    """What every trial of a sweep shares (passed with ``tune.with_parameters``)."""

    keys: tuple[str, ...]
    """The swept dotted keys."""
    parent_run_id: str
    metric: SweepMetric
    pbt_interval: Optional[int] = None
    """Steps per PBT segment; None: not PBT (one Train run per trial)."""


def trial_name(overrides: Mapping[str, Any]) -> str:
    """``trial-r=8-lr=0.0003``: the last part of each key and its value (floats 4 digits)."""
    def fmt(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else (
            "+".join(map(str, v)) if isinstance(v, list) else str(v))

    return "trial-" + "-".join(f"{k.split('.')[-1]}={fmt(v)}" for k, v in overrides.items())


def find_trial_run(tracking_uri: str, parent_run_id: str, trial_id: str) -> Optional[str]:
    """The MLflow run of Tune trial ``trial_id`` under ``parent_run_id``, if it has one."""
    found = mlflow_run.search_child_runs(tracking_uri, parent_run_id,
                                         {TRIAL_ID_TAG: trial_id})
    return found[0] if found else None


def _continue_from(cfg: ExperimentConfig, run_id: Optional[str]) -> Optional[ResumePoint]:
    """Where the earlier attempt of a trial (its MLflow run ``run_id``) got to: its latest
    resumable checkpoint, as ``ecglm train --resume <run id>`` finds it
    (:func:`ecglm.checkpoint.resolve_resume`); None when there is no run or it stopped before
    its first checkpoint (the trial starts over in the same run)."""
    from mlflow.exceptions import MlflowException  # deferred on purpose (see mlflow_run)

    if not run_id:
        return None
    try:
        return resolve_resume(cfg, run_id)
    except (CheckpointFileError, MlflowException, OSError):
        return None


def _prepared(prep: Prepared, cfg: ExperimentConfig, keys: tuple[str, ...]) -> Prepared:
    """The trial's :class:`Prepared`: the sweep's, unless an override changes the data."""
    if any(k.startswith(PREPARE_SECTIONS) for k in keys):
        return prepare(cfg)
    return Prepared(cfg, prep.shards, prep.retrieval, prep.data)


def run_trial(trial_config: dict[str, Any], prep: Prepared, settings: TrialSettings) -> None:
    """Tune's function trainable (see the module docstring)."""
    overrides = trial_overrides(trial_config, settings.keys)
    cfg = apply_overrides(prep.cfg, overrides)
    prep_t = _prepared(prep, cfg, settings.keys)
    uri = cfg.tracking.tracking_uri
    trial_id = tune.get_context().get_trial_id()
    name = trial_name(overrides)
    tags = {TRIAL_TAG: name, TRIAL_ID_TAG: trial_id}
    run_id = find_trial_run(uri, settings.parent_run_id, trial_id)
    if settings.pbt_interval is not None:
        _run_segments(prep_t, settings, name, tags, run_id)
        return
    earlier = _continue_from(cfg, run_id)
    if earlier is not None:
        prep_t = Prepared(apply_overrides(cfg, {"train.resume_from": earlier.checkpoint}),
                          prep_t.shards, prep_t.retrieval, prep_t.data)
    valid = validation_prep(prep_t)
    run_training(prep_t.cfg, run_name=name, parent_run_id=settings.parent_run_id, tags=tags,
                 prepared=prep_t, run_id=run_id,
                 report_callback=ValidationReportCallback(valid, settings.metric))


def _read_pointer() -> Optional[dict[str, Any]]:
    """The training checkpoint PBT handed this trial (its own or a better trial's), or None."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        return json.loads((Path(folder) / POINTER_FILE).read_text())


def _run_segments(prep: Prepared, settings: TrialSettings, name: str, tags: dict[str, str],
                  run_id: Optional[str]) -> None:
    """A PBT trial: train ``settings.pbt_interval`` steps at a time, report the metric and a
    pointer checkpoint after each segment (see the module docstring)."""
    cfg = prep.cfg
    pointer = _read_pointer()
    earlier = None if pointer else _continue_from(cfg, run_id)
    start_from = pointer["checkpoint"] if pointer else (earlier.checkpoint if earlier else None)
    step = int(pointer["step"]) if pointer else (earlier.step if earlier else 0)
    interval = int(settings.pbt_interval or cfg.train.max_steps)
    if pointer is not None and step >= cfg.train.max_steps:
        # PBT made this trial copy one that had already finished: nothing left to train,
        # its result is the copied checkpoint's
        val_loss = float(read_state(Path(start_from)).metrics.get("val_loss", math.nan))
        _report_segment(prep, settings, start_from, step, run_id, val_loss)
        return
    while step < cfg.train.max_steps:
        stop = min(step + interval, cfg.train.max_steps)
        seg_cfg = (apply_overrides(cfg, {"train.resume_from": start_from}) if start_from
                   else cfg)
        seg_prep = Prepared(seg_cfg, prep.shards, prep.retrieval, prep.data)
        res = run_training(seg_cfg, run_name=name, parent_run_id=settings.parent_run_id,
                           tags=tags, prepared=seg_prep, run_id=run_id, stop_at_step=stop,
                           publish=False)
        run_id = res.run_id
        found = latest_resumable(res.ray_run_dir)
        if found is None:
            raise RuntimeError(f"PBT trial {name}: no resumable checkpoint in {res.ray_run_dir}")
        start_from, step = found[0], int(found[1].step or stop)
        _report_segment(prep, settings, start_from, step, run_id,
                        float(res.metrics.get("val_loss", math.nan)))


def _report_segment(prep: Prepared, settings: TrialSettings, checkpoint: str, step: int,
                    run_id: Optional[str], val_loss: float) -> None:
    """Evaluate ``checkpoint`` (the sweep metric, logged to ``run_id`` at ``step``) and
    report it to Tune with a pointer checkpoint (:data:`POINTER_FILE`)."""
    metrics: dict[str, Any] = {"step": step, "mlflow_run_id": run_id or "",
                               "val_loss": val_loss}
    metric = settings.metric
    if metric.eval_key is not None:
        metrics[metric.name] = evaluate_checkpoint(validation_prep(prep), checkpoint, metric,
                                                   run_id, step)
    with tempfile.TemporaryDirectory(prefix="ecglm-pbt-") as folder:
        (Path(folder) / POINTER_FILE).write_text(json.dumps(
            {"checkpoint": checkpoint, "step": step, "run_id": run_id}))
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

