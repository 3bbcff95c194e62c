"""Config error type and the check helper every config section uses."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value is missing, unknown or of the wrong type/range.

    The message always starts with the dotted key, e.g. ``train.max_steps: expected int``.
    """


def require(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {msg}")
