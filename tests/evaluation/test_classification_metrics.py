"""Multi-label metrics against scikit-learn; exact match per type against a pandas recount."""

from __future__ import annotations

import numpy as np
import pytest

from ecglm.evaluation.metrics import classification_metrics, em_scores, exact_match
from ecglm.evaluation.qa import Prediction

TOL = 1e-6


def _data(seed: int = 0, n: int = 300, c: int = 5):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, c)) < [0.1, 0.3, 0.5, 0.2, 0.05][:c]).astype(int)
    s = np.clip(y * 0.3 + rng.random((n, c)) * 0.8, 0, 1).round(2)   # rounding makes ties
    return y, s


def test_classification_matches_sklearn() -> None:
    from sklearn.metrics import f1_score, hamming_loss, roc_auc_score

    y, s = _data()
    m = classification_metrics(y, s)
    p = (s >= 0.5).astype(int)
    assert abs(m["macro_auc"] - roc_auc_score(y, s, average="macro")) < TOL
    assert abs(m["macro_f1"] - f1_score(y, p, average="macro", zero_division=0)) < TOL
    assert abs(m["hamming_loss"] - hamming_loss(y, p)) < TOL
    assert abs(m["subset_accuracy"] - float((p == y).all(axis=1).mean())) < TOL


def test_single_class_columns_dropped_with_warning() -> None:
    from sklearn.metrics import f1_score, roc_auc_score

    y, s = _data(1)
    y[:, 4] = 0
    with pytest.warns(RuntimeWarning, match=r"\['form'\]"):
        m = classification_metrics(y, s, label_names=["a", "b", "c", "d", "form"])
    p = (s >= 0.5).astype(int)
    assert m["n_labels_used"] == 4
    assert abs(m["macro_auc"] - roc_auc_score(y[:, :4], s[:, :4], average="macro")) < TOL
    assert abs(m["macro_f1"] - f1_score(y[:, :4], p[:, :4], average="macro",
                                        zero_division=0)) < TOL


def test_em_per_type_and_attribute_matches_recount() -> None:
    import pandas as pd

    rng = np.random.default_rng(0)
    opts = ["yes", "no", "not sure", "none", "lead i", "lead ii"]
    preds = []
    for i in range(400):
        gold = list(rng.choice(opts, rng.integers(1, 3), replace=False))
        parsed = gold[::-1] if rng.random() < 0.5 else list(rng.choice(opts, 1))
        qt = ["single-verify", "single-choose", "single-query", "comparison_consecutive-verify"
              ][i % 4]
        at = ["scp_code", "noise", "numeric_feature"][i % 3]
        preds.append(Prediction(i, qt, at, "q", gold, ", ".join(parsed), parsed,
                                exact_match(parsed, gold)))
    m = em_scores(preds)
    df = pd.DataFrame({"t": [p.question_type for p in preds], "a": [p.attribute_type for p in preds],
                       "ok": [set(map(str.lower, p.parsed)) == set(map(str.lower, p.gold))
                              for p in preds]})
    for t, v in df.groupby("t")["ok"].mean().items():
        assert abs(m[f"em/{t}"] - v) < TOL
    for a, v in df.groupby("a")["ok"].mean().items():
        assert abs(m[f"em/attr/{a}"] - v) < TOL
    assert abs(m["em/overall"] - df["ok"].mean()) < TOL
    assert abs(m["em/type_avg"] - df.groupby("t")["ok"].mean().mean()) < TOL
