"""Read a WFDB record into the canonical 12-lead array.

Canonical ECG: ``float32`` array of shape ``(12, T)`` in millivolts, leads in :data:`LEADS`
order, sampled at ``fs`` Hz.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

from ecglm.data.errors import RecordError

LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF",
                          "V1", "V2", "V3", "V4", "V5", "V6")
"""Canonical lead order."""

_UNIT_TO_MV: dict[str, float] = {
    "uv": 1e-3,
    "\u00b5v": 1e-3,  # micro sign
    "\u03bcv": 1e-3,  # greek mu
    "mv": 1.0,
    "v": 1e3,
}


def unit_scale_to_mv(unit: str | None, record: str, lead: str) -> float:
    """Factor that converts values in ``unit`` (uV, mV, V; case-insensitive) to mV.

    Raises:
        RecordError: the unit is missing or not a voltage unit.
    """
    key = (unit or "").strip().lower()
    if key not in _UNIT_TO_MV:
        raise RecordError(record, "units",
                          f"lead {lead} has unit {unit!r}, expected one of uV, mV, V")
    return _UNIT_TO_MV[key]


def header_units(path: str | Path, n_sig: int) -> list[str | None]:
    """Units of each signal as written in ``path``.hea (``None`` where none is given).

    wfdb drops non-ASCII characters from units (``µV`` becomes ``V``), so the header text is
    parsed here (UTF-8, else Latin-1).
    """
    raw = Path(str(path) + ".hea").read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    units: list[str | None] = []
    for line in lines[1:1 + n_sig]:
        tokens = line.split()
        gain = tokens[2] if len(tokens) > 2 else ""
        units.append(gain.split("/", 1)[1] if "/" in gain else None)
    return units if len(units) == n_sig else [None] * n_sig


def resample_ecg(x: np.ndarray, fs: float, target_fs: int) -> np.ndarray:
    """Polyphase resampling of ``x`` ``(n_leads, T)`` from ``fs`` Hz to ``target_fs`` Hz."""
    if math.isclose(fs, target_fs):
        return x
    ratio = Fraction(target_fs) / Fraction(fs).limit_denominator(1000)
    return resample_poly(x, ratio.numerator, ratio.denominator, axis=1)


def fit_length(x: np.ndarray, n_samples: int) -> np.ndarray:
    """Crop (keep the start) or zero-pad (at the end) ``x`` ``(n_leads, T)`` to ``n_samples``."""
    t = x.shape[1]
    if t >= n_samples:
        return x[:, :n_samples]
    out = np.zeros((x.shape[0], n_samples), dtype=x.dtype)
    out[:, :t] = x
    return out


def lead_indices(names: list[str], record: str) -> list[int]:
    """Channel index of each lead of :data:`LEADS` in ``names``.

    Lead names are matched case-insensitively (``aVR``/``AVR``/``avr``); extra channels are
    ignored; for duplicated names the first channel wins.

    Raises:
        RecordError: a canonical lead is missing (the message names it).
    """
    index: dict[str, int] = {}
    for i, name in enumerate(names):
        index.setdefault(str(name).strip().lower(), i)
    missing = [lead for lead in LEADS if lead.lower() not in index]
    if missing:
        raise RecordError(record, "leads",
                          f"missing lead(s) {', '.join(missing)}; header has {list(names)}")
    return [index[lead.lower()] for lead in LEADS]


def read_wfdb(path: str | Path, target_fs: int, n_samples: int) -> tuple[np.ndarray, int]:
    """Read a WFDB record as a canonical 12-lead ECG.

    Args:
        path: record path without extension (``.../00001_hr``).
        target_fs: output sampling rate in Hz (resampled with ``scipy.signal.resample_poly``).
        n_samples: output length per lead (cropped from the start or zero-padded at the end).

    Returns:
        ``(signal, target_fs)`` with ``signal`` float32 ``(12, n_samples)`` in mV, lead order
        :data:`LEADS`.

    Raises:
        RecordError: missing/truncated/empty files, unknown units, a missing lead, or
            non-finite values; the message names the record and the reason.
    """
    import wfdb  # local import: wfdb is slow to import and only needed here

    record = str(path)
    try:
        rec = wfdb.rdrecord(record, physical=True)
    except FileNotFoundError as exc:
        raise RecordError(record, "file", f"missing file {exc.filename or exc}") from exc
    except Exception as exc:  # wfdb raises bare ValueError/IndexError on corrupt files
        raise RecordError(record, "file",
                          f"unreadable WFDB record (truncated or corrupt?): "
                          f"{type(exc).__name__}: {exc}") from exc
    sig = rec.p_signal
    if sig is None or sig.ndim != 2 or sig.shape[0] == 0:
        raise RecordError(record, "signal", "empty signal (0 samples)")
    if rec.sig_len and sig.shape[0] != rec.sig_len:
        raise RecordError(record, "signal",
                          f"header declares {rec.sig_len} samples, file holds {sig.shape[0]}")
    fs = float(rec.fs or 0.0)
    if not math.isfinite(fs) or fs <= 0:
        raise RecordError(record, "fs", f"sampling rate {rec.fs!r}, expected > 0 Hz")
    names = list(rec.sig_name or [])
    raw_units = header_units(record, len(names))
    units = [raw or parsed for raw, parsed in zip(raw_units, rec.units or [None] * len(names))]
    idx = lead_indices(names, record)
    scales = np.array([unit_scale_to_mv(units[i], record, names[i]) for i in idx])
    x = sig[:, idx].T * scales[:, None]
    if not np.all(np.isfinite(x)):
        bad = [LEADS[i] for i in range(len(LEADS)) if not np.all(np.isfinite(x[i]))]
        raise RecordError(record, "signal", f"non-finite values (NaN/inf) in lead(s) "
                                            f"{', '.join(bad)}")
    x = fit_length(resample_ecg(x, fs, target_fs), n_samples)
    return np.ascontiguousarray(x, dtype=np.float32), int(target_fs)
