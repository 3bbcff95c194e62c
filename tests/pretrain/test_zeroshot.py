"""Zero-shot scoring: aligned embeddings give AUC 1; undefined classes leave the macro mean."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ecglm.pretrain.zeroshot import zero_shot_auc, zero_shot_scores

CLASSES = ("NORM", "MI", "STTC", "CD", "HYP")


def test_class_aligned_with_its_prompt_gets_auc_one() -> None:
    rng = np.random.default_rng(0)
    prompts = np.eye(5, 16)  # class c's prompt points along axis c
    y = np.zeros((40, 5), dtype=int)
    y[:10, 1] = 1  # ten MI records
    ecg = rng.normal(size=(40, 16)) * 0.1
    ecg[:10] += 3 * prompts[1]  # MI ECGs point at the MI prompt
    y[10:20, 0] = 1  # NORM labels unrelated to the embeddings (random scores)
    res = zero_shot_auc(zero_shot_scores(ecg, prompts), y, CLASSES)
    assert res.per_class["MI"] == 1.0
    assert 0.0 < res.per_class["NORM"] < 1.0
    assert res.n_records == 40 and res.prevalence["MI"] == pytest.approx(0.25)


def test_cosine_scores_ignore_norms() -> None:
    ecg = np.array([[2.0, 0.0], [0.0, 0.5]])
    prompts = np.array([[1.0, 0.0], [1.0, 1.0]])
    s = zero_shot_scores(ecg, prompts)
    np.testing.assert_allclose(s, [[1.0, 1 / math.sqrt(2)], [0.0, 1 / math.sqrt(2)]])


def test_macro_ignores_classes_without_positives_or_negatives() -> None:
    """STTC has no positive, HYP no negative: both have no AUC and stay out of the macro
    mean, which averages NORM (1.0), MI (0.0) and CD (1.0)."""
    y = np.array([[1, 0, 0, 1, 1], [0, 1, 0, 0, 1], [1, 0, 0, 1, 1], [0, 1, 0, 0, 1]])
    s = np.array([[0.9, 0.9, 0.1, 0.8, 0.3], [0.1, 0.1, 0.2, 0.2, 0.4],
                  [0.8, 0.8, 0.3, 0.9, 0.5], [0.2, 0.2, 0.4, 0.1, 0.6]])
    res = zero_shot_auc(s, y, CLASSES)
    assert res.per_class == {"NORM": 1.0, "MI": 0.0, "STTC": None, "CD": 1.0, "HYP": None}
    assert res.n_classes_used == 3
    assert res.macro_auc == pytest.approx(2 / 3)
    m = res.metrics("zeroshot/test")
    assert m["zeroshot/test/macro_auc"] == pytest.approx(2 / 3)
    assert "zeroshot/test/auc/STTC" not in m and m["zeroshot/test/auc/CD"] == 1.0


def test_no_defined_class_gives_nan_macro_and_no_metric() -> None:
    res = zero_shot_auc(np.zeros((3, 5)), np.zeros((3, 5), dtype=int), CLASSES)
    assert math.isnan(res.macro_auc) and res.n_classes_used == 0
    assert "zeroshot/valid/macro_auc" not in res.metrics("zeroshot/valid")


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"\(N, 5\)"):
        zero_shot_auc(np.zeros((3, 4)), np.zeros((3, 4), dtype=int), CLASSES)
