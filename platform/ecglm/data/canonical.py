"""Record types shared by every reader: a raw multi-channel ECG and the canonical 12-lead ECG.

Readers return :class:`RawECG` (channels as stored, converted to mV); :func:`ecglm.data.normalize.
normalize` turns it into :class:`ECGRecord` (12 leads in :data:`LEADS` order at the target rate).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF",
                          "V1", "V2", "V3", "V4", "V5", "V6")
"""Canonical lead order."""


@dataclass
class RawECG:
    """A record as stored, before lead matching and resampling.

    Attributes:
        record_id: the record's path without extension (or a catalog id); named in errors.
        signal: float64 ``(n_channels, T)`` in mV (may hold NaN where the file marks gaps).
        lead_names: channel names as written in the file, ``len == n_channels``.
        fs: sampling rate in Hz (> 0).
        patient_id: patient identifier when the format carries one, else ``None``.
        metadata: format-specific fields (age, sex, SNOMED ``dx`` codes, header comments,
            per-lead wave annotations ...), JSON-serialisable.
    """

    record_id: str
    signal: np.ndarray
    lead_names: list[str]
    fs: float
    patient_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        """Duration in seconds."""
        return self.signal.shape[1] / self.fs if self.fs > 0 else 0.0


@dataclass
class ECGRecord:
    """The canonical ECG every reader produces.

    Attributes:
        record_id: as in :class:`RawECG`.
        signal: float32 ``(12, T)`` in mV, leads in :data:`LEADS` order, ``T = fs * seconds``.
        fs: sampling rate in Hz.
        lead_mask: bool ``(12,)``; ``False`` where a lead was missing and zero-filled
            (``data.normalize.missing_leads: mask``).
        patient_id: patient identifier or ``None``.
        metadata: reader metadata plus ``source_fs`` (Hz), ``source_seconds`` (s) and
            ``dropped_leads`` (channels that are not one of the 12 leads).
        flags: reasons the record is usable but not clean (``amplitude: ...``,
            ``nonfinite: ...``, ``flat leads: ...``); empty for a clean record.
    """

    record_id: str
    signal: np.ndarray
    fs: int
    lead_mask: np.ndarray
    patient_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
