"""Canonical 12-lead array from a record path (:func:`read_wfdb`).

The readers live in :mod:`ecglm.data.readers`, the policies in :mod:`ecglm.data.normalize`, the
signal path (filters, resampling, crop/pad) shared with serving in :mod:`ecglm.data.preprocess`;
this module keeps the original entry points. Canonical ECG: ``float32`` array of shape
``(12, T)`` in millivolts, leads in :data:`LEADS` order, sampled at ``fs`` Hz.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ecglm.config.schema import NormalizeConfig
from ecglm.data.canonical import LEADS
from ecglm.data.errors import RecordError
from ecglm.data.readers import read_record
from ecglm.data.readers.wfdb_format import header_units, unit_scale_to_mv

__all__ = ["LEADS", "header_units", "lead_indices", "read_wfdb", "unit_scale_to_mv"]


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


def read_wfdb(path: str | Path, target_fs: int, n_samples: int,
              policy: NormalizeConfig | None = None) -> tuple[np.ndarray, int]:
    """Read a record (WFDB, WFDB + ``.mat``, CPSC2018 ``.mat``) as a canonical 12-lead ECG.

    Args:
        path: record path without extension (``.../00001_hr``).
        target_fs: output sampling rate in Hz (anti-aliased polyphase resampling by default).
        n_samples: output length per lead (cropped from the start or zero-padded at the end
            by default).
        policy: normalisation policies; ``None`` = the defaults of
            :class:`~ecglm.config.schema.NormalizeConfig` (missing leads, non-finite values and
            implausible amplitudes are errors).

    Returns:
        ``(signal, target_fs)`` with ``signal`` float32 ``(12, n_samples)`` in mV, lead order
        :data:`LEADS`.

    Raises:
        RecordError: missing/truncated/empty files, unknown units, a missing lead, non-finite
            values or an implausible amplitude; the message names the record and the reason.
    """
    rec = read_record(path, policy or NormalizeConfig(), target_fs, n_samples)
    return rec.signal, rec.fs
