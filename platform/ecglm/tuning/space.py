"""Parsed search-space dimensions (:mod:`ecglm.config.search_space`) -> Ray Tune's space."""

from __future__ import annotations

from typing import Any, Mapping

from ray import tune

from ecglm.config.search_space import Dimension
from ecglm.tuning.choices import encode_choice


def tune_domain(dim: Dimension, search: str) -> Any:
    """One dimension as a Ray Tune domain.

    ``choice`` follows ``tune.search`` (``grid``: every value, ``random``/``optuna``:
    sampled); ``grid`` is always every value; the distributions map to their ``tune.*``
    namesakes. List and mapping choices travel as JSON text
    (:func:`ecglm.tuning.trial.encode_choice`).
    """
    values = [encode_choice(v) for v in dim.values] if dim.discrete else list(dim.values)
    if dim.kind == "grid" or (dim.kind == "choice" and search == "grid"):
        return tune.grid_search(values)
    if dim.kind == "choice":
        return tune.choice(values)
    make = {"uniform": tune.uniform, "loguniform": tune.loguniform, "quniform": tune.quniform,
            "qloguniform": tune.qloguniform, "randint": tune.randint,
            "lograndint": tune.lograndint}[dim.kind]
    return make(*dim.values)


def tune_space(dims: Mapping[str, Dimension], search: str) -> dict[str, Any]:
    """``{dotted key: Ray Tune domain}`` for ``Tuner(param_space=...)``."""
    return {key: tune_domain(dim, search) for key, dim in dims.items()}
