"""Encoder config sections (``encoder.*``), each with the overrides ``--tiny`` gives it.

Every section class declares ``TINY``: dotted overrides relative to the section (``"d_model":
32`` in :class:`EncoderConfig` is ``encoder.d_model``), next to the fields they shrink.
:func:`encoder_tiny_overrides` collects them by walking :class:`EncoderConfig`'s fields, so a
new encoder section brings its tiny sizes with it and ``config/tiny.py`` keeps no per-encoder
table. The models-side registration (:mod:`ecglm.models.encoders.registry`) names which of these
sections each encoder reads.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Mapping, Optional

from ecglm.config.checks import require as _require


@dataclass
class TemporalConvConfig:
    """MEIT's ECG encoder (``encoder.name: temporal_conv``): 1-D conv blocks
    (``Conv1d -> BatchNorm1d -> ReLU -> AvgPool1d``) over ``(B, 12, T)``, global average over
    time, then ``Linear -> BatchNorm1d -> ReLU -> Linear -> BatchNorm1d`` to ``out_dim``."""

    TINY: ClassVar[Mapping[str, Any]] = {"channels": [8, 16], "kernel": 5, "proj_hidden": 32}
    """``--tiny`` overrides of this section (keys relative to it)."""

    channels: list[int] = field(default_factory=lambda: [64, 128, 256, 512])
    """Output channels of each conv block."""
    kernel: int = 7
    """Conv kernel size (samples), same padding."""
    pool: int = 2
    """Average-pooling factor after each block."""
    proj_hidden: int = 2048
    """Hidden width of the 2-layer projection (MEIT: 2048)."""
    out_dim: Optional[int] = None
    """Output width; ``null``: the LLM's attention head dimension (``hidden / n_heads``)."""

    def __post_init__(self) -> None:
        _require(len(self.channels) > 0 and all(c > 0 for c in self.channels),
                 "encoder.temporal_conv.channels", "must be a non-empty list of positive ints")
        _require(self.kernel > 0, "encoder.temporal_conv.kernel", "must be > 0")
        _require(self.pool >= 1, "encoder.temporal_conv.pool", "must be >= 1")
        _require(self.proj_hidden > 0, "encoder.temporal_conv.proj_hidden", "must be > 0")
        _require(self.out_dim is None or self.out_dim > 0, "encoder.temporal_conv.out_dim",
                 "must be > 0 or null")


@dataclass
class TSTransformerConfig:
    """GEM's time-series encoder (``ts_transformer``, ECG-CoCa-style): non-overlapping patches
    of ``patch_size`` samples x 12 leads, linearly embedded, learned positions, a transformer
    of ``encoder.n_layers`` x ``encoder.n_heads`` at width ``encoder.d_model``; returns every
    patch token."""

    TINY: ClassVar[Mapping[str, Any]] = {"patch_size": 25, "max_patches": 64}
    """``--tiny`` overrides of this section (keys relative to it)."""

    patch_size: int = 50
    """Samples per patch (50 = 100 ms at 500 Hz)."""
    max_patches: int = 512
    """Size of the learned position table (``T / patch_size`` must not exceed it)."""

    def __post_init__(self) -> None:
        _require(self.patch_size > 0, "encoder.ts_transformer.patch_size", "must be > 0")
        _require(self.max_patches > 0, "encoder.ts_transformer.max_patches", "must be > 0")


@dataclass
class TinyVisionConfig:
    """Shape of the tiny random CLIP vision tower (``encoder.image.source: tiny``)."""

    hidden_size: int = 32
    n_layers: int = 2
    n_heads: int = 2
    intermediate_size: int = 64
    patch_size: int = 16


@dataclass
class ImageEncoderConfig:
    """Hugging Face vision tower over the rendered 12-lead paper-style image (``image``,
    ``dual``)."""

    TINY: ClassVar[Mapping[str, Any]] = {"source": "tiny", "image_size": 64}
    """``--tiny`` overrides of this section (keys relative to it)."""

    source: Literal["path", "tiny"] = "path"
    """``path``: a CLIP-style vision model folder or hub id in ``path`` (frozen);
    ``tiny``: a tiny random CLIP vision tower written once under ``llm.cache_dir``."""
    path: Optional[str] = "openai/clip-vit-large-patch14-336"
    """Folder or id of the vision tower (GEM/LLaVA: CLIP ViT-L/14 at 336 px)."""
    tiny: TinyVisionConfig = field(default_factory=TinyVisionConfig)
    image_size: int = 336
    """Square side of the rendered image, pixels (must match the tower's input size)."""
    feature_layer: int = -2
    """Hidden-state layer whose patch tokens are used (LLaVA: the penultimate, -2)."""
    drop_cls: bool = True
    """Drop the CLS token and keep the patch tokens only."""
    trainable: bool = False
    """GEM keeps the image encoder frozen."""

    def __post_init__(self) -> None:
        _require(self.source != "path" or bool(self.path), "encoder.image.path",
                 "required when encoder.image.source is 'path'")
        _require(self.image_size >= 64, "encoder.image.image_size",
                 "must be >= 64 (the 12-lead renderer's smallest image)")


EncoderName = Literal["cmelt", "temporal_conv", "ts_transformer", "image", "dual"]


@dataclass
class EncoderConfig:
    """ECG encoder. ``name`` picks the architecture:

    * ``cmelt`` (Q-HEART): strided conv feature extractor (GELU + GroupNorm), sinusoidal
      positions, ``n_layers`` transformer layers of width ``d_model``;
    * ``temporal_conv`` (MEIT): see :class:`TemporalConvConfig`;
    * ``ts_transformer`` (GEM time series): see :class:`TSTransformerConfig` (uses ``d_model``,
      ``n_layers``, ``n_heads``, ``dropout``);
    * ``image``: a vision tower over the rendered 12-lead image (:class:`ImageEncoderConfig`);
    * ``dual`` (GEM): ``ts_transformer`` + ``image``.

    ``trainable``/``checkpoint``/``lead_mask_prob`` apply to the ECG (time-series) part.
    """

    TINY: ClassVar[Mapping[str, Any]] = {
        "d_model": 32, "n_layers": 1, "n_heads": 2, "conv_channels": [16, 32],
        "conv_kernels": [10, 5], "conv_strides": [5, 5], "dropout": 0.0, "checkpoint": None}
    """``--tiny`` overrides of this section (keys relative to it)."""

    name: EncoderName = "cmelt"
    d_model: int = 768
    """Token width of the encoder (cmelt, ts_transformer)."""
    n_layers: int = 12
    n_heads: int = 12
    conv_channels: list[int] = field(default_factory=lambda: [256, 256, 256, 256])
    """cmelt: output channels of each conv block; the last is projected to ``d_model``."""
    conv_kernels: list[int] = field(default_factory=lambda: [10, 5, 5, 3])
    conv_strides: list[int] = field(default_factory=lambda: [5, 4, 4, 2])
    dropout: float = 0.1
    lead_mask_prob: float = 0.0
    """Training-time probability of zeroing each lead (C-MELT augmentation)."""
    trainable: bool = True
    """Fine-tune the encoder with the rest (Q-HEART) or freeze it (GEM)."""
    checkpoint: Optional[str] = None
    """Path to pretrained encoder weights (safetensors, e.g. from ``ecglm pretrain``),
    ``null`` for random init."""
    temporal_conv: TemporalConvConfig = field(default_factory=TemporalConvConfig)
    ts_transformer: TSTransformerConfig = field(default_factory=TSTransformerConfig)
    image: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)

    def __post_init__(self) -> None:
        _require(self.d_model > 0, "encoder.d_model", "must be > 0")
        _require(self.n_layers >= 0, "encoder.n_layers", "must be >= 0")
        _require(self.n_heads > 0 and self.d_model % self.n_heads == 0, "encoder.n_heads",
                 f"must divide encoder.d_model={self.d_model}")
        _require(len(self.conv_channels) > 0, "encoder.conv_channels", "must not be empty")
        _require(len(self.conv_kernels) == len(self.conv_channels), "encoder.conv_kernels",
                 "must have as many entries as encoder.conv_channels")
        _require(len(self.conv_strides) == len(self.conv_channels), "encoder.conv_strides",
                 "must have as many entries as encoder.conv_channels")
        _require(0.0 <= self.dropout < 1.0, "encoder.dropout", "must be in [0, 1)")
        _require(0.0 <= self.lead_mask_prob < 1.0, "encoder.lead_mask_prob", "must be in [0, 1)")


def encoder_tiny_overrides() -> dict[str, Any]:
    """Dotted ``encoder.*`` overrides of ``--tiny``: :attr:`EncoderConfig.TINY` plus the
    ``TINY`` of every sub-section class, found through :class:`EncoderConfig`'s fields (every
    encoder's sections shrink, selected or not, so a tiny config does not depend on the
    encoder chosen)."""
    out = {f"encoder.{k}": v for k, v in EncoderConfig.TINY.items()}
    defaults = EncoderConfig()
    for f in dataclasses.fields(EncoderConfig):
        section = getattr(defaults, f.name)
        tiny = getattr(type(section), "TINY", None) if dataclasses.is_dataclass(section) else None
        for key, value in (tiny or {}).items():
            out[f"encoder.{f.name}.{key}"] = value
    return out


def encoder_sections() -> tuple[str, ...]:
    """Names of the sub-sections of ``encoder`` (``temporal_conv``, ``ts_transformer``,
    ``image``, ...): the fields of :class:`EncoderConfig` that are config classes."""
    defaults = EncoderConfig()
    return tuple(f.name for f in dataclasses.fields(EncoderConfig)
                 if dataclasses.is_dataclass(getattr(defaults, f.name)))
