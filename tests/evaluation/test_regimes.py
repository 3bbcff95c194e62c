"""ECG-QA test regimes: full and the seeded, stratified 10% subset."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pytest

from ecglm.evaluation.regimes import select_regime, stratified_subset

TYPES = {"single-verify": 503, "single-choose": 120, "single-query": 251,
         "comparison_consecutive-verify": 7}


@dataclass(frozen=True)
class _Row:
    sample_id: int
    question_type: str


def _rows() -> list[_Row]:
    rows, sid = [], 0
    for t, n in TYPES.items():
        for _ in range(n):
            rows.append(_Row(sid, t))
            sid += 1
    return sorted(rows, key=lambda r: (r.sample_id * 7919) % 1000)  # interleave types


def test_full_regime_keeps_everything_in_order() -> None:
    rows = _rows()
    assert select_regime(rows, "full", 0) == rows


def test_ten_percent_is_stratified_seeded_and_ordered() -> None:
    rows = _rows()
    sub = select_regime(rows, "ten_percent", 0)
    counts = Counter(r.question_type for r in sub)
    assert counts == {"single-verify": 50, "single-choose": 12, "single-query": 25,
                      "comparison_consecutive-verify": 1}
    assert sub == select_regime(rows, "ten_percent", 0)            # seeded
    assert sub != select_regime(rows, "ten_percent", 1)
    pos = {id(r): i for i, r in enumerate(rows)}
    assert [pos[id(r)] for r in sub] == sorted(pos[id(r)] for r in sub)  # input order kept
    assert len({r.sample_id for r in sub}) == len(sub)
    # the draw within a type does not depend on the other types present
    only_verify = [r for r in rows if r.question_type == "single-verify"]
    assert ([r for r in sub if r.question_type == "single-verify"]
            == select_regime(only_verify, "ten_percent", 0))


def test_bad_regime_and_fraction() -> None:
    with pytest.raises(ValueError, match="evaluation.regime"):
        select_regime(_rows(), "half", 0)
    with pytest.raises(ValueError, match="fraction"):
        stratified_subset(_rows(), 0.0, 0)
    assert stratified_subset([], 0.1, 0) == []
