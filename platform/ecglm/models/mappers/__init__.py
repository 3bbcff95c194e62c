"""Mappers from encoder output to LLM tokens: ``et_mapper`` (Q-HEART), ``linear`` /
``mlpNx_gelu`` (LLaVA), ``gem_projector`` (GEM), ``head_tile`` (MEIT). Build one with
:func:`build_mapper`."""

from ecglm.models.mappers.et_mapper import ETMapper
from ecglm.models.mappers.gem_projector import GEMProjector
from ecglm.models.mappers.head_tile import HeadTile
from ecglm.models.mappers.mlp import TokenMLPMapper, build_mlp, mlp_depth, pool_tokens
from ecglm.models.mappers.registry import build_mapper

__all__ = [
    "ETMapper",
    "GEMProjector",
    "HeadTile",
    "TokenMLPMapper",
    "build_mapper",
    "build_mlp",
    "mlp_depth",
    "pool_tokens",
]
