"""The one home of ecglm checkpoints: file names, writer, reader and resolver.

A *training checkpoint* is a folder::

    trainable.safetensors   the trainable tensors only (encoder if trained, mapper, LoRA,
                            trained batch-norm statistics), CPU, keyed by module path
    config.yaml             the experiment config the tensors belong to
    state.json              {"step": int, "metrics": {name: value}, "resume": {...}} at the
                            time of saving (``resume``: world size, strategy, restarts)
    trainer_state.pt        resumable checkpoints: optimizer state (DDP), LR-schedule state and
                            GradScaler state, written by rank 0 (tensors and plain values only,
                            read back with ``torch.load(weights_only=True)``)
    rank_<r>.pt             per rank: RNG states (python, numpy, torch CPU, CUDA) and the data
                            stream position (pass number, batches consumed in that pass)
    deepspeed/<tag>/        DeepSpeed runs: ``engine.save_checkpoint`` of every rank (sharded
                            ZeRO optimizer/parameter states, frozen parameters excluded)

Every rank writes its own files into its own folder and reports it; Ray Train merges the
folders of all ranks into one checkpoint directory in ``train.storage_path`` (its distributed
checkpointing), so the file names never collide.

A *pretraining checkpoint* (``ecglm pretrain``) holds the whole SigLIP model
(``model.safetensors``) and the loss/AUC history (``history.json``).

Checkpoints are referred to by a folder path, by an MLflow run id (its ``checkpoint`` artifact is
downloaded) or by a registered model version, ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``
(the checkpoint inside the version's logged pyfunc model is downloaded).

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

from ecglm.config import ExperimentConfig, dump_yaml
from ecglm.tracking import mlflow_run, registry

TRAINABLE_FILE = "trainable.safetensors"
"""Trainable tensors of a training checkpoint (safetensors)."""
CONFIG_FILE = "config.yaml"
"""The experiment config stored with a training checkpoint."""
STATE_FILE = "state.json"
"""Step and metrics at the time a training checkpoint was saved."""
TRAINER_STATE_FILE = "trainer_state.pt"
"""Optimizer/schedule/scaler state of a resumable training checkpoint (rank 0)."""
DEEPSPEED_DIR = "deepspeed"
"""Sub-folder of DeepSpeed's own sharded checkpoint (every rank)."""
REQUIRED_FILES: tuple[str, ...] = (TRAINABLE_FILE,)
"""Files without which a folder is not a training checkpoint."""
ARTIFACT_PATH = "checkpoint"
"""MLflow artifact folder of a run's best training checkpoint."""

PRETRAIN_MODEL_FILE = "model.safetensors"
"""Full SigLIP state dict of a pretraining checkpoint."""
PRETRAIN_HISTORY_FILE = "history.json"
"""Per-step and per-epoch history of a pretraining checkpoint."""

REGISTRY_SCHEME = registry.REGISTRY_SCHEME


class CheckpointFileError(FileNotFoundError):
    """A checkpoint folder lacks a file it needs (the message names the folder and the file)."""


@dataclass(frozen=True)
class CheckpointState:
    """Contents of ``state.json``: the training step and the metrics reported with it."""

    step: Optional[int] = None
    metrics: dict[str, Any] = field(default_factory=dict)
    resume: dict[str, Any] = field(default_factory=dict)
    """What a resume needs to know: ``world_size``, ``strategy``, ``zero_stage``,
    ``restarts``, ``deepspeed_tag`` (empty for checkpoints that cannot be resumed)."""

    @property
    def resumable(self) -> bool:
        return bool(self.resume)


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
                     step: int, metrics: Mapping[str, Any],
                     resume: Optional[Mapping[str, Any]] = None) -> Path:
    """Write a training checkpoint into ``folder`` (created if needed); returns ``folder``.

    Args:
        trainable: the model's trainable tensors (``trainable_state_dict()``), any device.
        cfg: the experiment config, stored as ``config.yaml``.
        step: optimizer steps done.
        metrics: JSON-serialisable metrics reported with this checkpoint.
        resume: JSON-serialisable resume facts (:attr:`CheckpointState.resume`); the resume
            files themselves are written by :func:`write_trainer_state` and
            :func:`write_rank_state`.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(_cpu_tensors(trainable), str(folder / TRAINABLE_FILE),
              metadata={"format": "pt", "content": "ecglm-trainable"})
    (folder / CONFIG_FILE).write_text(dump_yaml(cfg))
    (folder / STATE_FILE).write_text(json.dumps({"step": step, "metrics": dict(metrics),
                                                 "resume": dict(resume or {})}))
    return folder


def _to_cpu(obj: Any) -> Any:
    """``obj`` with every tensor moved to the CPU (nested dicts, lists and tuples)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu")
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def write_trainer_state(folder: Path, state: Mapping[str, Any]) -> Path:
    """Write ``trainer_state.pt``: ``{"optimizer": ..., "scheduler": ..., "scaler": ...}``
    state dicts (tensors and plain Python values only; tensors moved to the CPU)."""
    path = Path(folder) / TRAINER_STATE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(_to_cpu(dict(state)), str(path))
    return path


def read_trainer_state(folder: Path) -> dict[str, Any]:
    """The state dicts written by :func:`write_trainer_state` (``weights_only=True``).

    Raises:
        CheckpointFileError: ``trainer_state.pt`` is missing.
    """
    return torch.load(str(_require(folder, TRAINER_STATE_FILE)), map_location="cpu",
                      weights_only=True)


def rank_file(rank: int) -> str:
    """File name of rank ``rank``'s RNG and data-position state."""
    return f"rank_{int(rank)}.pt"


def write_rank_state(folder: Path, rank: int, state: Mapping[str, Any]) -> Path:
    """Write ``rank_<rank>.pt`` (tensors and plain Python values only)."""
    path = Path(folder) / rank_file(rank)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(_to_cpu(dict(state)), str(path))
    return path


def read_rank_state(folder: Path, rank: int) -> Optional[dict[str, Any]]:
    """Rank ``rank``'s state written by :func:`write_rank_state`, or None when absent
    (``weights_only=True``)."""
    path = Path(folder) / rank_file(rank)
    if not path.is_file():
        return None
    return torch.load(str(path), map_location="cpu", weights_only=True)


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
    return CheckpointState(data.get("step"), dict(data.get("metrics") or {}),
                           dict(data.get("resume") or {}))


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

def _download_checkpoint(tracking_uri: str, run_id: str, path: str, dst: Path,
                         where: str) -> Path:
    """Download artifact ``path`` of run ``run_id`` into ``dst`` and check it is a checkpoint.

    Raises:
        CheckpointFileError: it is not (the message starts with ``where``).
    """
    local = mlflow_run.download_artifacts(tracking_uri, run_id, path, dst)
    try:
        check_checkpoint(local)
    except CheckpointFileError as exc:
        raise CheckpointFileError(f"{where}: artifact '{path}' is not a checkpoint: "
                                  f"{exc}") from exc
    return local


def _from_registry(cfg: ExperimentConfig, ref: str) -> tuple[Path, Optional[str]]:
    """``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` -> (folder, run id): the version's
    run, then the checkpoint inside its logged model (``<model>/artifacts/checkpoint``), else
    the run's ``checkpoint`` artifact, downloaded under
    ``<output_dir>/downloads/models/<NAME>/<VERSION>``.

    Raises:
        RegistryRefError: malformed reference, unknown model, alias or version (names it and
            lists the aliases/versions that exist).
        CheckpointFileError: the version has no run, or neither artifact is a checkpoint.
    """
    uri = cfg.tracking.tracking_uri
    version = registry.resolve(uri, ref)
    if not version.run_id:
        raise CheckpointFileError(f"{ref}: version {version.version} of {version.name!r} was "
                                  f"registered from {version.source}, not from an MLflow run; "
                                  "pass a checkpoint folder instead")
    dst = Path(cfg.output_dir) / "downloads" / "models" / version.name / version.version
    inner = version.run_artifact_path
    path = f"{inner}/artifacts/{ARTIFACT_PATH}" if inner else ARTIFACT_PATH
    if not registry.has_artifact(uri, version.run_id, path):
        path = ARTIFACT_PATH  # registered from elsewhere: the run's own checkpoint
    local = _download_checkpoint(uri, version.run_id, path, dst,
                                 f"{ref} (version {version.version}, MLflow run "
                                 f"{version.run_id})")
    return local, version.run_id


def _from_run(cfg: ExperimentConfig, run_id: str) -> tuple[Path, Optional[str]]:
    """Download the ``checkpoint`` artifact of MLflow run ``run_id`` under
    ``<output_dir>/downloads/<run_id>``."""
    dst = Path(cfg.output_dir) / "downloads" / run_id
    local = _download_checkpoint(cfg.tracking.tracking_uri, run_id, ARTIFACT_PATH, dst,
                                 f"MLflow run {run_id}")
    return local, run_id


def resolve_checkpoint(cfg: ExperimentConfig, ref: str) -> tuple[Path, Optional[str]]:
    """A local checkpoint folder for ``ref``.

    Args:
        cfg: supplies ``tracking.tracking_uri`` and ``output_dir`` (download location).
        ref: a checkpoint folder, an MLflow run id, ``models:/NAME@ALIAS`` or
            ``models:/NAME/VERSION`` (Model Registry).

    Returns:
        (folder holding ``trainable.safetensors``, MLflow run id or None for a folder)

    Raises:
        CheckpointFileError: the folder (or the run's artifact) lacks a required file, or
            ``ref`` looks like a path but no such folder exists.
        ecglm.tracking.registry.RegistryRefError: a bad or unknown registry reference.
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


# ------------------------------------------------------------------------------------------------
# resume points
# ------------------------------------------------------------------------------------------------

RAY_RUN_DIR_TAG = "ecglm.ray_run_dir"
"""MLflow tag of a training run: the Ray Train run folder (``storage_path/name``) holding its
resumable checkpoints."""

RESUME_CHECKPOINT_TAG = "ecglm.resume_checkpoint"
"""MLflow tag of a resumed training run: the checkpoint it resumed from."""


@dataclass(frozen=True)
class ResumePoint:
    """Where ``ecglm train --resume`` continues from."""

    checkpoint: str
    """Resumable checkpoint folder: a local path or a URI pyarrow reads (workers open it with
    ``ray.train.Checkpoint``)."""
    step: int
    """Optimizer steps done in that checkpoint."""
    run_id: Optional[str]
    """The MLflow run that wrote it (the resumed run logs into it), if known."""


def _fs_and_path(location: str) -> tuple[Any, str]:
    """A pyarrow filesystem and path for a local folder or a URI (``file://``, ``s3://``...)."""
    import pyarrow.fs  # deferred on purpose: only resume resolution lists storage folders

    if "://" in location:
        return pyarrow.fs.FileSystem.from_uri(location)
    return pyarrow.fs.LocalFileSystem(), str(Path(location).resolve())


def _read_state_at(fs: Any, folder: str) -> Optional[CheckpointState]:
    try:
        with fs.open_input_stream(f"{folder}/{STATE_FILE}") as f:
            data = json.loads(f.read().decode("utf-8"))
    except (FileNotFoundError, OSError):
        return None
    return CheckpointState(data.get("step"), dict(data.get("metrics") or {}),
                           dict(data.get("resume") or {}))


def latest_resumable(run_dir: str) -> Optional[tuple[str, CheckpointState]]:
    """The resumable checkpoint with the highest step among the ``checkpoint_*`` folders of a
    Ray Train run folder (local path or URI), or None when there is none."""
    import pyarrow.fs  # deferred on purpose (see _fs_and_path)

    fs, root = _fs_and_path(run_dir)
    infos = fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
    best: Optional[tuple[str, CheckpointState]] = None
    for info in infos:
        if info.type != pyarrow.fs.FileType.Directory or not info.base_name.startswith(
                "checkpoint_"):
            continue
        state = _read_state_at(fs, info.path)
        if state is None or not state.resumable or state.step is None:
            continue
        if best is None or state.step >= (best[1].step or 0):
            best = (info.path, state)
    if best is None:
        return None
    path = best[0] if "://" not in run_dir else run_dir.split("://")[0] + "://" + best[0]
    return path, best[1]


def resolve_resume(cfg: ExperimentConfig, ref: str) -> ResumePoint:
    """The checkpoint ``train.resume_from`` (``ecglm train --resume``) points at.

    Args:
        ref: a resumable checkpoint folder, or the MLflow run id of an earlier training run:
            its latest resumable checkpoint in the Ray Train run folder recorded in the run's
            ``ecglm.ray_run_dir`` tag (under ``train.storage_path``), else its ``checkpoint``
            artifact when that one is resumable.

    Raises:
        CheckpointFileError: no such folder, or no resumable checkpoint for ``ref`` (a folder
            written without resume state, or a run whose Ray folder is gone).
    """
    ref = str(ref)
    path = Path(ref)
    if path.is_dir():
        check_checkpoint(path)
        state = read_state(path)
        if not state.resumable:
            raise CheckpointFileError(f"train.resume_from: checkpoint folder {ref} holds no "
                                      "resume state (written by an older version or by hand)")
        run_id = state.metrics.get("mlflow_run_id") or None
        return ResumePoint(str(path.resolve()), int(state.step or 0), run_id)
    if "/" in ref or path.exists():
        raise CheckpointFileError(f"train.resume_from: folder {ref} not found (pass a "
                                  "checkpoint folder or an MLflow run id)")
    tags = mlflow_run.run_tags(cfg.tracking.tracking_uri, ref)
    run_dir = tags.get(RAY_RUN_DIR_TAG)
    found = latest_resumable(run_dir) if run_dir else None
    if found is not None:
        return ResumePoint(found[0], int(found[1].step or 0), ref)
    earlier = tags.get(RESUME_CHECKPOINT_TAG)  # resumed, then stopped before a new checkpoint
    if earlier:
        state = _read_state_at(*_fs_and_path(earlier))
        if state is not None and state.resumable:
            return ResumePoint(earlier, int(state.step or 0), ref)
    local, _ = _from_run(cfg, ref)
    state = read_state(local)
    if not state.resumable:
        raise CheckpointFileError(
            f"train.resume_from: MLflow run {ref} has no resumable checkpoint (its Ray Train "
            f"folder {run_dir or '(no ' + RAY_RUN_DIR_TAG + ' tag)'} holds none and its "
            f"'{ARTIFACT_PATH}' artifact has no resume state)")
    return ResumePoint(str(local), int(state.step or 0), ref)
