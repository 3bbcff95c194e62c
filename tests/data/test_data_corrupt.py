"""Corrupt inputs written by fixtures: each gives a RecordError naming record, field, reason."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import scipy.io

from ecglm.config.schema import NormalizeConfig
from ecglm.data import LEADS, RecordError, read_record
from tests.helpers import (CINC, RECORDS500, copy_record, put_nan, rename_lead,
                           set_signal_count, truncate_dat)


def _copy_cinc(tmp: Path, name: str) -> Path:
    """Copy CinC record E07500 (.hea + .mat) as ``name``."""
    shutil.copyfile(CINC / "E07500.mat", tmp / f"{name}.mat")
    text = (CINC / "E07500.hea").read_text().replace("E07500", name)
    (tmp / f"{name}.hea").write_text(text)
    return tmp / name


def _ptbxl(tmp: Path, name: str) -> Path:
    return copy_record(RECORDS500 / "00001_hr", tmp, name)


def truncated(tmp: Path) -> Path:
    rec = _ptbxl(tmp, "truncated")
    truncate_dat(rec, 77_777)
    return rec


def empty_dat(tmp: Path) -> Path:
    rec = _ptbxl(tmp, "empty_dat")
    truncate_dat(rec, 0)
    return rec


def empty_hea(tmp: Path) -> Path:
    rec = _ptbxl(tmp, "empty_hea")
    rec.with_suffix(".hea").write_text("")
    return rec


def header_count_mismatch(tmp: Path) -> Path:
    rec = _ptbxl(tmp, "hdr13")
    set_signal_count(rec, 13)  # 12 signal lines follow
    return rec


def dat_count_mismatch(tmp: Path) -> Path:
    """The .dat holds 13 interleaved signals, the header declares 12."""
    rec = _ptbxl(tmp, "dat13")
    d = np.frombuffer(rec.with_suffix(".dat").read_bytes(), dtype="<i2").reshape(-1, 12)
    rec.with_suffix(".dat").write_bytes(np.concatenate([d, d[:, :1]], axis=1).tobytes())
    return rec


def mat_count_mismatch(tmp: Path) -> Path:
    """A CinC .mat with 11 rows while the header declares 12 signals."""
    rec = _copy_cinc(tmp, "mat11")
    val = scipy.io.loadmat(str(rec) + ".mat")["val"]
    scipy.io.savemat(str(rec) + ".mat", {"val": val[:11]}, format="4")
    return rec


def unknown_leads(tmp: Path) -> Path:
    rec = _ptbxl(tmp, "unknown")
    for lead in ("I", "II", "III"):
        rename_lead(rec, lead, f"CH{lead}")
    return rec


def nan_samples(tmp: Path) -> Path:
    rec = _ptbxl(tmp, "nan")
    put_nan(rec, LEADS.index("aVF"))
    return rec


def empty_cpsc_mat(tmp: Path) -> Path:
    (tmp / "A0001.mat").write_bytes(b"")
    return tmp / "A0001.mat"


def garbage_mat(tmp: Path) -> Path:
    (tmp / "A0002.mat").write_bytes(np.random.default_rng(0).bytes(4096))
    return tmp / "A0002.mat"


def cpsc_bad_shape(tmp: Path) -> Path:
    ecg = {"sex": "Male", "age": 50, "data": np.zeros((8, 5000))}
    scipy.io.savemat(str(tmp / "A0003.mat"), {"ECG": ecg})
    return tmp / "A0003.mat"


def mat_without_header(tmp: Path) -> Path:
    shutil.copyfile(CINC / "E07501.mat", tmp / "E9.mat")
    return tmp / "E9.mat"


CASES: list[tuple[Callable[[Path], Path], str, str]] = [
    (truncated, "file", "truncated or corrupt"),
    (empty_dat, "file", "empty signal file"),
    (empty_hea, "header", "empty header file"),
    (header_count_mismatch, "header", "declares 13 signals, header lists 12"),
    (dat_count_mismatch, "signal", "holds 13 signals x 5000 samples, header declares 12"),
    (mat_count_mismatch, "file", "the size fits 11 signals: signal-count mismatch"),
    (unknown_leads, "leads", "unrecognised channel name(s) ['CHI', 'CHII', 'CHIII']"),
    (nan_samples, "signal", "non-finite values (NaN/inf) in lead(s) aVF (100 samples)"),
    (empty_cpsc_mat, "file", "empty file"),
    (garbage_mat, "file", "unreadable MATLAB file"),
    (cpsc_bad_shape, "signal", "ECG.data has shape (8, 5000), expected (12, N)"),
    (mat_without_header, "header", "'val' matrix but E9.hea"),
]


@pytest.mark.parametrize("make, field, reason", CASES, ids=[c[0].__name__ for c in CASES])
def test_corrupt_input_gives_typed_error(shared_data: Path, tmp_path: Path,
                                         make: Callable[[Path], Path], field: str,
                                         reason: str) -> None:
    path = make(tmp_path)
    with pytest.raises(RecordError) as err:
        read_record(path, NormalizeConfig(), 500, 5000)
    record = str(path)[:-4] if str(path).endswith(".mat") else str(path)
    assert err.value.record == record
    assert err.value.field == field
    assert reason in err.value.reason, err.value.reason
    assert str(err.value).startswith(f"record {record}: {field}: ")
