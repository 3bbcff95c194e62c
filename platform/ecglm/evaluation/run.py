"""Checkpoint loading for evaluation and serving: resolve a folder or MLflow run id, build the
model and load its trainable parts."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import yaml

from ecglm.config import ExperimentConfig
from ecglm.tracking import mlflow_run
from ecglm.train.loop import STATE_FILE, TRAINABLE_FILE


def resolve_checkpoint(cfg: ExperimentConfig, checkpoint: str) -> tuple[Path, Optional[str]]:
    """A checkpoint folder, from a path or an MLflow run id (its ``checkpoint`` artifact).

    Returns:
        (folder holding ``trainable.safetensors``, MLflow run id or None)
    """
    path = Path(checkpoint)
    if path.is_dir():
        if not (path / TRAINABLE_FILE).exists():
            raise FileNotFoundError(f"{path}: no {TRAINABLE_FILE} (not an ecglm checkpoint)")
        return path, None
    dst = Path(cfg.output_dir) / "downloads" / checkpoint
    local = mlflow_run.download_artifacts(cfg.tracking.tracking_uri, checkpoint, "checkpoint", dst)
    if not (local / TRAINABLE_FILE).exists():
        raise FileNotFoundError(f"MLflow run {checkpoint}: artifact 'checkpoint' has no "
                                f"{TRAINABLE_FILE}")
    return local, checkpoint


def load_model(cfg: ExperimentConfig, checkpoint_dir: Path) -> Any:
    """Build the model from ``cfg`` and load the trainable parts saved in ``checkpoint_dir``."""
    import torch

    from ecglm.models.ecg_lm import build_ecg_lm

    torch.manual_seed(cfg.seed)
    model = build_ecg_lm(cfg)
    model.load_trainable(checkpoint_dir / TRAINABLE_FILE)
    return model.eval()


def config_from_checkpoint(checkpoint_dir: Path) -> dict[str, Any]:
    """The nested config stored next to a checkpoint (``config.yaml``)."""
    return yaml.safe_load((checkpoint_dir / "config.yaml").read_text())
