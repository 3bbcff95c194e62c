"""GEM-style grounding features: 14 per-beat x per-lead measurement sequences.

GEM ("FeatureDB") grounds ECG interpretations in per-heartbeat measurements of every lead.
:func:`grounding_features` computes the same 14 sequences from :func:`delineate`'s fiducial
points. Every sequence is a float64 array of shape ``(n_beats, 12)`` (lead order
:data:`ecglm.data.records.LEADS`), NaN where the quantity is undefined (no P wave, first
beat has no preceding RR interval, ...).

Definitions (beat ``j``, lead ``l``; times from fiducial samples, amplitudes from the
band-passed signal relative to the beat's isoelectric level, i.e. the median of the 30 ms
before QRS onset):

==============  =====  =================================================================
feature         unit   definition
==============  =====  =================================================================
heart_rate      bpm    60000 / mean of the available neighbouring RR intervals (rr1, rr2)
rr1             ms     R(j) - R(j-1), interval before the beat (NaN for the first beat)
rr2             ms     R(j+1) - R(j), interval after the beat (NaN for the last beat)
p_amplitude     mV     signed P apex deflection
p_duration      ms     P offset - P onset
pr_interval     ms     QRS onset - P onset
qrs_amplitude   mV     peak-to-peak amplitude inside the QRS (0.5-40 Hz signal)
qrs_duration    ms     QRS offset - QRS onset (multi-lead boundaries)
t_amplitude     mV     signed T apex deflection (negative = inverted)
t_duration      ms     T end - T onset
st_duration     ms     T onset - QRS offset (J point)
st_form         code   index into :data:`ST_FORMS` (see :func:`st_form_code`)
qt_interval     ms     T end - QRS onset
qtc_interval    ms     Bazett: QT / sqrt(RR in s), RR = rr1 (rr2 for the first beat)
==============  =====  =================================================================

RR-derived features are the same in every lead (the R peaks are shared); all other features
are NaN in a flat (disconnected) lead.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

import numpy as np

from ecglm.features.delineation import Delineation, DelineationParams, delineate
from ecglm.features.validation import SignalError, check_signal

FEATURE_NAMES: tuple[str, ...] = (
    "heart_rate", "rr1", "rr2", "p_amplitude", "p_duration", "pr_interval", "qrs_amplitude",
    "qrs_duration", "t_amplitude", "t_duration", "st_duration", "st_form", "qt_interval",
    "qtc_interval",
)
"""The 14 GEM grounding features, in GEM's order."""

FEATURE_UNITS: Mapping[str, str] = MappingProxyType({
    "heart_rate": "bpm", "rr1": "ms", "rr2": "ms", "p_amplitude": "mV", "p_duration": "ms",
    "pr_interval": "ms", "qrs_amplitude": "mV", "qrs_duration": "ms", "t_amplitude": "mV",
    "t_duration": "ms", "st_duration": "ms", "st_form": "code", "qt_interval": "ms",
    "qtc_interval": "ms", "st_deviation": "mV",
})
"""Unit of every feature (``st_form`` is a categorical code into :data:`ST_FORMS`)."""

ST_FORMS: tuple[str, ...] = (
    "isoelectric", "elevated", "depressed_upsloping", "depressed_horizontal",
    "depressed_downsloping",
)
"""ST form names; ``st_form`` holds the index (0-4) as a float, NaN when not measurable."""

ST_ELEVATION_MV = 0.1
"""ST elevation threshold (mV) in all leads except V2-V3."""

ST_ELEVATION_V2_V3_MV = 0.2
"""ST elevation threshold (mV) in V2 and V3, where a higher J point is normal."""

ST_DEPRESSION_MV = 0.05
"""ST depression threshold (mV)."""

ST_SLOPE_MV_PER_S = 0.5
"""ST slope (mV/s, J+20 to J+80 ms) beyond which a depressed ST is up- or down-sloping."""

_V2_V3 = (7, 8)


@dataclass(frozen=True)
class GroundingFeatures:
    """The 14 grounding sequences of one ECG, each ``(n_beats, 12)`` float64 (see module doc).

    Attributes:
        fs: sampling rate in Hz.
        n_samples: length ``T`` of the analysed ECG.
        r_peaks: ``(n_beats,)`` int64 R-peak samples shared by all leads.
        st_deviation: ``(n_beats, 12)`` ST level at J+60 ms (J+40 ms above 100 bpm) minus
            the isoelectric level, mV; not one of the 14, kept for ST form and summaries.
    """

    fs: int
    n_samples: int
    r_peaks: np.ndarray
    heart_rate: np.ndarray
    rr1: np.ndarray
    rr2: np.ndarray
    p_amplitude: np.ndarray
    p_duration: np.ndarray
    pr_interval: np.ndarray
    qrs_amplitude: np.ndarray
    qrs_duration: np.ndarray
    t_amplitude: np.ndarray
    t_duration: np.ndarray
    st_duration: np.ndarray
    st_form: np.ndarray
    qt_interval: np.ndarray
    qtc_interval: np.ndarray
    st_deviation: np.ndarray

    @property
    def n_beats(self) -> int:
        """Number of beats (rows of every sequence)."""
        return int(self.r_peaks.shape[0])

    def as_dict(self) -> dict[str, np.ndarray]:
        """The 14 sequences keyed by :data:`FEATURE_NAMES` (each ``(n_beats, 12)``)."""
        return {name: getattr(self, name) for name in FEATURE_NAMES}

    def stack(self) -> np.ndarray:
        """All 14 sequences as one ``(14, n_beats, 12)`` float64 array."""
        return np.stack([getattr(self, name) for name in FEATURE_NAMES]) if self.n_beats else \
            np.zeros((len(FEATURE_NAMES), 0, 12))


def st_form_code(level_mv: float, slope_mv_per_s: float, lead: int) -> float:
    """ST form code (index into :data:`ST_FORMS`) from the ST level and slope.

    Elevated: ``level >= ST_ELEVATION_MV`` (``ST_ELEVATION_V2_V3_MV`` in V2/V3); depressed:
    ``level <= -ST_DEPRESSION_MV``, then up-/down-sloping when ``|slope| >=
    ST_SLOPE_MV_PER_S``, else horizontal; otherwise isoelectric. NaN inputs give NaN.
    """
    if not (np.isfinite(level_mv) and np.isfinite(slope_mv_per_s)):
        return np.nan
    elevation = ST_ELEVATION_V2_V3_MV if lead in _V2_V3 else ST_ELEVATION_MV
    if level_mv >= elevation:
        return float(ST_FORMS.index("elevated"))
    if level_mv <= -ST_DEPRESSION_MV:
        if slope_mv_per_s >= ST_SLOPE_MV_PER_S:
            return float(ST_FORMS.index("depressed_upsloping"))
        if slope_mv_per_s <= -ST_SLOPE_MV_PER_S:
            return float(ST_FORMS.index("depressed_downsloping"))
        return float(ST_FORMS.index("depressed_horizontal"))
    return float(ST_FORMS.index("isoelectric"))


def _sample_at(x: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """``x[lead, pos[beat, lead]]`` for ``(n, 12)`` float positions (NaN stays NaN)."""
    out = np.full(pos.shape, np.nan)
    ok = np.isfinite(pos)
    if ok.any():
        idx = np.clip(np.rint(pos[ok]).astype(np.int64), 0, x.shape[1] - 1)
        leads = np.nonzero(ok)[1]
        out[ok] = x[leads, idx]
    return out


def _rr_features(r: np.ndarray, fs: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(heart_rate bpm, rr1 ms, rr2 ms)`` per beat, each ``(n_beats,)``."""
    n = r.size
    rr = np.diff(r).astype(np.float64) * 1000.0 / fs
    rr1 = np.full(n, np.nan)
    rr2 = np.full(n, np.nan)
    if n > 1:
        rr1[1:], rr2[:-1] = rr, rr
    both = np.stack([rr1, rr2])
    count = np.isfinite(both).sum(axis=0)
    mean_rr = np.full(n, np.nan)
    mean_rr[count > 0] = np.nansum(both, axis=0)[count > 0] / count[count > 0]
    return 60000.0 / mean_rr, rr1, rr2


def _st_measures(d: Delineation, heart_rate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ST deviation (mV) and slope (mV/s), each ``(n_beats, 12)``."""
    fs = d.fs
    after_j = np.where(heart_rate > 100.0, 40.0, 60.0)[:, None] * fs / 1000.0
    j_point = d.qrs_off
    x = d.filtered.narrow
    level = _sample_at(x, j_point + after_j) - d.baseline
    early = _sample_at(x, j_point + 20.0 * fs / 1000.0)
    late = _sample_at(x, j_point + 80.0 * fs / 1000.0)
    slope = (late - early) / 0.060
    # the ST samples must lie inside the signal
    outside = (j_point + 80.0 * fs / 1000.0) > (d.n_samples - 1)
    level[outside], slope[outside] = np.nan, np.nan
    return level, slope


def features_from_delineation(d: Delineation) -> GroundingFeatures:
    """Compute the 14 grounding sequences from an existing :class:`Delineation`."""
    ms = 1000.0 / d.fs
    hr, rr1, rr2 = _rr_features(d.r_peaks, d.fs)
    qrs_amp = np.full(d.qrs_on.shape, np.nan)
    for j in range(d.n_beats):
        if not d.lead_ok.any():
            continue
        on, off = d.qrs_on[j, d.lead_ok][0], d.qrs_off[j, d.lead_ok][0]  # global bounds
        if np.isfinite(on) and np.isfinite(off):
            seg = d.filtered.wide[:, int(on):int(off) + 1]
            qrs_amp[j] = np.where(d.lead_ok, seg.max(axis=1) - seg.min(axis=1), np.nan)
    qt = (d.t_off - d.qrs_on) * ms
    rr_for_qtc = np.where(np.isfinite(rr1), rr1, rr2)[:, None] / 1000.0
    with np.errstate(invalid="ignore", divide="ignore"):
        qtc = qt / np.sqrt(rr_for_qtc)
    st_level, st_slope = _st_measures(d, hr)
    st_form = np.full(d.qrs_on.shape, np.nan)
    for j in range(d.n_beats):
        for lead in range(12):
            st_form[j, lead] = st_form_code(st_level[j, lead], st_slope[j, lead], lead)
    return GroundingFeatures(
        fs=d.fs, n_samples=d.n_samples, r_peaks=d.r_peaks,
        heart_rate=np.repeat(hr[:, None], 12, axis=1), rr1=np.repeat(rr1[:, None], 12, axis=1),
        rr2=np.repeat(rr2[:, None], 12, axis=1),
        p_amplitude=_sample_at(d.filtered.narrow, d.p_peak) - d.baseline,
        p_duration=(d.p_off - d.p_on) * ms,
        pr_interval=(d.qrs_on - d.p_on) * ms,
        qrs_amplitude=qrs_amp,
        qrs_duration=(d.qrs_off - d.qrs_on) * ms,
        t_amplitude=_sample_at(d.filtered.narrow, d.t_peak) - d.baseline,
        t_duration=(d.t_off - d.t_on) * ms,
        st_duration=(d.t_on - d.qrs_off) * ms,
        st_form=st_form, qt_interval=qt, qtc_interval=qtc, st_deviation=st_level,
    )


def grounding_features(signal: np.ndarray, fs: float, delineation: Delineation | None = None,
                       params: DelineationParams = DelineationParams()) -> GroundingFeatures:
    """GEM's 14 grounding sequences of a 12-lead ECG.

    Args:
        signal: ``(12, T)`` ECG in mV (lead order :data:`ecglm.data.records.LEADS`).
        fs: sampling rate in Hz.
        delineation: a :func:`delineate` result for this very signal, to skip recomputing.
        params: delineation thresholds (ignored when ``delineation`` is given).

    Returns:
        :class:`GroundingFeatures`; every sequence ``(n_beats, 12)``.

    Raises:
        SignalError: unusable input (shape, NaNs, length, ``fs``) or a ``delineation`` that
            does not belong to ``signal`` (field ``delineation``).
    """
    if delineation is None:
        return features_from_delineation(delineate(signal, fs, params))
    _, rate = check_signal(signal, fs)
    if delineation.fs != rate or delineation.n_samples != np.shape(signal)[1]:
        raise SignalError("delineation",
                          f"was computed for {delineation.n_samples} samples at "
                          f"{delineation.fs} Hz, signal has {np.shape(signal)[1]} at {rate} Hz")
    return features_from_delineation(delineation)

