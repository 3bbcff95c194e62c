"""``build_fusion``: ``fusion.name`` -> :class:`~ecglm.models.fusion.base.Fusion` object."""

from __future__ import annotations

from types import MappingProxyType
from typing import Callable, Mapping

from ecglm.config.schema import ConfigError, FusionConfig
from ecglm.models.fusion.base import Fusion
from ecglm.models.fusion.input_prefix import InputPrefixFusion
from ecglm.models.fusion.kv_prefix import KVPrefixFusion

FUSIONS: Mapping[str, Callable[[FusionConfig], Fusion]] = MappingProxyType({
    "input_prefix": lambda cfg: InputPrefixFusion(cfg.position, cfg.placeholder),
    "kv_prefix": lambda cfg: KVPrefixFusion(),
})
"""Registered fusions by ``fusion.name`` (read-only)."""


def build_fusion(cfg: FusionConfig) -> Fusion:
    """The fusion object for the ``fusion`` config section.

    Raises:
        ConfigError: unknown ``fusion.name``.
    """
    factory = FUSIONS.get(cfg.name)
    if factory is None:
        raise ConfigError(f"fusion.name: expected one of {sorted(FUSIONS)}, got {cfg.name!r}")
    return factory(cfg)
