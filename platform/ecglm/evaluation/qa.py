"""ECG-QA exact-match evaluation with set-valued answers.

An answer is correct when the *set* of predicted options equals the *set* of reference answers
(order, case and duplicates do not matter). ECG-QA writes the empty answer as ``none``; a
prediction must say ``none`` to match it: an unparseable generation (empty set) matches nothing.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Optional, Sequence


def normalise_answer(answer: Iterable[str]) -> frozenset[str]:
    """Lower-cased, stripped answer set (blank entries dropped)."""
    return frozenset(a.strip().lower() for a in answer if a and a.strip())


def exact_match(pred: Iterable[str], gold: Iterable[str]) -> bool:
    """True when the two answers are the same non-empty set."""
    p, g = normalise_answer(pred), normalise_answer(gold)
    return bool(g) and p == g


@dataclass
class Prediction:
    """One evaluated item."""

    sample_id: int
    question_type: str
    attribute_type: str
    question: str
    gold: list[str]
    generated: str
    parsed: list[str]
    correct: bool
    p_yes: Optional[float] = None
    """Verify questions: the model's probability of "yes" against "no" (both answers scored),
    None elsewhere and for baselines."""


def score(predictions: Sequence[Prediction]) -> dict[str, float]:
    """Exact-match accuracy: ``em/<question_type>``, ``em/attr/<attribute_type>``,
    ``em/overall`` (micro) and ``em/type_avg`` (mean over question types), plus ``n/...``."""
    by_type: dict[str, list[bool]] = defaultdict(list)
    by_attr: dict[str, list[bool]] = defaultdict(list)
    for p in predictions:
        by_type[p.question_type].append(p.correct)
        by_attr[p.attribute_type].append(p.correct)
    out: dict[str, float] = {}
    for t, v in sorted(by_type.items()):
        out[f"em/{t}"] = sum(v) / len(v)
        out[f"n/{t}"] = float(len(v))
    for a, v in sorted(by_attr.items()):
        out[f"em/attr/{a}"] = sum(v) / len(v)
    if predictions:
        out["em/overall"] = sum(p.correct for p in predictions) / len(predictions)
        out["em/type_avg"] = sum(out[f"em/{t}"] for t in by_type) / len(by_type)
        out["n/overall"] = float(len(predictions))
    return out


def predictions_table(predictions: Sequence[Prediction]) -> list[dict[str, Any]]:
    """Plain dicts for JSON artifacts."""
    return [asdict(p) for p in predictions]
