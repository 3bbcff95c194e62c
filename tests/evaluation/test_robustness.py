"""Gaussian-noise robustness: SNR definition, determinism, and the EM-vs-SNR curve."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from ecglm.evaluation.robustness import (add_gaussian_noise, measured_snr_db, noise_rng,
                                         noisy_rows, snr_key)


def _ecg(seed: int = 0, t: int = 5000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    time = np.arange(t) / 500.0
    amps = rng.uniform(0.2, 2.0, size=(12, 1))
    return (amps * np.sin(2 * np.pi * 1.2 * time)[None]).astype(np.float32)


@pytest.mark.parametrize("snr", [20.0, 6.0, 0.0, -5.0])
def test_noise_power_matches_target_snr_per_lead(snr: float) -> None:
    x = _ecg()
    y = add_gaussian_noise(x, snr, noise_rng(0, 1, snr))
    per_lead = 10 * np.log10(np.mean(x.astype(np.float64) ** 2, -1)
                             / np.mean((y - x).astype(np.float64) ** 2, -1))
    assert np.allclose(per_lead, snr, atol=0.45)       # each lead, from its own power
    assert measured_snr_db(x, y) == pytest.approx(snr, abs=0.1)


def test_infinite_snr_and_silent_leads_unchanged() -> None:
    x = _ecg()
    x[3] = 0.0
    assert np.array_equal(add_gaussian_noise(x, math.inf, noise_rng(0, 1, math.inf)), x)
    y = add_gaussian_noise(x, 0.0, noise_rng(0, 1, 0.0))
    assert np.array_equal(y[3], x[3])                   # zero power -> zero noise
    assert snr_key(math.inf) == "inf" and snr_key(10.0) == "10" and snr_key(-2.5) == "-2.5"


def test_noise_is_seeded_per_ecg_and_snr() -> None:
    x = _ecg()
    a = add_gaussian_noise(x, 5.0, noise_rng(0, 7, 5.0))
    assert np.array_equal(a, add_gaussian_noise(x, 5.0, noise_rng(0, 7, 5.0)))
    assert not np.array_equal(a, add_gaussian_noise(x, 5.0, noise_rng(1, 7, 5.0)))
    assert not np.array_equal(a, add_gaussian_noise(x, 5.0, noise_rng(0, 8, 5.0)))
    assert not np.array_equal(a, add_gaussian_noise(x, 10.0, noise_rng(0, 7, 10.0)))


@pytest.mark.slow
def test_noisy_rows_deterministic_and_order_independent(tiny_eval) -> None:
    from ecglm.train.run import split_rows

    prep, _ = tiny_eval
    rows = split_rows(prep, "test")[:6]
    before = [r.signals for r in rows]
    clean = noisy_rows(rows, math.inf, seed=0)
    assert [r.signals for r in clean] == [r.signals for r in rows]
    a, b = noisy_rows(rows, 0.0, seed=0), noisy_rows(rows[::-1], 0.0, seed=0)[::-1]
    assert [r.signals for r in a] == [r.signals for r in b]
    assert all(x.signals != r.signals for x, r in zip(a, rows))
    assert [r.signals for r in noisy_rows(rows, 0.0, seed=1)] != [r.signals for r in a]
    assert measured_snr_db(rows[0].ecgs(), a[0].ecgs()) == pytest.approx(0.0, abs=0.5)
    assert [r.signals for r in rows] == before          # inputs untouched


@pytest.mark.slow
def test_eval_noise_curve_inf_equals_clean(tiny_eval, tmp_path) -> None:
    from ecglm.recipes.common import evaluate_prepared

    prep, ckpt = tiny_eval
    ev_cfg = dataclasses.replace(prep.cfg.evaluation, noise_snr_db=[math.inf, 0.0, -10.0],
                                 baselines=False, report_examples=1, max_items=8)
    cfg = dataclasses.replace(prep.cfg, evaluation=ev_cfg)
    res = evaluate_prepared(dataclasses.replace(prep, cfg=cfg), ckpt, None, tmp_path)
    m = res["metrics"]
    for key in [k for k in m if k.startswith("em/")]:
        assert m[f"noise/inf/{key}"] == m[key]
    assert {"noise/0/em/overall", "noise/-10/em/overall"} <= set(m)
    summary = json.loads(Path(res["summary"]).read_text())
    assert list(summary["noise"]) == ["inf", "0", "-10"]
    html = (tmp_path / "report.html").read_text()
    assert "Robustness: Gaussian noise" in html and "data:image/png;base64" in html
