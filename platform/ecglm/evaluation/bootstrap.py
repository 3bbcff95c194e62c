"""Bootstrap confidence intervals for evaluation metrics.

A metric computed on a test set of ``N`` items is re-computed on ``n_boot`` resamples drawn
with replacement; the interval is the ``(1 - level) / 2`` and ``(1 + level) / 2`` percentiles
(percentile bootstrap). With ``groups`` (e.g. the ECG or patient of each item), whole groups
are resampled (cluster bootstrap), so items that share an ECG are not counted as independent.
Resamples where the metric is undefined (NaN, e.g. an AUC on a resample without positives)
are dropped and counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Hashable, Optional, Sequence

import numpy as np


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap interval."""

    value: float
    low: float
    high: float
    n_items: int
    n_boot: int
    n_undefined: int

    def as_json(self, digits: int = 4) -> dict[str, Any]:
        return {"value": round(self.value, digits), "ci95": [round(self.low, digits),
                                                             round(self.high, digits)],
                "n": self.n_items}


def resample_indices(n: int, groups: Optional[Sequence[Hashable]], n_boot: int,
                     seed: int) -> list[np.ndarray]:
    """``n_boot`` index arrays into ``range(n)``: items (``groups`` None) or whole groups drawn
    with replacement (each drawn group contributes all its items)."""
    rng = np.random.default_rng(seed)
    if groups is None:
        return [rng.integers(0, n, n) for _ in range(n_boot)]
    if len(groups) != n:
        raise ValueError(f"bootstrap: {len(groups)} groups for {n} items")
    members: dict[Hashable, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    blocks = [np.asarray(v, dtype=np.int64) for v in members.values()]
    out = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(blocks), len(blocks))
        out.append(np.concatenate([blocks[j] for j in pick]))
    return out


def bootstrap(metric: Callable[[np.ndarray], float], n: int,
              groups: Optional[Sequence[Hashable]] = None, n_boot: int = 1000,
              level: float = 0.95, seed: int = 0) -> Interval:
    """Percentile-bootstrap interval of ``metric(indices)``.

    Args:
        metric: maps an index array into the ``N`` items to a float (NaN when undefined).
        n: number of items ``N``.
        groups: ``N`` group keys for a cluster bootstrap, or None (items independent).
        n_boot: resamples; level: interval coverage (0.95 -> 2.5 and 97.5 percentiles).
        seed: resampling seed (the same seed gives the same resamples to every metric, so
            paired comparisons line up).
    """
    if n == 0:
        raise ValueError("bootstrap: no items")
    value = float(metric(np.arange(n)))
    stats = np.array([metric(idx) for idx in resample_indices(n, groups, n_boot, seed)],
                     dtype=np.float64)
    ok = stats[np.isfinite(stats)]
    if ok.size == 0:
        return Interval(value, float("nan"), float("nan"), n, n_boot, n_boot)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(ok, [tail, 1.0 - tail])
    return Interval(value, float(low), float(high), n, n_boot, int(stats.size - ok.size))


def paired_difference(metric_a: Callable[[np.ndarray], float],
                      metric_b: Callable[[np.ndarray], float], n: int,
                      groups: Optional[Sequence[Hashable]] = None, n_boot: int = 1000,
                      level: float = 0.95, seed: int = 0) -> Interval:
    """Interval of ``metric_a - metric_b`` on the same resamples (is A better than B?)."""
    return bootstrap(lambda idx: metric_a(idx) - metric_b(idx), n, groups, n_boot, level,
                     seed)
