"""``build_encoder``: ``encoder.name`` -> encoder module, checkpoint, trainable flag."""

from __future__ import annotations

import warnings
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Mapping, Optional

from ecglm.config.schema import ConfigError, EncoderConfig
from ecglm.models.encoders.base import ECGEncoder, load_encoder_checkpoint
from ecglm.models.encoders.cmelt import CMELTEncoder
from ecglm.models.encoders.dual import DualEncoder
from ecglm.models.encoders.image import ImageEncoder
from ecglm.models.encoders.temporal_conv import TemporalConvEncoder, resolve_out_dim
from ecglm.models.encoders.ts_transformer import TSTransformerEncoder

Builder = Callable[[EncoderConfig, float, Optional[int], str], ECGEncoder]
"""``(cfg, fs, llm_head_dim, cache_dir) -> encoder``."""


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


ENCODERS: Mapping[str, Builder] = MappingProxyType({
    "cmelt": _cmelt,
    "temporal_conv": _temporal_conv,
    "ts_transformer": _ts_transformer,
    "image": _image,
    "dual": _dual,
})
"""Registered encoder builders by ``encoder.name`` (read-only)."""


def build_encoder(cfg: EncoderConfig, *, fs: float = 500.0, llm_head_dim: int | None = None,
                  cache_dir: str | Path = ".cache/models") -> ECGEncoder:
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

    Raises:
        ConfigError: unknown name or a setting the chosen encoder cannot honour.
        CheckpointError: the checkpoint is missing or does not fit.
    """
    builder = ENCODERS.get(cfg.name)
    if builder is None:
        raise ConfigError(f"encoder.name: expected one of {sorted(ENCODERS)}, got {cfg.name!r}")
    encoder = builder(cfg, fs, llm_head_dim, str(cache_dir))
    ts = encoder.time_series
    if cfg.checkpoint:
        load_encoder_checkpoint(encoder, cfg.checkpoint)
    if ts is not None and not cfg.trainable:
        ts.requires_grad_(False)
        if not cfg.checkpoint:
            warnings.warn(f"encoder: the {cfg.name} time-series encoder is frozen at its random "
                          "initialisation (encoder.trainable: false, encoder.checkpoint: null); "
                          "its features carry no learned ECG knowledge. Set encoder.checkpoint "
                          "(e.g. from `ecglm pretrain`) or encoder.trainable: true.", stacklevel=2)
    return encoder
