"""Typed rows: what one example of a task holds, from Parquet/Ray Data records.

Signals are int16 microvolt bytes, ``(n_ecg, 12, n_samples)`` row-major
(:func:`ecglm.data.sharding.encode_signals`); :meth:`ECGRow.ecgs` decodes them to mV.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ecglm.data.sharding import decode_signals

__all__ = ["ECGRow", "LabelRow", "QARow", "RecordRow"]


# ------------------------------------------------------------------------------------------------

def _plain(value: Any) -> Any:
    """numpy/pyarrow scalars and arrays -> Python values (lists become tuples)."""
    if isinstance(value, (bytes, str)) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple, np.ndarray)):
        return tuple(_plain(v) for v in value)
    return value


@dataclass(frozen=True, kw_only=True)
class ECGRow:
    """One example: ``n_ecg`` ECGs of ``n_samples`` samples each, stored as int16 microvolts."""

    sample_id: int
    ecg_ids: tuple[int, ...]
    n_ecg: int
    n_samples: int
    signals: bytes
    split: str = ""
    retrieved_reports: tuple[str, ...] = ()
    """Reports of the nearest training ECGs, best first (empty without retrieval)."""

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "ECGRow":
        """The row from a Parquet/Ray Data record (extra columns ignored).

        Raises:
            KeyError: a required column is missing (the message names it and the sample).
        """
        values = {}
        for f in dataclasses.fields(cls):
            if f.name in record:
                values[f.name] = _plain(record[f.name])
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise KeyError(f"{cls.__name__}: record {record.get('sample_id')!r} has no "
                               f"column {f.name!r}")
        return cls(**values)

    def ecgs(self) -> np.ndarray:
        """``(n_ecg, 12, n_samples)`` float32 mV."""
        return decode_signals(self.signals, self.n_ecg, self.n_samples)

    def with_reports(self, reports: Sequence[str]) -> "ECGRow":
        """A copy with ``retrieved_reports`` set."""
        return dataclasses.replace(self, retrieved_reports=tuple(str(r) for r in reports))


@dataclass(frozen=True, kw_only=True)
class QARow(ECGRow):
    """An ECG-QA item: a question about one or two ECGs, its options and answer set."""

    question: str
    options: tuple[str, ...]
    answer: tuple[str, ...] = ()
    question_type: str = ""
    attribute_type: str = ""
    template_id: int = -1
    patient_ids: tuple[int, ...] = ()


@dataclass(frozen=True, kw_only=True)
class RecordRow(ECGRow):
    """One record with the reference text the model learns to write (``target``)."""

    patient_id: int = -1
    target: str = ""


@dataclass(frozen=True, kw_only=True)
class LabelRow(RecordRow):
    """One record with its label set (``labels``, in vocabulary order); ``target`` is their
    text form."""

    labels: tuple[str, ...] = ()
