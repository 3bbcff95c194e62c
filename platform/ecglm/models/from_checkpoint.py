"""Build the ECG-language model and load a training checkpoint into it."""

from __future__ import annotations

from pathlib import Path

import torch

from ecglm.checkpoint import read_trainable
from ecglm.config import ExperimentConfig
from ecglm.models.ecg_lm import ECGLanguageModel, build_ecg_lm


def load_model(cfg: ExperimentConfig, checkpoint_dir: Path) -> ECGLanguageModel:
    """The model of ``cfg`` (seeded by ``cfg.seed``) with the trainable tensors of the
    checkpoint in ``checkpoint_dir``, in eval mode.

    Raises:
        ecglm.checkpoint.CheckpointFileError: the folder lacks ``trainable.safetensors``.
        ecglm.models.encoders.CheckpointError: the tensors do not fit this config's model.
    """
    torch.manual_seed(cfg.seed)
    model = build_ecg_lm(cfg)
    model.load_trainable_state_dict(read_trainable(Path(checkpoint_dir)))
    return model.eval()
