"""How much each swept parameter explains the sweep metric: a small seeded random forest.

The parameters of the trials that reported a finite metric are encoded as features (numbers as
they are, log10 of the log-scaled ones, one column per category for the others; a missing
number is NaN, which scikit-learn's forests split on, a missing category is all zeros). A
``RandomForestRegressor(random_state=0)`` fits metric ~ features, and each parameter's
importance is the sum of the impurity importances of its columns, normalised to sum to 1.
With a handful of trials this is a rough ranking, not a measurement; the report says so.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from sklearn.ensemble import RandomForestRegressor

from ecglm.tuning.records import ParamAxis, TrialRecord, finite_metric, param_axes

MIN_TRIALS = 3
"""Fewest trials with a finite metric for which an importance is computed."""
N_TREES = 100


def encode(trials: Sequence[TrialRecord],
           axes: Sequence[ParamAxis]) -> tuple[np.ndarray, list[str]]:
    """Feature matrix of the trials' parameters.

    Returns:
        ``(X, owners)``: X is (n_trials, n_columns) float64; ``owners[j]`` is the parameter key
        that column j encodes (a categorical parameter owns one column per category).
    """
    columns: list[np.ndarray] = []
    owners: list[str] = []
    for axis in axes:
        pos = np.array([axis.position(t.params.get(axis.key)) for t in trials], dtype=float)
        if axis.kind == "categorical":
            for c in range(len(axis.categories)):
                columns.append((pos == c).astype(float))
                owners.append(axis.key)
        else:
            columns.append(pos)
            owners.append(axis.key)
    x = np.stack(columns, axis=1) if columns else np.zeros((len(trials), 0))
    return x, owners


def _varies(axis: ParamAxis, trials: Sequence[TrialRecord]) -> bool:
    """True when the trials used several values of ``axis.key``, or some lack it."""
    missing = sum(axis.key not in t.params or t.params[axis.key] is None for t in trials)
    return axis.varies or 0 < missing < len(trials)


def parameter_importance(trials: Sequence[TrialRecord]) -> dict[str, float]:
    """Importance of each parameter for the sweep metric, in [0, 1] and summing to 1.

    Ordered most important first; a parameter every trial set to the same value scores 0.
    Empty when fewer than :data:`MIN_TRIALS` trials have a finite metric, when no parameter
    varies among them, or when the metric is the same for all of them. Deterministic.
    """
    scored = [t for t in trials if finite_metric(t) is not None]
    if len(scored) < MIN_TRIALS:
        return {}
    axes = param_axes(scored)
    varying = [a for a in axes if _varies(a, scored)]
    if not varying:
        return {}
    y = np.array([finite_metric(t) for t in scored], dtype=float)
    if np.ptp(y) == 0:
        return {}
    x, owners = encode(scored, varying)
    forest = RandomForestRegressor(n_estimators=N_TREES, random_state=0, n_jobs=1)
    forest.fit(x, y)
    per_key = dict.fromkeys((a.key for a in axes), 0.0)
    for key, value in zip(owners, forest.feature_importances_):
        per_key[key] += float(value)
    total = sum(per_key.values())
    if not math.isfinite(total) or total <= 0:
        return {}
    ranked = sorted(per_key.items(), key=lambda kv: -kv[1])
    return {k: v / total for k, v in ranked}
