"""GEM grounding features: shapes, units and values on synthetic and LUDB records."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ecglm.data.records import LEADS, read_wfdb
from ecglm.features import (FEATURE_NAMES, FEATURE_UNITS, ST_FORMS, SignalError, delineate,
                            grounding_features, st_form_code, summarize, summary_text)
from tests import helpers as synth


@pytest.fixture(scope="module")
def synthetic():
    x, fs, onsets = synth.synthetic_ecg()
    return x, fs, onsets, grounding_features(x, fs)


def test_fourteen_sequences_with_units(synthetic) -> None:
    _, _, onsets, f = synthetic
    assert len(FEATURE_NAMES) == 14 and set(FEATURE_NAMES) <= set(FEATURE_UNITS)
    for name, arr in f.as_dict().items():
        assert arr.shape == (onsets.size, 12) and arr.dtype == np.float64, name
    assert f.stack().shape == (14, onsets.size, 12)
    assert {FEATURE_UNITS[k] for k in ("rr1", "pr_interval", "qt_interval")} == {"ms"}
    assert FEATURE_UNITS["heart_rate"] == "bpm" and FEATURE_UNITS["t_amplitude"] == "mV"


def test_synthetic_values_match_construction(synthetic) -> None:
    _, _, _, f = synthetic
    med = {k: np.nanmedian(v) for k, v in f.as_dict().items()}
    assert med["heart_rate"] == pytest.approx(75.0, abs=0.5)
    assert med["rr1"] == pytest.approx(800.0, abs=2.0)
    assert med["pr_interval"] == pytest.approx(synth.PR_MS, abs=10.0)
    assert med["qrs_duration"] == pytest.approx(synth.QRS_MS, abs=10.0)
    assert med["qt_interval"] == pytest.approx(synth.QT_MS, abs=25.0)
    assert med["p_duration"] == pytest.approx(synth.P_MS, abs=15.0)
    assert med["st_duration"] == pytest.approx(synth.ST_MS, abs=20.0)
    assert med["t_duration"] == pytest.approx(synth.T_MS, abs=35.0)
    # QTc (Bazett) at 800 ms RR is QT / sqrt(0.8)
    assert med["qtc_interval"] == pytest.approx(med["qt_interval"] / np.sqrt(0.8), rel=0.02)
    # signed amplitudes follow each lead's construction (mV; filters cost a little height)
    np.testing.assert_allclose(np.nanmedian(f.t_amplitude, axis=0), synth.T_MV, atol=0.06)
    np.testing.assert_allclose(np.nanmedian(f.p_amplitude, axis=0), synth.P_MV, atol=0.05)
    assert np.all(np.nanmedian(f.qrs_amplitude, axis=0) > 0.5 * (synth.R_MV - synth.S_MV))
    assert np.all(f.st_form[np.isfinite(f.st_form)] == ST_FORMS.index("isoelectric"))


def test_heart_rate_consistent_with_rr(synthetic) -> None:
    x, fs, _, _ = synthetic
    y, fs, onsets = synth.synthetic_ecg(rr_ms=[700.0, 1000.0, 850.0], seed=3)  # irregular
    assert np.allclose(np.diff(grounding_features(y, fs).r_peaks) * 2.0, np.diff(onsets),
                       atol=4.0)
    for sig in (x, y):
        f = grounding_features(sig, fs)
        assert np.isnan(f.rr1[0]).all() and np.isnan(f.rr2[-1]).all()
        np.testing.assert_allclose(f.rr2[:-1], f.rr1[1:])
        np.testing.assert_allclose(f.rr1[1:, 0], np.diff(f.r_peaks) * 1000.0 / fs)
        mean_rr = np.nanmean(np.stack([f.rr1, f.rr2]), axis=0)
        np.testing.assert_allclose(f.heart_rate, 60000.0 / mean_rr)
        assert np.all(f.heart_rate == f.heart_rate[:, :1])  # same in every lead


def test_st_form_codes() -> None:
    v2, lead_i = LEADS.index("V2"), LEADS.index("I")
    assert st_form_code(0.0, 0.0, lead_i) == ST_FORMS.index("isoelectric")
    assert st_form_code(0.15, 0.0, lead_i) == ST_FORMS.index("elevated")
    assert st_form_code(0.15, 0.0, v2) == ST_FORMS.index("isoelectric")  # V2 limit 0.2 mV
    assert st_form_code(0.25, 0.0, v2) == ST_FORMS.index("elevated")
    assert st_form_code(-0.1, 1.0, lead_i) == ST_FORMS.index("depressed_upsloping")
    assert st_form_code(-0.1, 0.1, lead_i) == ST_FORMS.index("depressed_horizontal")
    assert st_form_code(-0.1, -1.0, lead_i) == ST_FORMS.index("depressed_downsloping")
    assert np.isnan(st_form_code(float("nan"), 0.0, lead_i))


def test_st_shift_is_found_and_summarised() -> None:
    shift = np.zeros(12)
    shift[LEADS.index("V3")] = 0.3
    shift[LEADS.index("V5")] = -0.15
    x, fs, _ = synth.synthetic_ecg(st_shift_mv=shift)
    f = grounding_features(x, fs)
    forms = [ST_FORMS[int(np.nanmedian(f.st_form[:, lead]))] for lead in range(12)]
    assert forms[LEADS.index("V3")] == "elevated"
    assert forms[LEADS.index("V5")].startswith("depressed")
    assert forms[LEADS.index("II")] == "isoelectric"
    assert np.nanmedian(f.st_deviation[:, LEADS.index("V3")]) == pytest.approx(0.3, abs=0.08)
    s = summarize(f)
    assert any(t.startswith("ST elevation") for t in s["findings"]["leads"]["V3"])
    assert any(t.startswith("ST depression") for t in s["findings"]["leads"]["V5"])
    assert "II" not in s["findings"]["leads"]
    text = summary_text(s)
    assert "ST elevation in V3" in text and "ST depression" in text


def test_summary_is_json_and_text_is_short(synthetic) -> None:
    _, _, onsets, f = synthetic
    s = summarize(f)
    json.dumps(s)  # JSON-serialisable (NaN -> None)
    assert s["n_beats"] == onsets.size and s["duration_s"] == pytest.approx(10.0)
    assert s["median"]["heart_rate"] == pytest.approx(75.0, abs=0.5)
    assert set(s["per_lead"]) == set(LEADS)
    assert set(s["per_lead"]["V1"]) == set(FEATURE_NAMES) | {"st_deviation"}
    assert s["per_lead"]["aVR"]["t_amplitude"] < 0
    assert s["findings"]["record"] == []
    text = summary_text(s)
    assert "75 bpm" in text and "No measurement outside the usual limits." in text
    assert len(text) < 600


def test_flat_line_gives_empty_features() -> None:
    f = grounding_features(np.zeros((12, 5000)), 500)
    assert f.n_beats == 0 and f.qt_interval.shape == (0, 12) and f.stack().shape == (14, 0, 12)
    s = summarize(f)
    assert s["n_beats"] == 0 and s["findings"]["record"] == []
    assert "no heartbeats" in summary_text(s)


def test_reusing_a_delineation(synthetic) -> None:
    x, fs, _, f = synthetic
    d = delineate(x, fs)
    again = grounding_features(x, fs, delineation=d)
    np.testing.assert_array_equal(again.stack(), f.stack())
    with pytest.raises(SignalError) as info:
        grounding_features(x[:, :4000], fs, delineation=d)
    assert info.value.field == "delineation"


def test_bad_input_is_typed() -> None:
    with pytest.raises(SignalError) as info:
        grounding_features(np.zeros((12,)), 500)
    assert info.value.field == "signal.shape"
    x, fs, _ = synth.synthetic_ecg(seconds=3.0)
    x[0, 10] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        grounding_features(x, fs)


# --- LUDB ---------------------------------------------------------------------------------

def test_ludb_sinus_bradycardia(ludb: Path) -> None:
    """LUDB 1 is sinus bradycardia: slow, regular, P waves with a normal PR."""
    x, fs = read_wfdb(ludb / "1", 500, 5000)
    f = grounding_features(x, fs)
    s = summarize(f)
    assert 40 <= s["median"]["heart_rate"] < 60
    assert any(t.startswith("slow rate") for t in s["findings"]["record"])
    assert s["rr_variation"] < 0.05
    assert 120 <= s["median"]["pr_interval"] <= 200
    assert np.isfinite(f.p_amplitude[:, LEADS.index("II")]).mean() > 0.8
    assert 60 <= s["median"]["qrs_duration"] <= 110
    # QTc from HR: Bazett with the beat's preceding RR
    qt, rr = f.qt_interval[1:, 1], f.rr1[1:, 1]
    ok = np.isfinite(qt)
    np.testing.assert_allclose(f.qtc_interval[1:, 1][ok], qt[ok] / np.sqrt(rr[ok] / 1000.0))


def test_ludb_atrial_fibrillation(ludb: Path) -> None:
    """LUDB 38 is atrial fibrillation: irregular RR is reported."""
    x, fs = read_wfdb(ludb / "38", 500, 5000)
    s = summarize(grounding_features(x, fs))
    assert s["rr_variation"] > 0.12
    assert any(t.startswith("irregular RR") for t in s["findings"]["record"])


def test_flat_lead_is_undefined_not_zero(synthetic) -> None:
    """A disconnected (flat) lead gets NaN morphology; rhythm and other leads are kept."""
    x, fs, _, f_all = synthetic
    y = x.copy()
    v4 = LEADS.index("V4")
    y[v4] = 0.0
    f = grounding_features(y, fs)
    assert f.n_beats == f_all.n_beats
    for name in FEATURE_NAMES:
        col = getattr(f, name)[:, v4]
        if name in ("heart_rate", "rr1", "rr2"):
            assert np.isfinite(col[1:-1]).all(), name
        else:
            assert np.isnan(col).all(), name
    assert np.nanmedian(f.qrs_duration[:, 0]) == pytest.approx(synth.QRS_MS, abs=10.0)
    assert summarize(f)["per_lead"]["V4"]["qrs_amplitude"] is None
