"""Image encoder (``encoder.name: image``; also the image stream of ``dual``).

Each ``(12, T)`` ECG in mV is rendered as a paper-style 12-lead printout
(:func:`ecglm.render.render_12lead`, numpy, no gradient) of ``image_size x image_size`` pixels,
scaled to ``[0, 1]``, normalised with the tower's image mean/std and run through a Hugging Face
vision tower (CLIP, or SigLIP). The features are the patch tokens of hidden-state layer
``encoder.image.feature_layer`` (LLaVA: the penultimate), without the CLS token when
``drop_cls``.

Towers:

* ``source: path`` -- ``from_pretrained(encoder.image.path)`` (a CLIP/SigLIP vision or full
  model folder, or a hub id already in the local HF cache); mean/std from the folder's
  ``preprocessor_config.json`` when it has one, else CLIP's defaults.
* ``source: tiny`` -- a tiny random :class:`~transformers.CLIPVisionModel` (sizes from
  ``encoder.image.tiny``) written once, seeded, under ``<cache_dir>/tiny-clip-vision-<hash>``
  and then loaded with ``from_pretrained``, like any real tower.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from transformers import (
    AutoConfig,
    CLIPVisionConfig,
    CLIPVisionModel,
    PreTrainedModel,
    SiglipVisionModel,
)

from ecglm.config.loader import config_hash
from ecglm.config.schema import ConfigError, ImageEncoderConfig
from ecglm.features.validation import SignalError
from ecglm.models.encoders.base import ECGEncoder, EncoderOutput, ModelInputError, check_ecg_input
from ecglm.render.image import render_12lead
from ecglm.utils.cache_dirs import write_once

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
"""OpenAI CLIP's RGB pixel mean (used when the tower folder has no preprocessor config)."""
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
"""OpenAI CLIP's RGB pixel standard deviation."""

TINY_FORMAT_VERSION = 1
"""Bump when the tiny tower recipe changes (changes the folder name)."""
TINY_INIT_SEED = 0
"""Seed of the tiny tower's random initialisation (same config -> same weights)."""
MARKER_FILE = "ecglm_tower.json"
"""Written last into a finished tiny tower folder (provenance)."""
MIN_RENDER_PX = 64
"""Smallest image side the renderer accepts."""

_CLIP_TYPES = ("clip", "clip_vision_model")
_SIGLIP_TYPES = ("siglip", "siglip_vision_model")


# --------------------------------------------------------------------------------------------
# tower folders
# --------------------------------------------------------------------------------------------

def tiny_tower_dir(image: ImageEncoderConfig, cache_dir: str | Path) -> Path:
    """``<cache_dir>/tiny-clip-vision-<hash>``; the hash covers the tiny sizes, the image size
    and :data:`TINY_FORMAT_VERSION`."""
    key = {"tiny": asdict(image.tiny), "image_size": image.image_size,
           "version": TINY_FORMAT_VERSION}
    return Path(cache_dir) / f"tiny-clip-vision-{config_hash(key)}"


def _tiny_vision_config(image: ImageEncoderConfig) -> CLIPVisionConfig:
    tiny = image.tiny
    if tiny.hidden_size % tiny.n_heads != 0:
        raise ConfigError(f"encoder.image.tiny.n_heads: must divide encoder.image.tiny."
                          f"hidden_size={tiny.hidden_size}, got {tiny.n_heads}")
    if image.image_size % tiny.patch_size != 0:
        raise ConfigError(f"encoder.image.tiny.patch_size: must divide encoder.image."
                          f"image_size={image.image_size}, got {tiny.patch_size}")
    return CLIPVisionConfig(
        hidden_size=tiny.hidden_size, intermediate_size=tiny.intermediate_size,
        num_hidden_layers=tiny.n_layers, num_attention_heads=tiny.n_heads,
        patch_size=tiny.patch_size, image_size=image.image_size)


def write_tiny_tower(image: ImageEncoderConfig, cache_dir: str | Path) -> Path:
    """Write the tiny random CLIP vision tower once and return its folder.

    The model is built under a fixed seed in a temporary folder next to the target and renamed
    into place (another process winning the race is fine); an existing finished folder is
    reused untouched.

    Raises:
        ConfigError: the tiny sizes do not fit together (heads, patch size).
    """
    target = tiny_tower_dir(image, cache_dir)
    config = _tiny_vision_config(image)

    def build(tmp: Path) -> dict:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(TINY_INIT_SEED)
            model = CLIPVisionModel(config)
        model.save_pretrained(str(tmp))
        return {"source": "tiny", "tiny": asdict(image.tiny), "image_size": image.image_size,
                "version": TINY_FORMAT_VERSION, "seed": TINY_INIT_SEED}

    return write_once(target, build, marker=MARKER_FILE, required=("config.json",))


def tower_source(image: ImageEncoderConfig, cache_dir: str | Path) -> str:
    """Folder (or hub id) to load the tower from, writing the tiny tower when needed."""
    if image.source == "tiny":
        return str(write_tiny_tower(image, cache_dir))
    if not image.path:
        raise ConfigError("encoder.image.path: required when encoder.image.source is 'path'")
    return image.path


def pixel_stats(source: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` per RGB channel from ``<source>/preprocessor_config.json`` when that file
    exists (``image_mean``/``image_std``), else CLIP's defaults."""
    file = Path(source) / "preprocessor_config.json"
    if not file.is_file():
        return CLIP_MEAN, CLIP_STD
    data = json.loads(file.read_text())
    mean, std = data.get("image_mean", CLIP_MEAN), data.get("image_std", CLIP_STD)
    if len(mean) != 3 or len(std) != 3:
        raise ConfigError(f"encoder.image.path: {file} image_mean/image_std must have 3 values")
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def load_vision_tower(source: str) -> tuple[PreTrainedModel, bool]:
    """Load a CLIP or SigLIP vision tower; returns ``(model, has_cls_token)``.

    Raises:
        ConfigError: the folder/id cannot be read or is not a CLIP/SigLIP model.
    """
    try:
        model_type = AutoConfig.from_pretrained(source).model_type
        if model_type in _CLIP_TYPES:
            return CLIPVisionModel.from_pretrained(source), True
        if model_type in _SIGLIP_TYPES:
            return SiglipVisionModel.from_pretrained(source), False
    except OSError as exc:
        raise ConfigError(f"encoder.image.path: cannot load a vision tower from {source!r}: "
                          f"{exc}") from exc
    raise ConfigError(f"encoder.image.path: expected a CLIP or SigLIP model, {source!r} has "
                      f"model_type={model_type!r}")


# --------------------------------------------------------------------------------------------
# encoder
# --------------------------------------------------------------------------------------------

def render_batch(x: Tensor, fs: float, size: int) -> Tensor:
    """Render ``x: (B, 12, T)`` mV at ``fs`` Hz into ``(B, 3, size, size)`` float32 in ``[0, 1]``
    (CPU, no gradient).

    Raises:
        ModelInputError: an ECG cannot be rendered (non-finite values, bad ``fs``).
    """
    signals = x.detach().float().cpu().numpy()
    images = []
    for i, sig in enumerate(signals):
        try:
            images.append(render_12lead(sig, fs, size=size))
        except SignalError as exc:
            raise ModelInputError(f"encoder input x: ECG {i} cannot be rendered: {exc}") from exc
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)  # (B, 3, H, W) uint8
    return pixels.float() / 255.0


class ImageEncoder(ECGEncoder):
    """Vision tower over rendered 12-lead images.

    Args:
        image: ``encoder.image`` section.
        fs: sampling rate of the input ECGs in Hz (for the renderer's time axis).
        cache_dir: where the tiny tower is written (``source: tiny``).

    ``forward(x)`` takes ``x: (B, 12, T)`` float mV and returns ``tokens (B, N, D_img)``
    (patch tokens of ``feature_layer``; ``N = (image_size / patch)^2`` plus 1 without
    ``drop_cls``) and ``pooled (B, D_img)`` (their mean); ``out_dim = D_img`` is the tower's
    hidden size. The tower is frozen (and run without autograd) unless ``image.trainable``;
    rendering never carries gradients. ``encoder.lead_mask_prob`` does not apply here.

    Raises:
        ConfigError: image size below 64 px or different from the tower's input size,
            ``feature_layer`` out of range, unreadable tower.
    """

    def __init__(self, image: ImageEncoderConfig, fs: float = 500.0,
                 cache_dir: str | Path = ".cache/models") -> None:
        super().__init__(0.0)
        if image.image_size < MIN_RENDER_PX:
            raise ConfigError(f"encoder.image.image_size: the ECG renderer needs >= "
                              f"{MIN_RENDER_PX} px, got {image.image_size}")
        if fs <= 0:
            raise ConfigError(f"data.fs: must be > 0 Hz for the ECG renderer, got {fs}")
        self.image_cfg = image
        self.fs = float(fs)
        source = tower_source(image, cache_dir)
        self.tower, self.has_cls = load_vision_tower(source)
        tower_size = int(self.tower.config.image_size)
        if tower_size != image.image_size:
            raise ConfigError(f"encoder.image.image_size: the tower {source!r} expects "
                              f"{tower_size} px images, got {image.image_size}")
        n_states = int(self.tower.config.num_hidden_layers) + 1
        if not -n_states <= image.feature_layer < n_states:
            raise ConfigError(f"encoder.image.feature_layer: must index one of the tower's "
                              f"{n_states} hidden states, got {image.feature_layer}")
        mean, std = pixel_stats(source)
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.tower.requires_grad_(image.trainable)

    @property
    def out_dim(self) -> int:
        """Width of the image tokens (the tower's hidden size)."""
        return int(self.tower.config.hidden_size)

    @property
    def time_series(self) -> nn.Module | None:
        """An image-only encoder has no time-series weights."""
        return None

    def pixels(self, x: Tensor) -> Tensor:
        """``x: (B, 12, T)`` mV -> normalised ``(B, 3, S, S)`` pixels on the tower's device."""
        with torch.no_grad():
            pix = render_batch(x, self.fs, self.image_cfg.image_size)
            pix = pix.to(self.pixel_mean.device)
            pix = (pix - self.pixel_mean) / self.pixel_std
        return pix.to(self.tower.dtype)

    def forward(self, x: Tensor) -> EncoderOutput:
        """Encode ``x: (B, 12, T)`` mV into ``tokens (B, N, D_img)`` and ``pooled (B, D_img)``."""
        check_ecg_input(x)
        pix = self.pixels(x)
        grad = torch.is_grad_enabled() and self.image_cfg.trainable
        with torch.set_grad_enabled(grad):
            out = self.tower(pixel_values=pix, output_hidden_states=True)
            hidden = out.hidden_states[self.image_cfg.feature_layer]  # (B, 1? + N, D_img)
        tokens = hidden[:, 1:] if (self.has_cls and self.image_cfg.drop_cls) else hidden
        return EncoderOutput(pooled=tokens.mean(dim=1), tokens=tokens)
