"""The original CPSC2018 release: one MATLAB file per record holding a struct ``ECG`` with
``sex``, ``age`` and ``data`` (12 x N, mV, leads I II III aVR aVL aVF V1-V6, 500 Hz), no header.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy.io import loadmat

from ecglm.data.canonical import LEADS, RawECG
from ecglm.data.errors import RecordError
from ecglm.data.readers.files import require_file

CPSC2018_FS = 500.0
"""Sampling rate of every CPSC2018 record (Hz), fixed by the challenge description."""


def _scalar(value: Any) -> Any:
    """Unwrap MATLAB's nested 1x1 arrays to a Python scalar (``None`` if empty)."""
    arr = np.asarray(value)
    while arr.dtype == object and arr.size == 1:
        arr = np.asarray(arr.reshape(-1)[0])
    if arr.size == 0:
        return None
    item = arr.reshape(-1)[0]
    return item.item() if hasattr(item, "item") else item


def read_cpsc2018_mat(path: str | Path) -> RawECG:
    """Read a CPSC2018 ``.mat`` (with or without the extension) as :class:`RawECG`.

    Returns:
        12 channels named as :data:`LEADS`, float64 mV, 500 Hz; metadata ``age`` (int or
        ``None``), ``sex`` (``M``/``F``/``None``), ``format: "cpsc2018"``.

    Raises:
        RecordError: missing/empty/unreadable file (``file``), a dangling symlink
            (``symlink``), no read permission (``permission``); a WFDB-style ``val`` matrix
            without its header (``header``); no ``ECG.data`` or a shape other than ``(12, N)``
            (``signal``).
    """
    p = Path(path)
    mat = p if p.suffix.lower() == ".mat" else Path(str(p) + ".mat")
    record = str(mat.with_suffix(""))
    if require_file(record, mat) == 0:
        raise RecordError(record, "file", f"empty file {mat} (0 bytes)")
    try:
        content = loadmat(str(mat))
    except Exception as exc:  # scipy raises ValueError/TypeError/MatReadError on bad files
        raise RecordError(record, "file", f"unreadable MATLAB file {mat.name}: "
                                          f"{type(exc).__name__}: {exc}") from exc
    names = sorted(k for k in content if not k.startswith("__"))
    if "ECG" not in content:
        if "val" in content:
            raise RecordError(record, "header", f"{mat.name} holds a WFDB-style 'val' matrix "
                                                f"but {mat.with_suffix('.hea').name} (its "
                                                f"header: gains, leads, rate) is missing")
        raise RecordError(record, "signal", f"expected a MATLAB struct 'ECG' with field "
                                            f"'data' (CPSC2018), found variables {names}")
    ecg = content["ECG"]
    fields = ecg.dtype.names or ()
    if "data" not in fields:
        raise RecordError(record, "signal", f"struct ECG has fields {list(fields)}, "
                                            f"expected 'data' (12 x N, mV)")
    data = np.asarray(ecg["data"].reshape(-1)[0], dtype=np.float64)
    if data.ndim != 2 or data.shape[0] != len(LEADS) or data.shape[1] == 0:
        raise RecordError(record, "signal", f"ECG.data has shape {data.shape}, expected "
                                            f"(12, N) with N > 0")
    age = _scalar(ecg["age"]) if "age" in fields else None
    sex = _scalar(ecg["sex"]) if "sex" in fields else None
    sex_code = {"male": "M", "m": "M", "female": "F", "f": "F"}.get(str(sex).strip().lower())
    meta = {"age": int(age) if isinstance(age, (int, float)) and age == age else None,
            "sex": sex_code, "format": "cpsc2018"}
    return RawECG(record_id=record, signal=data, lead_names=list(LEADS), fs=CPSC2018_FS,
                  metadata=meta)
