"""``tune.search_space``: lists of choices and sampling distributions, parsed and validated.

Each entry maps a dotted config key to one of::

    lora.r: [4, 8, 16]                       # a list: the choices (grid or sampled)
    lora.r: {choice: [4, 8, 16, 64]}         # the same, spelled out
    lora.alpha: {grid: [16, 32]}             # always every value, whatever tune.search says
    train.lr: {loguniform: [1.0e-5, 1.0e-3]} # continuous, log scale; low > 0
    lora.dropout: {uniform: [0.0, 0.2]}
    train.lr: {qloguniform: [1.0e-5, 1.0e-3, 1.0e-5]}   # rounded to multiples of q
    mapper.n_tokens: {randint: [4, 33]}      # integers, high exclusive (Ray Tune's rule)
    lora.r: {lograndint: [4, 257]}

This module has no Ray import: the config validates a space when it is loaded (a bad space is a
:class:`ConfigError` naming ``tune.search_space.<key>``), and :mod:`ecglm.tuning.space` turns the
parsed :class:`Dimension` objects into Ray Tune's search space.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from ecglm.config.checks import ConfigError

DISCRETE = ("choice", "grid")
CONTINUOUS = ("uniform", "loguniform", "quniform", "qloguniform")
INTEGER = ("randint", "lograndint")
KINDS = DISCRETE + CONTINUOUS + INTEGER


@dataclass(frozen=True)
class Dimension:
    """One swept key.

    Attributes:
        key: the dotted config key.
        kind: one of :data:`KINDS` (a plain list is ``choice``).
        values: the choices (``choice``/``grid``) or ``(low, high)`` / ``(low, high, q)``.
    """

    key: str
    kind: str
    values: tuple[Any, ...]

    @property
    def discrete(self) -> bool:
        """True for a finite set of values (``choice``/``grid``)."""
        return self.kind in DISCRETE

    def probe_values(self) -> list[Any]:
        """Values that must each yield a valid config: every choice, or both ends of a range
        as the sampler returns them (floats for the continuous kinds, ``high - 1`` for the
        integer kinds, whose ``high`` is exclusive)."""
        if self.discrete:
            return list(self.values)
        low, high = self.values[0], self.values[1]
        if self.kind in INTEGER:
            return [int(low), int(high) - 1]
        return [float(low), float(high)]  # what the sampler yields: floats, even from [2, 8]


def _error(key: str, message: str) -> ConfigError:
    return ConfigError(f"tune.search_space.{key}: {message}")


def _number(key: str, kind: str, value: Any, integer: bool) -> float | int:
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or (isinstance(value, float) and not math.isfinite(value)):
        want = "an integer" if integer else "a finite number"
        raise _error(key, f"{kind}: expected {want}, got {value!r}")
    return value


def parse_dimension(key: str, spec: Any) -> Dimension:
    """One search-space entry -> :class:`Dimension`.

    Raises:
        ConfigError: naming ``tune.search_space.<key>`` and what was expected.
    """
    if isinstance(spec, list):
        spec = {"choice": spec}
    if not isinstance(spec, Mapping) or len(spec) != 1:
        raise _error(key, f"expected a list of choices or a mapping with one of {list(KINDS)}, "
                          f"got {spec!r}")
    (kind, args), = spec.items()
    if kind not in KINDS:
        raise _error(key, f"unknown distribution {kind!r}; expected one of {list(KINDS)}")
    if not isinstance(args, list) or not args:
        raise _error(key, f"{kind}: expected a non-empty list, got {args!r}")
    if kind in DISCRETE:
        return Dimension(key, kind, tuple(args))
    quantised = kind.startswith("q")
    if len(args) != (3 if quantised else 2):
        shape = "[low, high, q]" if quantised else "[low, high]"
        raise _error(key, f"{kind}: expected {shape}, got {args!r}")
    integer = kind in INTEGER
    nums = tuple(_number(key, kind, v, integer) for v in args)
    low, high = nums[0], nums[1]
    if not low < high:
        raise _error(key, f"{kind}: low must be < high, got {low!r} >= {high!r}")
    if kind.endswith("loguniform") or kind == "lograndint":
        if low <= 0:
            raise _error(key, f"{kind}: low must be > 0 on a log scale, got {low!r}")
    if quantised and not nums[2] > 0:
        raise _error(key, f"{kind}: q must be > 0, got {nums[2]!r}")
    return Dimension(key, kind, nums)


def parse_search_space(space: Mapping[str, Any], search: str = "random"
                       ) -> dict[str, Dimension]:
    """Every entry of ``tune.search_space`` parsed (see the module docstring).

    Args:
        search: ``tune.search``; ``grid`` refuses continuous and integer distributions (a
            grid has no way to enumerate them), ``optuna`` refuses ``grid`` entries.

    Raises:
        ConfigError: a malformed entry, a distribution under ``search: grid`` or a grid under
            ``search: optuna``.
    """
    if not isinstance(space, Mapping):
        raise ConfigError(f"tune.search_space: expected a mapping of dotted keys, got {space!r}")
    dims = {str(k): parse_dimension(str(k), v) for k, v in space.items()}
    if search == "optuna":
        grids = [d.key for d in dims.values() if d.kind == "grid"]
        if grids:
            raise ConfigError(f"tune.search_space.{grids[0]}: tune.search=optuna samples every "
                              f"key; a grid cannot be enumerated by it (use choice)")
    if search == "grid":
        sampled = [d.key for d in dims.values() if not d.discrete]
        if sampled:
            raise ConfigError(f"tune.search_space.{sampled[0]}: a {dims[sampled[0]].kind} "
                              f"distribution cannot be enumerated by tune.search=grid; use "
                              f"tune.search=random (or give a list of values)")
    return dims
