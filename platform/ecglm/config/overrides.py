"""Dotted keys over the typed config: build/validate from mappings, flatten, override.

Type checking is strict: unknown keys and wrong types raise :class:`ConfigError` naming the
dotted key. The same dotted keys come back from :func:`flatten` (MLflow params) and are accepted
by :func:`apply_overrides` (CLI and Ray Tune search spaces).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from typing import Any, Iterable, Literal, Mapping, Union

import yaml

from ecglm.config.schema import ConfigError, ExperimentConfig
from ecglm.config.yaml_text import load_yaml

_NONE_TYPE = type(None)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against annotation ``tp``; return it (ints are accepted for floats)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and _NONE_TYPE in args:
            return None
        errors = []
        for arg in args:
            if arg is _NONE_TYPE:
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{key}: expected {' or '.join(_type_name(a) for a in args)}, "
                          f"got {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: expected one of {list(args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return _build(tp, value, key)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item_tp,) = args or (Any,)
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        k_tp, v_tp = args or (str, Any)
        return {_coerce(k, k_tp, key): _coerce(v, v_tp, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected bool, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected int, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected float, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected str, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported annotation {tp!r}")


def _build(cls: type, data: Mapping[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for k in data:
        if k not in names:
            full = f"{prefix}.{k}" if prefix else str(k)
            raise ConfigError(f"{full}: unknown key (allowed: {', '.join(sorted(names))})")
    kwargs = {}
    for name in names:
        if name in data:
            full = f"{prefix}.{name}" if prefix else name
            kwargs[name] = _coerce(data[name], hints[name], full)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        msg = str(exc)
        if prefix and not msg.startswith(prefix.split(".")[0] + "."):
            # a section that names its keys relative to itself (DeploymentConfig)
            raise ConfigError(f"{prefix}.{msg}") from None
        raise
    except TypeError as exc:  # pragma: no cover - defensive
        raise ConfigError(f"{prefix or '<root>'}: {exc}") from exc


def build_section(cls: type, data: Mapping[str, Any], prefix: str) -> Any:
    """Build and validate one config section dataclass ``cls`` (errors name ``prefix.key``)."""
    return _build(cls, data, prefix)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain-dict view of a config dataclass (round-trips through :func:`from_dict`)."""
    return dataclasses.asdict(cfg)


def from_dict(data: Mapping[str, Any]) -> ExperimentConfig:
    """Build and validate a config from a nested mapping."""
    return _build(ExperimentConfig, data, "")


def flatten(cfg: ExperimentConfig | Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train.max_steps": 20, ...}``: dotted keys of every leaf (lists and dicts are leaves)."""
    data = to_dict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg)
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and not _is_leaf_mapping(key):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _is_leaf_mapping(key: str) -> bool:
    """Mappings that are values in their own right (not config sections)."""
    return key in ("tune.search_space", "tune.trial_overrides", "serve.adapters")


def _parse_value(text: str) -> Any:
    """YAML scalar/list/dict parsing, plus ``1e-3`` as a float (YAML 1.1 reads it as a string)."""
    try:
        value = load_yaml(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``data[a][b][c] = value`` for ``key == "a.b.c"``, checking each section exists."""
    parts = key.split(".")
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"{'.'.join(parts[: i + 1])}: unknown key in override {key!r}")
        node = node[part]
        if _is_leaf_mapping(".".join(parts[: i + 1])):
            break
    if not isinstance(node, dict):
        raise ConfigError(f"{key}: cannot set a field inside a non-section value")
    leaf = parts[-1]
    if leaf not in node and not _is_leaf_mapping(".".join(parts[:-1])):
        raise ConfigError(f"{key}: unknown key")
    node[leaf] = value


def apply_overrides(cfg: ExperimentConfig, overrides: Mapping[str, Any]) -> ExperimentConfig:
    """Return a new validated config with dotted ``overrides`` applied (values already typed)."""
    data = to_dict(cfg)
    for key, value in overrides.items():
        set_dotted(data, key, value)
    return from_dict(data)


def parse_cli_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``["train.max_steps=5", "lora.r=4"]`` -> ``{"train.max_steps": 5, "lora.r": 4}``."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"{item}: override must look like dotted.key=value")
        key, _, raw = item.partition("=")
        out[key.strip()] = _parse_value(raw)
    return out


def config_hash(data: Any) -> str:
    """Short stable hash of any JSON-able value (e.g. a config section)."""
    blob = json.dumps(data, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
