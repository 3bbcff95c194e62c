"""Bootstrap intervals: the percentile interval of a known statistic, cluster resampling,
undefined resamples, paired differences."""

from __future__ import annotations

import numpy as np
import pytest

from ecglm.evaluation.bootstrap import bootstrap, paired_difference, resample_indices


def test_interval_of_a_proportion_matches_the_normal_approximation() -> None:
    correct = np.array([1.0] * 60 + [0.0] * 40)  # 0.6 on 100 items: SE = sqrt(.24/100) = .049
    iv = bootstrap(lambda idx: float(correct[idx].mean()), 100, n_boot=2000, seed=1)
    assert iv.value == pytest.approx(0.6)
    assert iv.low == pytest.approx(0.6 - 1.96 * 0.049, abs=0.02)
    assert iv.high == pytest.approx(0.6 + 1.96 * 0.049, abs=0.02)
    again = bootstrap(lambda idx: float(correct[idx].mean()), 100, n_boot=2000, seed=1)
    assert (again.low, again.high) == (iv.low, iv.high)  # same seed, same resamples


def test_cluster_resampling_keeps_groups_whole_and_widens_the_interval() -> None:
    # 10 patients x 10 items; a patient's items are all right or all wrong (fully correlated)
    groups = [p for p in range(10) for _ in range(10)]
    correct = np.array([float(p < 6) for p in groups])
    for idx in resample_indices(100, groups, 50, seed=0):
        counts = np.bincount(np.asarray(groups)[idx], minlength=10)
        assert set(counts.tolist()) <= {0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100}
    items = bootstrap(lambda idx: float(correct[idx].mean()), 100, n_boot=1000)
    patients = bootstrap(lambda idx: float(correct[idx].mean()), 100, groups, n_boot=1000)
    # 10 independent units, not 100: the interval is about sqrt(10) times wider
    assert (patients.high - patients.low) > 2.5 * (items.high - items.low)
    with pytest.raises(ValueError, match="groups"):
        resample_indices(5, [0, 1], 1, 0)


def test_undefined_resamples_are_counted_not_averaged() -> None:
    y = np.array([1.0] + [0.0] * 9)  # one positive: many resamples miss it

    def rate_of_positives_found(idx: np.ndarray) -> float:
        return float("nan") if y[idx].sum() == 0 else 1.0

    iv = bootstrap(rate_of_positives_found, 10, n_boot=500, seed=0)
    # P(no positive in 10 draws) = 0.9^10 = 0.35
    assert 0.25 < iv.n_undefined / 500 < 0.45
    assert (iv.low, iv.high) == (1.0, 1.0)


def test_paired_difference_sees_a_consistent_gain_that_separate_intervals_hide() -> None:
    rng = np.random.default_rng(0)
    hard = rng.random(60) < 0.5  # item difficulty shared by both systems
    a = (~hard).astype(float)
    b = a.copy()
    b[np.flatnonzero(a == 1)[:5]] = 0.0  # b = a minus five items
    ia = bootstrap(lambda i: float(a[i].mean()), 60)
    ib = bootstrap(lambda i: float(b[i].mean()), 60)
    assert ia.low < ib.high  # the separate intervals overlap ...
    diff = paired_difference(lambda i: float(a[i].mean()), lambda i: float(b[i].mean()), 60)
    assert diff.value == pytest.approx(5 / 60)
    assert diff.low > 0  # ... but on the same resamples a is always ahead
    assert bootstrap(lambda i: 0.0, 3).as_json() == {"value": 0.0, "ci95": [0.0, 0.0], "n": 3}
