"""Synthetic 12-lead ECGs with known fiducial points (overlapping Hann-window waves).

A wave is ``A * 0.5 * (1 - cos(2 pi (t - onset) / D))`` on ``[onset, onset + D]``, 0
elsewhere, so its onset and offset are exact. Per beat, with ``q`` the global QRS onset:

* P: 100 ms, ends 60 ms before ``q`` (global PR 160 ms);
* QRS in lead ``l`` (shifted by ``QRS_SHIFT_MS[l]`` in 0..6 ms, as real leads differ a
  little): Q [0, 30] ms, R [10, 70] ms, S [55, 100] ms with per-lead weights, so the global
  QRS runs from ``q`` to ``q + 106`` ms;
* T: 200 ms, starting 100 ms after the latest QRS end (global QT 406 ms).

Leads differ in morphology (weights) so that, as in real ECGs, no instant inside the QRS is
flat in all 12 leads at once.
"""

from __future__ import annotations

import numpy as np

FS = 500
P_MS, PR_MS = 100.0, 160.0
QRS_SHIFT_MS = np.array([0.0, 2.0, 4.0, 1.0, 3.0, 5.0, 6.0, 4.0, 2.0, 0.0, 1.0, 3.0])
QRS_MS = 100.0 + QRS_SHIFT_MS.max()
ST_MS, T_MS = 100.0, 200.0
QT_MS = QRS_MS + ST_MS + T_MS
# per-lead amplitudes (mV) of P, Q, R, S, T in LEADS order (I II III aVR aVL aVF V1..V6)
P_MV = np.array([0.10, 0.15, 0.06, -0.12, 0.05, 0.10, 0.08, 0.10, 0.10, 0.10, 0.10, 0.10])
Q_MV = np.array([-0.10, -0.05, -0.02, 0.0, -0.10, -0.03, 0.0, 0.0, 0.0, -0.05, -0.10, -0.10])
R_MV = np.array([0.9, 1.2, 0.4, 0.2, 0.5, 0.8, 0.3, 0.6, 0.9, 1.3, 1.4, 1.1])
S_MV = np.array([-0.2, -0.2, -0.3, -0.9, -0.1, -0.2, -1.0, -1.4, -0.8, -0.4, -0.2, -0.1])
T_MV = np.array([0.25, 0.30, 0.10, -0.25, 0.10, 0.20, 0.10, 0.40, 0.45, 0.40, 0.35, 0.25])


def _hann(t: np.ndarray, onset: float, dur: float, amp: float) -> np.ndarray:
    u = (t - onset) / dur
    return np.where((u >= 0) & (u <= 1), amp * 0.5 * (1 - np.cos(2 * np.pi * u)), 0.0)


def lead_beat(t_ms: np.ndarray, lead: int, q: float, st_shift_mv: float = 0.0) -> np.ndarray:
    """One beat of ``lead`` (mV) at times ``t_ms`` with global QRS onset ``q`` (ms)."""
    d = q + QRS_SHIFT_MS[lead]
    y = _hann(t_ms, q - PR_MS, P_MS, P_MV[lead])
    y += _hann(t_ms, d, 30.0, Q_MV[lead]) + _hann(t_ms, d + 10.0, 60.0, R_MV[lead])
    y += _hann(t_ms, d + 55.0, 45.0, S_MV[lead])
    j = q + QRS_MS
    y += _hann(t_ms, j + ST_MS, T_MS, T_MV[lead])
    if st_shift_mv:
        end = j + ST_MS + T_MS
        y += st_shift_mv * np.clip((t_ms - j) / 10.0, 0, 1) * np.clip((end - t_ms) / 10.0, 0, 1)
    return y


def synthetic_ecg(seconds: float = 10.0, rr_ms: float | list[float] = 800.0,
                  first_qrs_ms: float = 400.0,
                  noise_mv: float = 0.005, seed: int = 0, st_shift_mv: np.ndarray | None = None
                  ) -> tuple[np.ndarray, int, np.ndarray]:
    """``(signal (12, T) float32 mV, fs Hz, global QRS onsets in ms)``.

    ``rr_ms``: one RR interval (regular rhythm) or a list cycled beat after beat.

    ``st_shift_mv`` ``(12,)`` raises (or lowers) the ST segment of each lead by a constant
    from J to the end of T, with 10 ms ramps.
    """
    t = np.arange(int(round(seconds * FS))) * 1000.0 / FS
    cycle = np.atleast_1d(np.asarray(rr_ms, dtype=float))
    steps = np.resize(cycle, int(seconds * 1000.0 / cycle.min()) + 1)
    onsets = first_qrs_ms + np.concatenate(([0.0], np.cumsum(steps)))
    onsets = onsets[onsets < seconds * 1000.0 - QT_MS]
    shifts = np.zeros(12) if st_shift_mv is None else np.asarray(st_shift_mv, dtype=float)
    x = np.zeros((12, t.size))
    for lead in range(12):
        for q in onsets:
            x[lead] += lead_beat(t, lead, q, float(shifts[lead]))
    x += np.random.default_rng(seed).normal(0.0, noise_mv, x.shape)
    return x.astype(np.float32), FS, onsets
