"""Load an :class:`ExperimentConfig` from YAML plus dotted ``key=value`` overrides.

The dotted-key machinery (:func:`from_dict`, :func:`flatten`, :func:`apply_overrides`, ...)
lives in :mod:`ecglm.config.overrides` and is re-exported here; ``--tiny`` sizes come from
:mod:`ecglm.config.tiny`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import yaml

from ecglm.config.overrides import (
    apply_overrides,
    build_section,
    config_hash,
    flatten,
    from_dict,
    parse_cli_overrides,
    set_dotted,
    to_dict,
)
from ecglm.config.schema import ConfigError, ExperimentConfig
from ecglm.config.tiny import shrink
from ecglm.config.yaml_text import load_yaml

__all__ = ["apply_overrides", "build_section", "config_hash", "dump_yaml", "flatten",
           "from_dict", "load_config", "parse_cli_overrides", "set_dotted", "to_dict"]


def load_config(path: str | Path, overrides: Iterable[str] = (), tiny: bool = False
                ) -> ExperimentConfig:
    """Load YAML at ``path``, shrink it with :func:`ecglm.config.tiny.shrink` when ``tiny``, then
    apply ``key=value`` overrides (so overrides win over the tiny sizes).

    Raises:
        ConfigError: unknown key, wrong type or bad value; the message names the dotted key.
        FileNotFoundError: ``path`` does not exist.
    """
    text = Path(path).read_text()
    raw = load_yaml(text) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"<root>: {path} must hold a mapping, got {type(raw).__name__}")
    cfg = from_dict(raw)
    if tiny:
        cfg = shrink(cfg)
    ov = parse_cli_overrides(overrides)
    return apply_overrides(cfg, ov) if ov else cfg


def dump_yaml(cfg: ExperimentConfig) -> str:
    """YAML text of the full resolved config."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
