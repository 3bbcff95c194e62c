"""ECG-QA test regimes: every test item (``full``) or the papers' 10% subset (``ten_percent``).

The 10% subset is a seeded sample stratified by question type: from each type with ``n``
items, ``max(1, round(n / 10))`` items are drawn without replacement. The result keeps the
input order (shard order, i.e. by ``sample_id``), so it is stable under re-runs.
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Sequence, TypeVar

from ecglm.data.rows import ECGRow

Row = TypeVar("Row", bound=ECGRow)
"""A typed row (:mod:`ecglm.data.rows`); strata are read as attributes."""

REGIMES = ("full", "ten_percent")


def stratified_subset(rows: Sequence[Row], fraction: float, seed: int,
                      key: str = "question_type") -> list[Row]:
    """A seeded ``fraction`` of ``rows`` per value of ``rows[i][key]`` (at least one each).

    Args:
        rows: QA rows.
        fraction: share of each stratum to keep, in (0, 1].
        seed: sampling seed.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"stratified_subset: fraction must be in (0, 1], got {fraction}")
    groups: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        groups[str(getattr(r, key))].append(i)
    keep: set[int] = set()
    for name in sorted(groups):
        idx = groups[name]
        k = max(1, int(round(len(idx) * fraction)))
        keep.update(random.Random(f"{seed}:{name}").sample(idx, min(k, len(idx))))
    return [r for i, r in enumerate(rows) if i in keep]


def select_regime(rows: Sequence[Row], regime: str, seed: int) -> Sequence[Row]:
    """The rows evaluated under ``regime`` (``full``: ``rows`` themselves, not copied, so a
    split read on demand stays on disk | ``ten_percent``: a list)."""
    if regime == "full":
        return rows
    if regime == "ten_percent":
        return stratified_subset(rows, 0.1, seed)
    raise ValueError(f"evaluation.regime: expected one of {list(REGIMES)}, got {regime!r}")
