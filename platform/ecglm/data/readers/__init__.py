"""Readers of every supported layout and the dispatch from a path to a canonical record.

========================  =====================================================================
layout                    recognised by
========================  =====================================================================
WFDB (any wfdb format)    ``<record>.hea`` next to ``.dat``/``.xyz``/... signal files
WFDB header + ``.mat``    ``<record>.hea`` whose signal file is ``<record>.mat`` (CinC 2020/21)
CPSC2018 original         ``<record>.mat`` with no ``.hea``: MATLAB struct ``ECG.data``
MIMIC-IV-ECG              WFDB under ``files/pNNNN/pNNNNNNNN/sNNNNNNNN/NNNNNNNN``: the
                          subject id becomes ``patient_id``
LUDB                      WFDB with per-lead annotation files ``<record>.i`` ... ``.v6``
========================  =====================================================================
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable

from ecglm.config.schema import NormalizeConfig
from ecglm.data.canonical import ECGRecord, RawECG
from ecglm.data.errors import RecordError
from ecglm.data.normalize import normalize
from ecglm.data.readers.cpsc2018 import read_cpsc2018_mat
from ecglm.data.readers.header_checks import DEFAULT_LIMITS, HeaderLimits
from ecglm.data.readers.ludb import has_wave_annotations, read_ludb, read_wave_annotations
from ecglm.data.readers.scan import ScanEntry, ScanResult, scan_paths
from ecglm.data.readers.wfdb_format import parse_comments, read_wfdb_raw

MIMIC_PATH_RE = re.compile(r"p\d{4}[/\\]p(\d+)[/\\]s(\d+)[/\\](\d+)$")
"""``files/p1000/p10000032/s40689238/40689238``: subject 10000032, study 40689238."""
_WFDB_SUFFIXES = (".hea", ".dat", ".xyz")

__all__ = [
    "DEFAULT_LIMITS",
    "HeaderLimits",
    "ScanEntry",
    "ScanResult",
    "find_records",
    "parse_comments",
    "read_cpsc2018_mat",
    "read_ludb",
    "read_raw",
    "read_record",
    "read_wave_annotations",
    "read_wfdb_raw",
    "scan_paths",
]


def _record_base(path: Path) -> tuple[Path, bool]:
    """``(record path without extension, is_cpsc_mat)`` for a path given with or without
    extension."""
    suffix = path.suffix.lower()
    if suffix in _WFDB_SUFFIXES:
        return path.with_suffix(""), False
    if suffix == ".mat":
        base = path.with_suffix("")
        return base, not os.path.lexists(str(base) + ".hea")
    if not os.path.lexists(str(path) + ".hea") and os.path.lexists(str(path) + ".mat"):
        return path, True
    return path, False


def read_raw(path: str | Path, limits: HeaderLimits = DEFAULT_LIMITS) -> RawECG:
    """Read the record at ``path`` (extension optional) with the reader its layout needs;
    ``limits`` bound what a WFDB header may declare (:class:`HeaderLimits`).

    Raises:
        RecordError: the record cannot be read (the field and reason say why); a path with no
            ``.hea`` and no ``.mat`` gives ``file: missing file <path>.hea``; a dangling
            ``.hea`` symlink ``symlink: dangling symlink ...``.
    """
    base, is_cpsc = _record_base(Path(path))
    if is_cpsc:
        return read_cpsc2018_mat(Path(str(base) + ".mat"))
    if not os.path.lexists(str(base) + ".hea"):
        raise RecordError(str(base), "file", f"missing file {base}.hea")
    raw = read_ludb(base, limits) if has_wave_annotations(base) else read_wfdb_raw(base, limits)
    match = MIMIC_PATH_RE.search(str(base))
    if match:
        raw.patient_id = match.group(1)
        raw.metadata.update(subject_id=int(match.group(1)), study_id=int(match.group(2)),
                            format="mimic-iv-ecg")
    return raw


def read_record(path: str | Path, policy: NormalizeConfig, target_fs: int,
                n_samples: int, limits: HeaderLimits = DEFAULT_LIMITS) -> ECGRecord:
    """Canonical record: :func:`read_raw` (with ``limits``) then
    :func:`ecglm.data.normalize.normalize`. Shard building calls it with the default limits,
    so training ingest quarantines what ``ecglm data check`` rejects, with the same reason.

    Returns:
        :class:`ECGRecord` with float32 ``(12, n_samples)`` mV at ``target_fs`` Hz.

    Raises:
        RecordError: unreadable record or a policy violation.
    """
    return normalize(read_raw(path, limits), policy, target_fs, n_samples)


def find_records(paths: Iterable[str | Path]) -> list[str]:
    """Record paths (no extension; CPSC2018 records keep ``.mat``) under ``paths``.

    A folder is searched recursively: every ``*.hea`` (a dangling symlink included) is a WFDB
    record, every ``*.mat`` without a ``.hea`` of the same name a CPSC2018 record; other files
    are not records. A path that is not a folder counts as one record even if it does not exist
    (the reader then reports it missing), so every argument is accounted for. What is not a
    record (orphan signal files, folders that cannot be listed ...) is reported by
    :func:`scan_paths`, which this lists the records of.
    """
    return scan_paths(paths).records
