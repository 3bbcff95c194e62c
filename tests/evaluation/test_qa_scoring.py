"""Exact match with set-valued answers, per question type and attribute type."""

from __future__ import annotations

import pytest

from ecglm.evaluation.qa import Prediction, exact_match, score


@pytest.mark.parametrize(
    "pred, gold, ok",
    [
        (["qt interval", "pr interval"], ["pr interval", "qt interval"], True),  # order
        (["PR interval ", "pr interval"], ["pr interval"], True),                # case, dups
        (["pr interval"], ["pr interval", "qt interval"], False),                # subset
        (["none"], ["none"], True),
        ([], ["none"], False),        # an unparseable answer never matches, not even "none"
        ([], [], False),
        (["yes"], ["no"], False),
    ],
)
def test_exact_match_is_set_equality(pred: list[str], gold: list[str], ok: bool) -> None:
    assert exact_match(pred, gold) is ok


def _p(qtype: str, attr: str, correct: bool) -> Prediction:
    return Prediction(0, qtype, attr, "q", ["x"], "x", ["x"], correct)


def test_score_per_type_micro_and_macro() -> None:
    preds = ([_p("single-verify", "noise", True)] * 3 + [_p("single-verify", "noise", False)]
             + [_p("comparison_irrelevant-query", "numeric_feature", False)] * 2)
    m = score(preds)
    assert m["em/single-verify"] == pytest.approx(0.75)
    assert m["em/comparison_irrelevant-query"] == 0.0
    assert m["em/attr/noise"] == pytest.approx(0.75)
    assert m["em/overall"] == pytest.approx(3 / 6)
    assert m["em/type_avg"] == pytest.approx((0.75 + 0.0) / 2)
    assert m["n/single-verify"] == 4 and m["n/overall"] == 6
    assert score([]) == {}
