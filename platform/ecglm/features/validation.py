"""Input checks shared by delineation, grounding features and rendering.

A canonical ECG is a ``float`` array of shape ``(12, T)`` in millivolts (lead order
:data:`ecglm.data.records.LEADS`) sampled at ``fs`` Hz.
"""

from __future__ import annotations

import numpy as np

from ecglm.data.canonical import LEADS

MIN_FS_HZ = 100
"""Lowest sampling rate accepted (Hz); QRS boundaries need at least 10 ms resolution."""

MAX_FS_HZ = 10_000
"""Highest sampling rate accepted (Hz)."""


class SignalError(ValueError):
    """An ECG array or its sampling rate cannot be used.

    Attributes:
        field: what is wrong (``"signal.shape"``, ``"signal.values"``, ``"fs"``, ...).
        reason: human-readable explanation naming the expected value.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


def check_fs(fs: float) -> int:
    """Validate a sampling rate and return it as ``int`` Hz.

    Raises:
        SignalError: ``fs`` is not a whole number in ``[MIN_FS_HZ, MAX_FS_HZ]``.
    """
    try:
        value = float(fs)
    except (TypeError, ValueError) as exc:
        raise SignalError("fs", f"expected a number of Hz, got {fs!r}") from exc
    if not np.isfinite(value) or value != round(value):
        raise SignalError("fs", f"expected a whole number of Hz, got {fs!r}")
    if not MIN_FS_HZ <= value <= MAX_FS_HZ:
        raise SignalError("fs", f"expected {MIN_FS_HZ}..{MAX_FS_HZ} Hz, got {value:g}")
    return int(value)


def check_signal(signal: np.ndarray, fs: float, min_seconds: float = 0.0) -> tuple[np.ndarray, int]:
    """Validate a canonical 12-lead ECG.

    Args:
        signal: ``(12, T)`` array in mV.
        fs: sampling rate in Hz.
        min_seconds: shortest accepted duration in seconds.

    Returns:
        ``(signal as float64 (12, T), fs as int)``.

    Raises:
        SignalError: wrong type/shape (``signal.shape``), too short (``signal.length``),
            non-finite values (``signal.values``, naming the first affected lead) or a bad
            ``fs``.
    """
    rate = check_fs(fs)
    arr = np.asarray(signal)
    if arr.dtype.kind not in "fiu":
        raise SignalError("signal.dtype", f"expected a real numeric array, got dtype {arr.dtype}")
    if arr.ndim != 2 or arr.shape[0] != len(LEADS):
        raise SignalError("signal.shape",
                          f"expected ({len(LEADS)}, T) in lead order {', '.join(LEADS)}, "
                          f"got {tuple(arr.shape)}")
    need = max(1, int(np.ceil(min_seconds * rate)))
    if arr.shape[1] < need:
        raise SignalError("signal.length",
                          f"expected at least {need} samples ({min_seconds:g} s at {rate} Hz), "
                          f"got {arr.shape[1]}")
    arr = arr.astype(np.float64, copy=False)
    bad = ~np.isfinite(arr)
    if bad.any():
        counts = bad.sum(axis=1)
        first = int(np.argmax(counts > 0))
        raise SignalError("signal.values",
                          f"{int(counts.sum())} non-finite value(s) (NaN/inf); first in lead "
                          f"{LEADS[first]} at sample {int(np.argmax(bad[first]))}")
    return arr, rate
