"""``build_mapper``: ``mapper.name`` -> mapper module sized for the encoder and the LLM."""

from __future__ import annotations

from torch import nn

from ecglm.config.schema import ConfigError, MapperConfig
from ecglm.models.encoders.base import ECGEncoder
from ecglm.models.mappers.et_mapper import ETMapper
from ecglm.models.mappers.gem_projector import GEMProjector
from ecglm.models.mappers.head_tile import HeadTile
from ecglm.models.mappers.mlp import TokenMLPMapper, mlp_depth


def _encoder_widths(encoder: ECGEncoder) -> tuple[int, int | None]:
    """``(out_dim, image_dim)`` of an encoder built by ``build_encoder``."""
    if isinstance(encoder, ECGEncoder):
        return encoder.out_dim, encoder.image_dim
    raise ConfigError(f"mapper: expected an ECG encoder built by build_encoder, got "
                      f"{type(encoder).__name__}")


def build_mapper(cfg: MapperConfig, encoder: ECGEncoder, d_llm: int, *,
                 llm_n_heads: int | None = None) -> nn.Module:
    """Build the mapper named by ``cfg.name``; ``forward(enc) -> (B, n, d_llm)``.

    Args:
        cfg: mapper section.
        encoder: the built encoder (its ``out_dim`` and ``image_dim`` size the mapper).
        d_llm: LLM hidden size.
        llm_n_heads: the LLM's attention heads (``head_tile`` only).

    Raises:
        ConfigError: unknown name, or widths the mapper cannot work with (``head_tile``:
            ``out_dim * llm_n_heads != d_llm``; ``gem_projector``: no image stream).
    """
    in_dim, image_dim = _encoder_widths(encoder)
    name = cfg.name
    if name == "et_mapper":
        return ETMapper(cfg, in_dim, d_llm)
    if name == "head_tile":
        return HeadTile(in_dim, llm_n_heads, d_llm)
    if name == "gem_projector":
        if image_dim is None:
            raise ConfigError("mapper.name: gem_projector needs an encoder with image tokens "
                              "(encoder.name: dual)")
        return GEMProjector(cfg, in_dim, image_dim, d_llm)
    mlp_depth(name)  # raises ConfigError naming mapper.name for anything else
    return TokenMLPMapper(cfg, in_dim, d_llm)
