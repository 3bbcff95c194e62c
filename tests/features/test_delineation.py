"""Delineation on synthetic beats with known fiducials and on LUDB expert-annotated records."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ecglm.data.records import read_wfdb
from ecglm.features import SignalError, delineate
from tests import helpers as synth
from tests.helpers import expert_beats


def _ms(samples: np.ndarray) -> np.ndarray:
    return np.asarray(samples, dtype=np.float64) * 1000.0 / synth.FS


def test_synthetic_fiducials_match_construction() -> None:
    x, fs, onsets = synth.synthetic_ecg()
    d = delineate(x, fs)
    assert d.n_beats == onsets.size
    assert d.r_peaks.dtype == np.int64 and np.all(np.diff(d.r_peaks) > 0)
    # every shared R peak lies inside its beat's QRS
    assert np.all((_ms(d.r_peaks) > onsets) & (_ms(d.r_peaks) < onsets + synth.QRS_MS))
    for name in ("qrs_on", "qrs_off", "p_on", "p_peak", "p_off", "t_on", "t_peak", "t_off"):
        assert getattr(d, name).shape == (onsets.size, 12)
    # global QRS boundaries: identical across leads, within a few ms of the construction
    assert np.all(d.qrs_on == d.qrs_on[:, :1])
    np.testing.assert_allclose(_ms(d.qrs_on[:, 0]), onsets, atol=6.0)
    np.testing.assert_allclose(_ms(d.qrs_off[:, 0]), onsets + synth.QRS_MS, atol=8.0)
    # P onset and T end per lead (tangent T end is a little early on a Hann T wave)
    p_on = np.nanmedian(_ms(d.p_on), axis=1)
    np.testing.assert_allclose(p_on, onsets - synth.PR_MS, atol=10.0)
    t_end = np.nanmedian(_ms(d.t_off), axis=1)
    np.testing.assert_allclose(t_end, onsets + synth.QT_MS, atol=25.0)
    # the isoelectric level is steady from beat to beat (the band-pass moves it off 0 mV)
    assert np.nanmax(np.nanstd(d.baseline, axis=0)) < 0.02


def test_t_peak_sign_follows_lead() -> None:
    x, fs, _ = synth.synthetic_ecg()
    d = delineate(x, fs)
    apex = np.array([[d.filtered.narrow[lead, int(p)] - d.baseline[j, lead]
                      for lead, p in enumerate(row)] for j, row in enumerate(d.t_peak)])
    assert np.all(np.sign(np.nanmedian(apex, axis=0)) == np.sign(synth.T_MV))


def test_flat_line_has_no_beats() -> None:
    d = delineate(np.zeros((12, 5000), dtype=np.float32), 500)
    assert d.n_beats == 0 and d.p_on.shape == (0, 12)


@pytest.mark.parametrize("bad, field", [
    (np.zeros((11, 5000)), "signal.shape"),
    (np.zeros((5000, 12)), "signal.shape"),
    (np.zeros((12, 100)), "signal.length"),
    (np.array([["a"] * 5000] * 12), "signal.dtype"),
])
def test_bad_signal_is_a_typed_error(bad: np.ndarray, field: str) -> None:
    with pytest.raises(SignalError) as info:
        delineate(bad, 500)
    assert info.value.field == field and isinstance(info.value, ValueError)


def test_nan_names_the_lead() -> None:
    x, fs, _ = synth.synthetic_ecg()
    x[7, 123] = np.nan
    with pytest.raises(SignalError, match="lead V2 at sample 123") as info:
        delineate(x, fs)
    assert info.value.field == "signal.values"


@pytest.mark.parametrize("fs", [0, -500, 50, 499.5, float("nan"), "fast"])
def test_bad_fs(fs: object) -> None:
    with pytest.raises(SignalError) as info:
        delineate(np.zeros((12, 5000)), fs)  # type: ignore[arg-type]
    assert info.value.field == "fs"


# --- LUDB: expert annotations -------------------------------------------------------------

@pytest.mark.parametrize("rec", [1, 2, 21, 38, 60])
def test_ludb_beat_count_matches_experts(ludb: Path, rec: int) -> None:
    """Our beats inside the annotated span match the expert QRS count (+-1)."""
    x, fs = read_wfdb(ludb / str(rec), 500, 5000)
    d = delineate(x, fs)
    beats, (lo, hi) = expert_beats(ludb / str(rec), "ii")
    inside = d.r_peaks[(d.r_peaks >= lo) & (d.r_peaks <= hi)]
    assert abs(inside.size - len(beats)) <= 1
    # every expert beat has one of ours within 100 ms
    for b in beats:
        assert np.min(np.abs(d.r_peaks - b["r"])) <= 50


@pytest.mark.parametrize("rec", [1, 2, 60])
def test_ludb_intervals_close_to_experts(ludb: Path, rec: int) -> None:
    """Per-record median QRS, PR and QT in lead II within 20/25/40 ms of the experts'."""
    x, fs = read_wfdb(ludb / str(rec), 500, 5000)
    d = delineate(x, fs)
    beats, _ = expert_beats(ludb / str(rec), "ii")
    mine: dict[str, list[float]] = {"qrs": [], "pr": [], "qt": []}
    ref: dict[str, list[float]] = {"qrs": [], "pr": [], "qt": []}
    for b in beats:
        j = int(np.argmin(np.abs(d.r_peaks - b["r"])))
        pairs = {"qrs": (d.qrs_off[j, 1] - d.qrs_on[j, 1], b["qrs_off"] - b["qrs_on"]),
                 "pr": (d.qrs_on[j, 1] - d.p_on[j, 1], b["qrs_on"] - b["p_on"]),
                 "qt": (d.t_off[j, 1] - d.qrs_on[j, 1], b["t_off"] - b["qrs_on"])}
        for key, (m, e) in pairs.items():
            if np.isfinite(m) and np.isfinite(e):
                mine[key].append(m * 2.0)
                ref[key].append(e * 2.0)
    for key, tol in (("qrs", 20.0), ("pr", 25.0), ("qt", 40.0)):
        assert len(mine[key]) >= 0.8 * len(beats), key
        assert abs(np.median(mine[key]) - np.median(ref[key])) <= tol, key
