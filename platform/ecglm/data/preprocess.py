"""The signal path every ECG takes into the model: shard building (through
:func:`ecglm.data.normalize.normalize`) and serving (``serving.validation.to_model_signal``)
both call :func:`preprocess`, so a served ECG gets exactly the filters, resampling and crop/pad
policy of the training records.

Steps, each a field of :class:`ecglm.config.schema.NormalizeConfig` (``data.normalize``):

1. optional baseline (high-pass), band-pass and powerline notch filters at the source rate;
2. anti-aliased resampling to ``data.fs`` (polyphase FIR or FFT);
3. crop (``start``/``center``) or pad (``zero``/``edge``) to ``data.n_samples``.

Arrays are ``(n_leads, T)`` in mV, rates in Hz. Storage: shards keep the result as int16
microvolts (:func:`ecglm.data.sharding.encode_signals`), so what training reads differs from
:func:`preprocess`'s float32 output by at most 0.5 uV (plus clipping at +-32.767 mV).
"""

from __future__ import annotations

import math
from fractions import Fraction
from types import ModuleType
from typing import Optional

import numpy as np

from ecglm.config.schema import NormalizeConfig
from ecglm.data.canonical import LEADS

NOTCH_Q = 30.0
"""Quality factor of the powerline notch (bandwidth = f0 / Q, ~1.7 Hz at 50 Hz)."""

__all__ = ["NOTCH_Q", "apply_filters", "fit_to_length", "preprocess", "resample"]


def _scipy_signal() -> ModuleType:
    """:mod:`scipy.signal`, imported on first use on purpose: it takes ~0.7-3 s to import and
    most records (same rate, no filters) never need it (every Ray Data reader imports this
    module)."""
    from scipy import signal  # deferred heavy import, see docstring

    return signal


def resample(x: np.ndarray, fs: float, target_fs: int, method: str = "polyphase") -> np.ndarray:
    """Anti-aliased resampling of ``x`` ``(n, T)`` from ``fs`` Hz to ``target_fs`` Hz.

    ``polyphase``: :func:`scipy.signal.resample_poly` with the rational ratio closest to
    ``target_fs / fs`` (denominator <= 1000; Kaiser-windowed low-pass FIR, linear edge padding);
    ``fft``: :func:`scipy.signal.resample` (ideal low-pass, assumes periodicity).
    Output length is ``round(T * target_fs / fs)``.
    """
    if math.isclose(fs, target_fs):
        return x
    sps = _scipy_signal()

    n_out = int(round(x.shape[1] * target_fs / fs))
    if method == "fft":
        return sps.resample(x, n_out, axis=1)
    if method != "polyphase":
        raise ValueError(f"data.normalize.resample_method: expected 'polyphase' or 'fft', "
                         f"got {method!r}")
    ratio = Fraction(target_fs) / Fraction(fs).limit_denominator(1000)
    y = sps.resample_poly(x, ratio.numerator, ratio.denominator, axis=1, padtype="line")
    if y.shape[1] > n_out:
        return y[:, :n_out]
    if y.shape[1] < n_out:
        return np.pad(y, ((0, 0), (0, n_out - y.shape[1])), mode="edge")
    return y


def fit_to_length(x: np.ndarray, n_samples: int, crop: str = "start",
                  pad: str = "zero") -> np.ndarray:
    """Crop (window at the ``start`` or ``center``) or pad (at the end with ``zero`` or the
    ``edge`` value) ``x`` ``(n, T)`` to ``(n, n_samples)``."""
    t = x.shape[1]
    if t >= n_samples:
        start = (t - n_samples) // 2 if crop == "center" else 0
        return x[:, start:start + n_samples]
    if t == 0:
        return np.zeros((x.shape[0], n_samples), dtype=x.dtype)
    return np.pad(x, ((0, 0), (0, n_samples - t)), mode="edge" if pad == "edge" else "constant")


def apply_filters(x: np.ndarray, fs: float, policy: NormalizeConfig) -> np.ndarray:
    """Zero-phase baseline high-pass, band-pass and powerline notch on ``x`` ``(n, T)`` mV.

    Cut-offs at or above the Nyquist rate ``fs / 2`` of the source are skipped (the signal holds
    nothing there, and resampling low-passes anyway).
    """
    if not (policy.baseline_filter or policy.bandpass or policy.powerline_hz):
        return x
    sps = _scipy_signal()

    nyq = fs / 2.0
    pad = max(0, min(x.shape[1] - 1, 3 * (2 * policy.filter_order + 1)))
    if policy.baseline_filter and policy.baseline_cutoff_hz < nyq:
        sos = sps.butter(policy.filter_order, policy.baseline_cutoff_hz, btype="highpass",
                         fs=fs, output="sos")
        x = sps.sosfiltfilt(sos, x, axis=1, padlen=pad)
    if policy.bandpass is not None:
        lo, hi = policy.bandpass
        if hi < nyq:
            sos = sps.butter(policy.filter_order, [lo, hi], btype="bandpass", fs=fs, output="sos")
        elif lo < nyq:
            sos = sps.butter(policy.filter_order, lo, btype="highpass", fs=fs, output="sos")
        else:
            sos = None
        if sos is not None:
            x = sps.sosfiltfilt(sos, x, axis=1, padlen=pad)
    if policy.powerline_hz is not None and policy.powerline_hz < nyq:
        b, a = sps.iirnotch(policy.powerline_hz, NOTCH_Q, fs=fs)
        x = sps.filtfilt(b, a, x, axis=1, padlen=min(pad, x.shape[1] - 1))
    return x


def preprocess(signal: np.ndarray, fs: float, policy: NormalizeConfig, target_fs: int,
               n_samples: int, lead_mask: Optional[np.ndarray] = None) -> np.ndarray:
    """Filter, resample and crop/pad a canonical 12-lead ECG for the model.

    Args:
        signal: ``(12, T)`` mV, lead order :data:`~ecglm.data.canonical.LEADS`, finite.
        fs: sampling rate of ``signal`` in Hz.
        policy: the ``data.normalize`` section (filters, resample method, crop/pad).
        target_fs: output rate in Hz (``data.fs``).
        n_samples: output samples per lead (``data.n_samples``).
        lead_mask: ``(12,)`` bool, False for a missing lead (its row is ignored and comes out
            as zeros); ``None`` = all 12 leads present.

    Returns:
        float32 ``(12, n_samples)`` mV at ``target_fs`` Hz.
    """
    x = np.asarray(signal)
    if x.ndim != 2 or x.shape[0] != len(LEADS):
        raise ValueError(f"signal: expected shape (12, T), got {x.shape}")
    mask = (np.ones(len(LEADS), dtype=bool) if lead_mask is None
            else np.asarray(lead_mask, dtype=bool))
    sub = np.asarray(x[mask], dtype=np.float64)
    sub = apply_filters(sub, fs, policy)
    sub = fit_to_length(resample(sub, fs, target_fs, policy.resample_method), n_samples,
                        policy.crop, policy.pad)
    out = np.zeros((len(LEADS), n_samples), dtype=np.float32)
    out[mask] = sub
    return out

