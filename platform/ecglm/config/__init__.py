"""Typed experiment configuration: schema, YAML loading, dotted overrides."""

from ecglm.config.loader import (
    apply_overrides,
    config_hash,
    dump_yaml,
    flatten,
    from_dict,
    load_config,
    parse_cli_overrides,
    to_dict,
)
from ecglm.config.schema import ConfigError, ExperimentConfig

__all__ = [
    "ConfigError",
    "ExperimentConfig",
    "apply_overrides",
    "config_hash",
    "dump_yaml",
    "flatten",
    "from_dict",
    "load_config",
    "parse_cli_overrides",
    "to_dict",
]
