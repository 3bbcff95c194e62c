"""Reference baselines scored with the same exact-match scorer as the models.

* :class:`MajorityBaseline` — the most frequent training answer set per question template
  (falling back to the question type, then to the whole training split).
* :class:`BlindBaseline` — a question-only ("blind") model: TF-IDF of the question text ->
  one logistic regression per answer option seen in training; at test time the row's options
  with probability >= 0.5 are answered (at least the most probable one).
* :func:`retrieved_report_baseline` — report generation by copying the nearest neighbour's
  report (the first retrieved report).

Rows are QA shard rows (``question``, ``question_type``, ``attribute_type``, ``template_id``,
``options``, ``answer``, ``sample_id``; ``retrieved_reports`` for the report baseline).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any, Optional, Protocol, Sequence

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from ecglm.data.rows import QARow
from ecglm.evaluation.qa import Prediction, exact_match, normalise_answer


class QABaseline(Protocol):
    """A model that answers QA rows without generation."""

    name: str

    def fit(self, rows: Sequence[QARow]) -> "QABaseline": ...

    def answer(self, row: QARow) -> list[str]: ...


def _key(answer: Any) -> frozenset[str]:
    return normalise_answer(list(answer))


def _restrict(answer: frozenset[str], options: Sequence[str]) -> list[str]:
    """Answer entries spelled as in ``options`` (entries not among the options are kept)."""
    by_norm = {str(o).strip().lower(): str(o) for o in options}
    return sorted(by_norm.get(a, a) for a in answer)


class MajorityBaseline:
    """Most frequent answer set per template -> per question type -> overall."""

    name = "majority"

    def __init__(self) -> None:
        self.by_template: dict[Any, frozenset[str]] = {}
        self.by_type: dict[str, frozenset[str]] = {}
        self.overall: frozenset[str] = frozenset()

    def fit(self, rows: Sequence[QARow]) -> "MajorityBaseline":
        if not rows:
            raise ValueError("baselines: the training split has no QA rows")
        tpl: dict[Any, Counter] = defaultdict(Counter)
        typ: dict[str, Counter] = defaultdict(Counter)
        allc: Counter = Counter()
        for r in rows:
            k = _key(r.answer)
            tpl[r.template_id][k] += 1
            typ[r.question_type][k] += 1
            allc[k] += 1
        pick = lambda c: max(c.items(), key=lambda kv: (kv[1], sorted(kv[0])))[0]  # noqa: E731
        self.by_template = {t: pick(c) for t, c in tpl.items()}
        self.by_type = {t: pick(c) for t, c in typ.items()}
        self.overall = pick(allc)
        return self

    def answer(self, row: QARow) -> list[str]:
        ans = self.by_template.get(row.template_id)
        if ans is None:
            ans = self.by_type.get(row.question_type, self.overall)
        return _restrict(ans, list(row.options))


class BlindBaseline:
    """Question text only: TF-IDF (word 1-2 grams) -> per-option logistic regression.

    Args:
        max_features: TF-IDF vocabulary size.
        c: inverse L2 regularisation strength of each logistic regression.
    """

    name = "blind"

    def __init__(self, max_features: int = 5000, c: float = 4.0) -> None:
        self.max_features, self.c = max_features, c
        self.vectorizer: Any = None
        self.models: dict[str, Any] = {}
        self.constant: dict[str, float] = {}

    def fit(self, rows: Sequence[QARow]) -> "BlindBaseline":
        if not rows:
            raise ValueError("baselines: the training split has no QA rows")
        self.vectorizer = TfidfVectorizer(ngram_range=(1, 2), max_features=self.max_features)
        x = self.vectorizer.fit_transform([r.question for r in rows])
        options = sorted({str(o).strip().lower() for r in rows for o in r.options})
        for opt in options:
            idx = [i for i, r in enumerate(rows)
                   if opt in {str(o).strip().lower() for o in r.options}]
            y = np.array([opt in _key(rows[i].answer) for i in idx], dtype=int)
            if y.min() == y.max():          # always / never the answer when offered
                self.constant[opt] = float(y[0])
                continue
            self.models[opt] = LogisticRegression(C=self.c, max_iter=500).fit(x[idx], y)
        return self

    def probabilities(self, row: QARow) -> dict[str, float]:
        """Option (as spelled in the row) -> probability of being in the answer."""
        x = self.vectorizer.transform([row.question])
        out: dict[str, float] = {}
        for o in row.options:
            k = str(o).strip().lower()
            if k in self.models:
                out[str(o)] = float(self.models[k].predict_proba(x)[0, 1])
            else:
                out[str(o)] = self.constant.get(k, 0.0)
        return out

    def answer(self, row: QARow) -> list[str]:
        probs = self.probabilities(row)
        if not probs:
            return []
        chosen = [o for o, p in probs.items() if p >= 0.5]
        return sorted(chosen) if chosen else [max(probs.items(), key=lambda kv: kv[1])[0]]


def predict_baseline(model: QABaseline, rows: Sequence[QARow]) -> list[Prediction]:
    """Answer every row with ``model`` and mark exact matches (same scorer as the models)."""
    preds = []
    for r in rows:
        ans = model.answer(r)
        gold = [str(a) for a in r.answer]
        preds.append(Prediction(r.sample_id, r.question_type, r.attribute_type, r.question, gold,
                                ", ".join(ans), list(ans), exact_match(ans, gold)))
    return preds


def fit_qa_baselines(train_rows: Sequence[QARow]) -> dict[str, QABaseline]:
    """Majority and blind baselines fitted on the training split."""
    return {"majority": MajorityBaseline().fit(train_rows),
            "blind": BlindBaseline().fit(train_rows)}


def retrieved_report_baseline(neighbour_reports: Sequence[Sequence[str]],
                              fallback: Optional[str] = "") -> list[str]:
    """Nearest-neighbour report generation: the first retrieved report of every item.

    Args:
        neighbour_reports: N lists of retrieved reports, nearest first (the query ECG itself
            must already be excluded).
        fallback: text used when an item has no neighbour.
    """
    out = []
    for reps in neighbour_reports:
        first = next((str(r) for r in reps if r and str(r).strip()), None)
        out.append(first if first is not None else (fallback or ""))
    return out
