"""Parameter counting helpers shared by the encoder registrations and ``models/params.py``.

Full-size presets name hub vision towers that are not available offline; their parameters are
counted on PyTorch's ``meta`` device from the architecture hyper-parameters of the public
``config.json`` (:data:`VISION_REFERENCE_CONFIGS`), nothing downloaded or allocated.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable

import torch
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel

from ecglm.config.schema import ImageEncoderConfig, TinyVisionConfig

VISION_REFERENCE_CONFIGS: dict[str, dict[str, Any]] = {
    "openai/clip-vit-large-patch14-336": dict(
        model_type="clip_vision_model", hidden_size=1024, intermediate_size=4096,
        num_hidden_layers=24, num_attention_heads=16, patch_size=14, image_size=336),
}
"""Architecture hyper-parameters of the vision towers the presets name (public
``config.json``); used only to count parameters on the meta device."""


def count(module: nn.Module | None,
          predicate: Callable[[str], bool] | None = None) -> tuple[int, int]:
    """``(total, trainable)`` parameters of ``module`` whose names pass ``predicate``."""
    if module is None:
        return 0, 0
    params = [(n, p) for n, p in module.named_parameters() if predicate is None or predicate(n)]
    return (sum(p.numel() for _, p in params),
            sum(p.numel() for _, p in params if p.requires_grad))


def meta_tower_counts(image: ImageEncoderConfig) -> tuple[int, int]:
    """``(total, trainable)`` of the full-size tower ``image.path`` built on the meta device
    (frozen unless ``image.trainable``).

    Raises:
        KeyError: ``image.path`` is not in :data:`VISION_REFERENCE_CONFIGS`.
    """
    ref = {k: v for k, v in VISION_REFERENCE_CONFIGS[str(image.path)].items()
           if k != "model_type"}
    with torch.device("meta"):
        tower = CLIPVisionModel(CLIPVisionConfig(**ref))
    tower.requires_grad_(image.trainable)
    return count(tower)


def stand_in_image(image: ImageEncoderConfig) -> ImageEncoderConfig:
    """A tiny one-layer tower of the full-size tower's width, patch and image size: builds
    the rest of the encoder (and sizes the mapper) for real without the big weights."""
    ref = VISION_REFERENCE_CONFIGS[str(image.path)]
    return replace(image, source="tiny", image_size=ref["image_size"], tiny=TinyVisionConfig(
        hidden_size=ref["hidden_size"], n_layers=1, n_heads=ref["num_attention_heads"],
        intermediate_size=8, patch_size=ref["patch_size"]))
