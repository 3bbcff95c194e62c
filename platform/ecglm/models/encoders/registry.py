"""Encoder registrations: one :class:`EncoderSpec` per ``encoder.name``.

A spec carries everything the rest of the package needs to know about an encoder: its builder,
the ``encoder.*`` config sections it reads (which also decide the retrieval cache key), their
config classes and ``--tiny`` overrides (declared on the classes in
:mod:`ecglm.config.encoders`, which ``config/tiny.py`` collects without importing models), and
how to count its parameters at full size. Adding an encoder: its module, its config section
(when it has one), one entry in :data:`ENCODERS`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping, Optional

from ecglm.config.schema import ConfigError, EncoderConfig
from ecglm.models.encoders.base import ECGEncoder, load_encoder_checkpoint
from ecglm.models.encoders.cmelt import CMELTEncoder
from ecglm.models.encoders.dual import DualEncoder
from ecglm.models.encoders.image import ImageEncoder
from ecglm.models.encoders.sizing import count, meta_tower_counts, stand_in_image
from ecglm.models.encoders.temporal_conv import TemporalConvEncoder, resolve_out_dim
from ecglm.models.encoders.ts_transformer import TSTransformerEncoder

Builder = Callable[[EncoderConfig, float, Optional[int], str], ECGEncoder]
"""``(cfg, fs, llm_head_dim, cache_dir) -> encoder``."""
FullSize = Callable[[EncoderConfig, float, Optional[int], str],
                    tuple[ECGEncoder, tuple[int, int]]]
"""``(cfg, fs, llm_head_dim, cache_dir) -> (encoder to size the mapper with, (total,
trainable) parameters of the full-size encoder)``."""


@dataclass(frozen=True)
class EncoderSpec:
    """One registered encoder.

    Attributes:
        name: its ``encoder.name``.
        build: the builder (see :data:`Builder`); :func:`build_encoder` adds checkpoint
            loading and freezing.
        sections: the ``encoder.<section>`` sub-configs it reads (the others cannot change
            its output; the retrieval cache key drops them).
        full_size: counts a full-size encoder (default: build it for real and count);
            encoders with a hub vision tower count the tower on the meta device.
    """

    name: str
    build: Builder
    sections: tuple[str, ...] = ()
    full_size: Optional[FullSize] = None

    @property
    def config_classes(self) -> tuple[type, ...]:
        """:class:`EncoderConfig` (shared fields) and the classes of :attr:`sections`."""
        defaults = EncoderConfig()
        return (EncoderConfig, *(type(getattr(defaults, s)) for s in self.sections))

    @property
    def tiny(self) -> dict[str, Any]:
        """Dotted ``--tiny`` overrides of the fields it reads (from the config classes'
        ``TINY``)."""
        out = {f"encoder.{k}": v for k, v in EncoderConfig.TINY.items()}
        for section, cls in zip(self.sections, self.config_classes[1:]):
            out.update({f"encoder.{section}.{k}": v for k, v in getattr(cls, "TINY", {}).items()})
        return out

    def count_full_size(self, cfg: EncoderConfig, fs: float, llm_head_dim: int | None,
                        cache_dir: str) -> tuple[ECGEncoder, tuple[int, int]]:
        """``(encoder, (total, trainable))`` at full size (see :attr:`full_size`)."""
        if self.full_size is not None:
            return self.full_size(cfg, fs, llm_head_dim, cache_dir)
        encoder = build_encoder(cfg, fs=fs, llm_head_dim=llm_head_dim, cache_dir=cache_dir)
        return encoder, count(encoder)


def _cmelt(cfg: EncoderConfig, fs: float, head_dim: int | None, cache: str) -> ECGEncoder:
    return CMELTEncoder(cfg)


def _temporal_conv(cfg: EncoderConfig, fs: float, head_dim: int | None,
                   cache: str) -> ECGEncoder:
    return TemporalConvEncoder(cfg.temporal_conv, resolve_out_dim(cfg.temporal_conv, head_dim),
                               cfg.lead_mask_prob)


def _ts_transformer(cfg: EncoderConfig, fs: float, head_dim: int | None,
                    cache: str) -> ECGEncoder:
    return TSTransformerEncoder(cfg)


def _image(cfg: EncoderConfig, fs: float, head_dim: int | None, cache: str) -> ECGEncoder:
    if cfg.checkpoint:
        raise ConfigError("encoder.checkpoint: the 'image' encoder has no time-series part to "
                          "load weights into; set it to null (or use encoder.name: dual)")
    return ImageEncoder(cfg.image, fs=fs, cache_dir=cache)


def _dual(cfg: EncoderConfig, fs: float, head_dim: int | None, cache: str) -> ECGEncoder:
    return DualEncoder(cfg, fs=fs, cache_dir=cache)


def _with_hub_tower(cfg: EncoderConfig, fs: float, head_dim: int | None,
                    cache: str) -> tuple[ECGEncoder, tuple[int, int]]:
    """image/dual at full size: the hub tower counted on the meta device, the rest built for
    real around a tiny stand-in tower of the same width (its weights swapped for the count)."""
    tower_counts = meta_tower_counts(cfg.image)
    encoder = build_encoder(replace(cfg, image=stand_in_image(cfg.image)), fs=fs,
                            llm_head_dim=head_dim, cache_dir=cache)
    stand_in = getattr(encoder, "image", None) or getattr(encoder, "tower", None)
    total, trainable = count(encoder)
    small = count(stand_in)
    return encoder, (total - small[0] + tower_counts[0], trainable - small[1] + tower_counts[1])


ENCODERS: Mapping[str, EncoderSpec] = MappingProxyType({
    "cmelt": EncoderSpec("cmelt", _cmelt),
    "temporal_conv": EncoderSpec("temporal_conv", _temporal_conv, ("temporal_conv",)),
    "ts_transformer": EncoderSpec("ts_transformer", _ts_transformer, ("ts_transformer",)),
    "image": EncoderSpec("image", _image, ("image",), _with_hub_tower),
    "dual": EncoderSpec("dual", _dual, ("ts_transformer", "image"), _with_hub_tower),
})
"""Registered encoders by ``encoder.name`` (read-only)."""


def encoder_spec(name: str) -> EncoderSpec:
    """The registration of ``encoder.name``.

    Raises:
        ConfigError: unknown name.
    """
    spec = ENCODERS.get(name)
    if spec is None:
        raise ConfigError(f"encoder.name: expected one of {sorted(ENCODERS)}, got {name!r}")
    return spec


def build_encoder(cfg: EncoderConfig, *, fs: float = 500.0, llm_head_dim: int | None = None,
                  cache_dir: str | Path = ".cache/models", pretrained: bool = True
                  ) -> ECGEncoder:
    """Build the encoder named by ``cfg.name``.

    Loads ``cfg.checkpoint`` (strict) into the time-series part when set, and freezes that part
    when not ``cfg.trainable`` (with a ``UserWarning`` when it is frozen without a checkpoint:
    random features). An image tower is frozen unless ``cfg.image.trainable``.

    Args:
        cfg: encoder section.
        fs: sampling rate of the ECGs in Hz (``image``/``dual`` render with it).
        llm_head_dim: the LLM's attention head dimension (``temporal_conv`` output width
            when ``encoder.temporal_conv.out_dim`` is null).
        cache_dir: cache folder for the tiny image tower (``llm.cache_dir``).
        pretrained: load ``cfg.checkpoint``; False when the caller loads saved weights into
            the encoder itself (no checkpoint read, no random-features warning).

    Raises:
        ConfigError: unknown name or a setting the chosen encoder cannot honour.
        CheckpointError: the checkpoint is missing or does not fit.
    """
    encoder = encoder_spec(cfg.name).build(cfg, fs, llm_head_dim, str(cache_dir))
    ts = encoder.time_series
    if cfg.checkpoint and pretrained:
        load_encoder_checkpoint(encoder, cfg.checkpoint)
    if ts is not None and not cfg.trainable:
        ts.requires_grad_(False)
        if not cfg.checkpoint and pretrained:
            warnings.warn(f"encoder: the {cfg.name} time-series encoder is frozen at its random "
                          "initialisation (encoder.trainable: false, encoder.checkpoint: null); "
                          "its features carry no learned ECG knowledge. Set encoder.checkpoint "
                          "(e.g. from `ecglm pretrain`) or encoder.trainable: true.", stacklevel=2)
    return encoder
