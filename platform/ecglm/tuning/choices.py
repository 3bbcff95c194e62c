"""Search-space choices as Ray Tune carries them: lists and mappings (``lora.target_modules:
{choice: [[q_proj, v_proj], [all-linear]]}``) travel as ``json:<text>``, because Optuna's
categorical values must be scalars; trials decode them back."""

from __future__ import annotations

import json
from typing import Any, Mapping

JSON_PREFIX = "json:"


def encode_choice(value: Any) -> Any:
    """A choice as Tune carries it (lists and mappings as :data:`JSON_PREFIX` text)."""
    return JSON_PREFIX + json.dumps(value) if isinstance(value, (list, dict)) else value


def decode_choice(value: Any) -> Any:
    """Inverse of :func:`encode_choice`."""
    if isinstance(value, str) and value.startswith(JSON_PREFIX):
        return json.loads(value[len(JSON_PREFIX):])
    return value


def trial_overrides(trial_config: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """``{dotted key: value}`` of a trial's Tune config (choices decoded)."""
    return {k: decode_choice(trial_config[k]) for k in keys}
