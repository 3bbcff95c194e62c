"""Multi-lead ECG delineation: R peaks, QRS boundaries, and per-lead P and T waves.

Method (all times in samples of the input rate ``fs``):

1. Filter every lead twice with zero-phase Butterworth band-passes: a *wide* band
   (0.5-40 Hz) for the QRS and a *narrow* band (0.5-15 Hz) for P and T waves.
2. Spatial velocity ``sv(t) = sqrt(sum_leads (dx/dt)^2)`` (smoothed derivative of the wide
   signal, mV/ms) combines all 12 leads into one QRS-dominated curve. R peaks are detected
   once on it with neurokit2's gradient detector (``ecg_findpeaks(method="neurokit")``) and
   moved to the maximum of the spatial magnitude ``sqrt(sum_leads x^2)`` within +-60 ms;
   they are shared by all leads, so a tall T wave in one lead cannot be taken for an R wave.
3. QRS onset/offset are multi-lead (global) boundaries, shared by all leads: walking out
   from the steep core of the complex until ``sv`` falls below a fraction of its peak.
4. Per lead and beat, the isoelectric level is the median of the narrow signal in the
   30 ms before QRS onset. The P wave is the largest deflection from it (after removing
   the linear trend from the window start, e.g. the previous T tail) in the 300 ms before
   QRS onset; its onset is where the rising slope falls below a fraction of its steepest
   value. The T wave is the largest deflection after QRS offset; its end is the tangent
   method (steepest descending slope extended to the baseline). P offset and T onset are
   knee points (furthest below the chord from the apex to the flat segment).
5. Leads where the P wave is too small to measure take the median P timing of the leads
   where it is seen (if at least 3), as P waves happen at the same time everywhere. A flat
   (disconnected) lead gets no fiducials at all.

Against LUDB's expert annotations (``jobs/bench/delineation.py``, records 1-100) this is
inside the median-error targets for QRS duration, PR and QT. The QRS thresholds were chosen
on LUDB records 1-20 and the P edge fraction on records 1-50; the benchmark also reports
records 51-100 alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.signal import butter, fftconvolve, sosfiltfilt

from ecglm.features.validation import check_signal

MIN_SECONDS = 2.0
"""Shortest ECG accepted by :func:`delineate` (seconds)."""


@dataclass(frozen=True)
class DelineationParams:
    """Tunable constants of :func:`delineate` (times in ms, amplitudes in mV, bands in Hz)."""

    wide_band_hz: tuple[float, float] = (0.5, 40.0)
    narrow_band_hz: tuple[float, float] = (0.5, 15.0)
    slope_smooth_ms: float = 8.0
    r_refine_ms: float = 60.0
    min_rr_ms: float = 200.0
    min_beat_fraction: float = 0.3
    qrs_before_ms: float = 150.0
    qrs_after_ms: float = 180.0
    qrs_core_ms: float = 80.0
    qrs_core_fraction: float = 0.3
    qrs_onset_fraction: float = 0.05
    qrs_offset_fraction: float = 0.07
    baseline_ms: float = 30.0
    p_search_ms: float = 300.0
    p_gap_ms: float = 20.0
    p_min_amplitude_mv: float = 0.03
    p_edge_fraction: float = 0.4
    p_min_leads: int = 3
    t_gap_ms: float = 40.0
    st_min_ms: float = 20.0
    t_max_ms: float = 650.0
    t_rr_fraction: float = 0.75
    t_min_amplitude_mv: float = 0.03
    flat_lead_mv: float = 0.02


@dataclass(frozen=True)
class FilteredECG:
    """Band-passed copies of a ``(12, T)`` ECG (mV) and their smoothed slopes (mV/ms)."""

    wide: np.ndarray
    narrow: np.ndarray
    wide_slope: np.ndarray
    narrow_slope: np.ndarray


@dataclass(frozen=True)
class Delineation:
    """Fiducial points of every beat in every lead.

    All positions are sample indices at ``fs`` (float, possibly fractional; NaN where a wave
    was not found). Per-lead arrays have shape ``(n_beats, 12)`` in lead order
    :data:`ecglm.data.records.LEADS`; ``qrs_on``/``qrs_off`` are global (identical columns).
    A flat lead (``lead_ok`` False: lead off or disconnected) has NaN in every column.

    Attributes:
        fs: sampling rate in Hz.
        n_samples: length ``T`` of the delineated signal.
        r_peaks: ``(n_beats,)`` int64 shared R-peak samples, increasing.
        baseline: ``(n_beats, 12)`` isoelectric level of each beat in mV (narrow band).
        lead_ok: ``(12,)`` bool, False for flat leads (peak-to-peak under
            ``DelineationParams.flat_lead_mv``).
        filtered: the filtered signals the points refer to.
    """

    fs: int
    n_samples: int
    r_peaks: np.ndarray
    qrs_on: np.ndarray
    qrs_off: np.ndarray
    p_on: np.ndarray
    p_peak: np.ndarray
    p_off: np.ndarray
    t_on: np.ndarray
    t_peak: np.ndarray
    t_off: np.ndarray
    baseline: np.ndarray
    lead_ok: np.ndarray
    filtered: FilteredECG = field(repr=False)

    @property
    def n_beats(self) -> int:
        """Number of detected beats."""
        return int(self.r_peaks.shape[0])


def _samples(ms: float, fs: int) -> int:
    return int(round(ms * fs / 1000.0))


def filter_ecg(signal: np.ndarray, fs: int, params: DelineationParams = DelineationParams()
               ) -> FilteredECG:
    """Band-pass ``signal`` ``(12, T)`` mV at ``fs`` Hz (see module doc, step 1)."""

    def band(lo_hi: tuple[float, float]) -> np.ndarray:
        lo, hi = lo_hi  # fs >= 100 Hz (validated), so hi is clipped below Nyquist
        sos = butter(2, [lo, min(hi, 0.45 * fs)], btype="band", fs=fs, output="sos")
        return sosfiltfilt(sos, signal, axis=1)

    wide = band(params.wide_band_hz)
    narrow = band(params.narrow_band_hz)
    k = max(1, _samples(params.slope_smooth_ms, fs))
    kernel = np.full((1, k), 1.0 / k)
    per_ms = fs / 1000.0
    wide_slope = fftconvolve(np.gradient(wide, axis=1) * per_ms, kernel, mode="same", axes=1)
    narrow_slope = np.gradient(narrow, axis=1) * per_ms
    return FilteredECG(wide, narrow, wide_slope, narrow_slope)


def detect_r_peaks(filtered: FilteredECG, fs: int, params: DelineationParams = DelineationParams()
                   ) -> np.ndarray:
    """Shared R peaks ``(n_beats,)`` int64 from all 12 leads (see module doc, step 2)."""
    from neurokit2 import ecg_findpeaks  # slow import (~1.5 s): only when needed

    sv = np.sqrt((filtered.wide_slope ** 2).sum(axis=0))
    if not np.any(sv > 1e-6):  # flat input: no beats
        return np.zeros(0, dtype=np.int64)
    found = np.asarray(ecg_findpeaks(sv, sampling_rate=fs, method="neurokit")["ECG_R_Peaks"])
    magnitude = np.sqrt((filtered.wide ** 2).sum(axis=0))
    half = _samples(params.r_refine_ms, fs)
    refined: list[int] = []
    strength: list[float] = []
    for p in found.astype(np.int64):
        lo, hi = max(0, int(p) - half), min(sv.size, int(p) + half + 1)
        peak = lo + int(np.argmax(magnitude[lo:hi]))
        slope = float(sv[lo:hi].max())
        if refined and peak - refined[-1] < _samples(params.min_rr_ms, fs):
            if magnitude[peak] > magnitude[refined[-1]]:
                refined[-1], strength[-1] = peak, max(slope, strength[-1])
            continue
        refined.append(peak)
        strength.append(slope)
    if not refined:
        return np.zeros(0, dtype=np.int64)
    # the detector's adaptive threshold sinks during long RR intervals and can fire on
    # noise; a true QRS has a multi-lead slope comparable to the record's typical beat
    keep = np.asarray(strength) >= params.min_beat_fraction * float(np.median(strength))
    return np.asarray(refined, dtype=np.int64)[keep]


def _qrs_bounds(sv: np.ndarray, r: int, lo: int, hi: int, fs: int, params: DelineationParams
                ) -> tuple[float, float]:
    """Global QRS onset/offset (samples) around R peak ``r`` searched within ``[lo, hi)``."""
    s = sv[lo:hi]
    core = _samples(params.qrs_core_ms, fs)
    c0, c1 = max(0, r - lo - core), min(s.size, r - lo + core + 1)
    peak = float(s[c0:c1].max()) if c1 > c0 else 0.0
    if peak <= 0.0:
        return np.nan, np.nan
    steep = c0 + np.flatnonzero(s[c0:c1] > params.qrs_core_fraction * peak)
    on = int(steep[0])
    while on > 0 and s[on] > params.qrs_onset_fraction * peak:
        on -= 1
    off = int(steep[-1])
    while off < s.size - 1 and s[off] > params.qrs_offset_fraction * peak:
        off += 1
    onset = float(lo + on) if s[on] <= params.qrs_onset_fraction * peak else np.nan
    offset = float(lo + off) if s[off] <= params.qrs_offset_fraction * peak else np.nan
    return onset, offset


def _edge_before(slope: np.ndarray, peak: int, fraction: float) -> float:
    """Wave onset: walk back from the steepest rising slope before ``peak`` (index or NaN)."""
    if peak < 1:
        return np.nan
    up = int(np.argmax(slope[:peak + 1]))
    if slope[up] <= 0:
        return np.nan
    i = up
    while i > 0 and slope[i] > fraction * slope[up]:
        i -= 1
    return float(i)


def _knee(y: np.ndarray, a: int, b: int) -> float:
    """Index in ``[a, b]`` where ``y`` lies furthest below the chord from ``a`` to ``b``.

    ``y`` is oriented so the wave apex is positive; the knee is where a flat segment turns
    into the wave (or the wave flattens out), the usual visual boundary.
    """
    if b - a < 2:
        return np.nan
    chord = np.linspace(y[a], y[b], b - a + 1)
    return float(a + int(np.argmax(chord - y[a:b + 1])))


def _p_wave(x: np.ndarray, dx: np.ndarray, lo: int, qon: int, base: float, fs: int,
            params: DelineationParams) -> tuple[float, float, float]:
    """P onset/peak/offset (samples) of one lead in ``[lo, qon)``; NaNs when no P wave."""
    stop = qon - _samples(params.p_gap_ms, fs)
    if stop - lo < _samples(60.0, fs):
        return np.nan, np.nan, np.nan
    seg = x[lo:qon] - base
    head = seg[:stop - lo]
    trend = np.linspace(head[0], 0.0, seg.size)[:head.size]
    pk = int(np.argmax(np.abs(head - trend)))
    if pk == 0 or pk >= head.size - 1 or abs(head[pk] - trend[pk]) < params.p_min_amplitude_mv:
        return np.nan, np.nan, np.nan
    sign = np.sign(seg[pk])
    on = _edge_before(dx[lo:qon] * sign, pk, params.p_edge_fraction)
    off = _knee(seg * sign, pk, stop - lo)
    return lo + on, float(lo + pk), lo + off


def _t_wave(x: np.ndarray, dx: np.ndarray, qoff: int, start: int, stop: int, base: float,
            fs: int, params: DelineationParams) -> tuple[float, float, float]:
    """T onset/peak/end (samples) of one lead; peak searched in ``[start, stop)``."""
    if stop - start < _samples(80.0, fs):
        return np.nan, np.nan, np.nan
    seg = x[qoff:stop] - base
    first = start - qoff
    pk = first + int(np.argmax(np.abs(seg[first:])))
    sign = np.sign(seg[pk])
    if pk >= seg.size - 1 or pk == first or abs(seg[pk]) < params.t_min_amplitude_mv:
        return np.nan, np.nan, np.nan
    slope = dx[qoff:stop] * sign  # mV/ms, positive towards the T apex
    on = _knee(seg * sign, min(pk - 1, _samples(params.st_min_ms, fs)), pk)
    steepest = pk + int(np.argmin(slope[pk:]))
    fall = -slope[steepest] * 1000.0 / fs  # mV per sample back towards baseline
    if fall <= 0:
        return qoff + on, float(qoff + pk), np.nan
    height = max(0.0, float(seg[steepest] * sign))
    end = min(steepest + height / fall, seg.size - 1.0)
    return qoff + on, float(qoff + pk), qoff + end


def _share_p_wave(pts: dict[str, np.ndarray], beat: int, min_leads: int, lead_ok: np.ndarray
                  ) -> None:
    """Give leads without a measurable P wave the median P of the other leads (in place).

    Only when at least ``min_leads`` leads show a P wave in this beat: a P wave too small
    to measure in one lead (often V1-V3) still happens at the same time as elsewhere.
    """
    found = np.isfinite(pts["p_peak"][beat]) & np.isfinite(pts["p_on"][beat])
    missing = ~found & lead_ok
    if found.sum() < min_leads or not missing.any():
        return
    for key in ("p_on", "p_peak", "p_off"):
        row = pts[key][beat]
        row[missing] = float(np.nanmedian(row[found])) if np.isfinite(row[found]).any() \
            else np.nan


def delineate(signal: np.ndarray, fs: float, params: DelineationParams = DelineationParams()
              ) -> Delineation:
    """Delineate a 12-lead ECG.

    Args:
        signal: ``(12, T)`` ECG in mV, lead order :data:`ecglm.data.records.LEADS`,
            at least :data:`MIN_SECONDS` long.
        fs: sampling rate in Hz.
        params: thresholds (defaults tuned on LUDB).

    Returns:
        :class:`Delineation` (zero beats for a flat line).

    Raises:
        SignalError: wrong shape, too short, non-finite values or a bad ``fs``.
    """
    x, rate = check_signal(signal, fs, min_seconds=MIN_SECONDS)
    filt = filter_ecg(x, rate, params)
    r = detect_r_peaks(filt, rate, params)
    n, t_len = r.size, x.shape[1]
    sv = np.sqrt((filt.wide_slope ** 2).sum(axis=0))
    lead_ok = np.ptp(filt.wide, axis=1) >= params.flat_lead_mv
    pts = {k: np.full((n, 12), np.nan) for k in
           ("qrs_on", "qrs_off", "p_on", "p_peak", "p_off", "t_on", "t_peak", "t_off", "baseline")}
    for j, rp in enumerate(r.tolist()):
        prev_r = r[j - 1] if j > 0 else None
        next_r = r[j + 1] if j + 1 < n else None
        lo = max(0, rp - _samples(params.qrs_before_ms, rate))
        hi = min(t_len, rp + _samples(params.qrs_after_ms, rate) + 1)
        if prev_r is not None:
            lo = max(lo, (prev_r + rp) // 2)
        if next_r is not None:
            hi = min(hi, (rp + next_r) // 2)
        qon, qoff = _qrs_bounds(sv, rp, lo, hi, rate, params)
        pts["qrs_on"][j, lead_ok], pts["qrs_off"][j, lead_ok] = qon, qoff
        if np.isnan(qon) or np.isnan(qoff):
            continue
        qon_i, qoff_i = int(qon), int(qoff)
        b0 = max(0, qon_i - _samples(params.baseline_ms, rate))
        rr_next = (next_r - rp) if next_r is not None else (rp - prev_r if prev_r is not None
                                                             else rate)
        t_start = qoff_i + _samples(params.t_gap_ms, rate)
        t_stop = min(t_len, rp + int(min(params.t_rr_fraction * rr_next,
                                         _samples(params.t_max_ms, rate))))
        for lead in np.flatnonzero(lead_ok).tolist():
            xl, dl = filt.narrow[lead], filt.narrow_slope[lead]
            base = float(np.median(xl[b0:qon_i + 1]))
            pts["baseline"][j, lead] = base
            p_lo = max(0, qon_i - _samples(params.p_search_ms, rate))
            if prev_r is not None:
                prev_end = pts["t_off"][j - 1, lead]
                limit = prev_end if np.isfinite(prev_end) else prev_r + 0.55 * (rp - prev_r)
                p_lo = max(p_lo, int(np.ceil(limit)))
            (pts["p_on"][j, lead], pts["p_peak"][j, lead],
             pts["p_off"][j, lead]) = _p_wave(xl, dl, p_lo, qon_i, base, rate, params)
            (pts["t_on"][j, lead], pts["t_peak"][j, lead],
             pts["t_off"][j, lead]) = _t_wave(xl, dl, qoff_i, t_start, t_stop, base, rate, params)
        _share_p_wave(pts, j, params.p_min_leads, lead_ok)
    return Delineation(fs=rate, n_samples=t_len, r_peaks=r, lead_ok=lead_ok, filtered=filt,
                       **pts)
