"""The one home of ecglm checkpoints: file names, writer, reader and resolver.

A *training checkpoint* is a folder::

    trainable.safetensors   the trainable tensors only (encoder if trained, mapper, LoRA,
                            trained batch-norm statistics), CPU, keyed by module path
    config.yaml             the experiment config the tensors belong to
    state.json              {"step": int, "metrics": {name: value}} at the time of saving

A *pretraining checkpoint* (``ecglm pretrain``) holds the whole SigLIP model
(``model.safetensors``) and the loss/AUC history (``history.json``).

Checkpoints are referred to by a folder path, by an MLflow run id (its ``checkpoint`` artifact is
downloaded) or, once the model registry lands, by ``models:/NAME@ALIAS``.

Low level on purpose: imports only config and tracking (never models/, train/ or evaluation/);
building a model from a checkpoint lives in :mod:`ecglm.models.from_checkpoint`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
import yaml
from safetensors.torch import load_file, save_file

from ecglm.config import ConfigError, ExperimentConfig, dump_yaml
from ecglm.tracking import mlflow_run

TRAINABLE_FILE = "trainable.safetensors"
"""Trainable tensors of a training checkpoint (safetensors)."""
CONFIG_FILE = "config.yaml"
"""The experiment config stored with a training checkpoint."""
STATE_FILE = "state.json"
"""Step and metrics at the time a training checkpoint was saved."""
REQUIRED_FILES: tuple[str, ...] = (TRAINABLE_FILE,)
"""Files without which a folder is not a training checkpoint."""
ARTIFACT_PATH = "checkpoint"
"""MLflow artifact folder of a run's best training checkpoint."""

PRETRAIN_MODEL_FILE = "model.safetensors"
"""Full SigLIP state dict of a pretraining checkpoint."""
PRETRAIN_HISTORY_FILE = "history.json"
"""Per-step and per-epoch history of a pretraining checkpoint."""

REGISTRY_SCHEME = "models:/"


class CheckpointFileError(FileNotFoundError):
    """A checkpoint folder lacks a file it needs (the message names the folder and the file)."""


@dataclass(frozen=True)
class CheckpointState:
    """Contents of ``state.json``: the training step and the metrics reported with it."""

    step: Optional[int] = None
    metrics: dict[str, Any] = field(default_factory=dict)


def _require(folder: Path, name: str) -> Path:
    path = Path(folder) / name
    if not path.is_file():
        raise CheckpointFileError(f"checkpoint folder {folder}: missing {name} "
                                  "(not an ecglm checkpoint, or an incomplete copy)")
    return path


def _cpu_tensors(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU copies (safetensors refuses shared or strided storage)."""
    return {k: v.detach().to("cpu").contiguous() for k, v in state.items()}


# ------------------------------------------------------------------------------------------------
# training checkpoints
# ------------------------------------------------------------------------------------------------

def write_checkpoint(folder: Path, trainable: Mapping[str, torch.Tensor], cfg: ExperimentConfig,
                     step: int, metrics: Mapping[str, Any]) -> Path:
    """Write a training checkpoint into ``folder`` (created if needed); returns ``folder``.

    Args:
        trainable: the model's trainable tensors (``trainable_state_dict()``), any device.
        cfg: the experiment config, stored as ``config.yaml``.
        step: optimizer steps done.
        metrics: JSON-serialisable metrics reported with this checkpoint.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(_cpu_tensors(trainable), str(folder / TRAINABLE_FILE),
              metadata={"format": "pt", "content": "ecglm-trainable"})
    (folder / CONFIG_FILE).write_text(dump_yaml(cfg))
    (folder / STATE_FILE).write_text(json.dumps({"step": step, "metrics": dict(metrics)}))
    return folder


def check_checkpoint(folder: Path) -> Path:
    """``folder`` if it holds every file of :data:`REQUIRED_FILES`.

    Raises:
        CheckpointFileError: a required file is missing (names the folder and the file).
    """
    for name in REQUIRED_FILES:
        _require(folder, name)
    return Path(folder)


def read_trainable(folder: Path) -> dict[str, torch.Tensor]:
    """The trainable tensors (CPU) of the training checkpoint in ``folder``.

    Raises:
        CheckpointFileError: ``trainable.safetensors`` is missing.
    """
    return load_file(str(_require(folder, TRAINABLE_FILE)))


def read_config(folder: Path) -> dict[str, Any]:
    """The nested experiment config (plain dict) stored with the checkpoint in ``folder``.

    Raises:
        CheckpointFileError: ``config.yaml`` is missing.
    """
    return yaml.safe_load(_require(folder, CONFIG_FILE).read_text())


def read_state(folder: Path) -> CheckpointState:
    """Step and metrics of the checkpoint in ``folder`` (empty when ``state.json`` is absent:
    folders written by hand or by older versions)."""
    path = Path(folder) / STATE_FILE
    if not path.is_file():
        return CheckpointState()
    data = json.loads(path.read_text())
    return CheckpointState(data.get("step"), dict(data.get("metrics") or {}))


# ------------------------------------------------------------------------------------------------
# pretraining checkpoints
# ------------------------------------------------------------------------------------------------

def write_pretrain_checkpoint(folder: Path, state: Mapping[str, torch.Tensor],
                              history: Mapping[str, Any]) -> Path:
    """Write a pretraining checkpoint: the full SigLIP ``state`` dict and its ``history``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(_cpu_tensors(state), str(folder / PRETRAIN_MODEL_FILE))
    (folder / PRETRAIN_HISTORY_FILE).write_text(json.dumps(history))
    return folder


def read_pretrain_checkpoint(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state dict, history)`` of the pretraining checkpoint in ``folder``.

    Raises:
        CheckpointFileError: ``model.safetensors`` or ``history.json`` is missing.
    """
    state = load_file(str(_require(folder, PRETRAIN_MODEL_FILE)))
    history = json.loads(_require(folder, PRETRAIN_HISTORY_FILE).read_text())
    return state, history


# ------------------------------------------------------------------------------------------------
# resolver
# ------------------------------------------------------------------------------------------------

def _from_registry(cfg: ExperimentConfig, ref: str) -> tuple[Path, Optional[str]]:
    """``models:/NAME@ALIAS`` -> (folder, run id): the model registry is not wired in yet."""
    raise ConfigError(f"checkpoint: registry URI {ref!r} is not yet supported (the MLflow "
                      "model registry comes later); pass a checkpoint folder or an MLflow run id")


def _from_run(cfg: ExperimentConfig, run_id: str) -> tuple[Path, Optional[str]]:
    """Download the ``checkpoint`` artifact of MLflow run ``run_id`` under
    ``<output_dir>/downloads/<run_id>``."""
    dst = Path(cfg.output_dir) / "downloads" / run_id
    local = mlflow_run.download_artifacts(cfg.tracking.tracking_uri, run_id, ARTIFACT_PATH, dst)
    try:
        check_checkpoint(local)
    except CheckpointFileError as exc:
        raise CheckpointFileError(f"MLflow run {run_id}: artifact '{ARTIFACT_PATH}' is not a "
                                  f"checkpoint: {exc}") from exc
    return local, run_id


def resolve_checkpoint(cfg: ExperimentConfig, ref: str) -> tuple[Path, Optional[str]]:
    """A local checkpoint folder for ``ref``.

    Args:
        cfg: supplies ``tracking.tracking_uri`` and ``output_dir`` (download location).
        ref: a checkpoint folder, an MLflow run id, or ``models:/NAME@ALIAS`` (not yet).

    Returns:
        (folder holding ``trainable.safetensors``, MLflow run id or None for a folder)

    Raises:
        CheckpointFileError: the folder (or the run's artifact) lacks a required file, or
            ``ref`` looks like a path but no such folder exists.
        ConfigError: ``ref`` is a registry URI.
    """
    ref = str(ref)
    if ref.startswith(REGISTRY_SCHEME):
        return _from_registry(cfg, ref)
    path = Path(ref)
    if path.is_dir():
        return check_checkpoint(path), None
    if "/" in ref or path.exists():
        raise CheckpointFileError(f"checkpoint: folder {ref} not found (pass a checkpoint "
                                  "folder or an MLflow run id)")
    return _from_run(cfg, ref)
