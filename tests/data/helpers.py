"""Helpers of the data-layer tests: real-record paths and writers of corrupted WFDB copies."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

SHARED_DATA = (Path(__file__).resolve().parents[3] / "shared" / "data").resolve()
RECORDS500 = SHARED_DATA / "ptbxl" / "records500" / "00000"
RECORDS100 = SHARED_DATA / "ptbxl" / "records100" / "00000"


def copy_record(src: Path, dst_dir: Path, name: str) -> Path:
    """Copy WFDB record ``src`` (no extension) to ``dst_dir/name`` with its header renamed."""
    dst_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src.with_suffix(".dat"), dst_dir / f"{name}.dat")
    header = src.with_suffix(".hea").read_text().replace(f"{src.name}.dat", f"{name}.dat")
    lines = header.splitlines()
    lines[0] = " ".join([name, *lines[0].split()[1:]])
    (dst_dir / f"{name}.hea").write_text("\n".join(lines) + "\n")
    return dst_dir / name


def truncate_dat(record: Path, n_bytes: int) -> None:
    """Keep only the first ``n_bytes`` of ``record``.dat."""
    dat = record.with_suffix(".dat")
    dat.write_bytes(dat.read_bytes()[:n_bytes])


def put_nan(record: Path, lead_index: int, n_leads: int = 12) -> None:
    """Overwrite samples 100..199 of channel ``lead_index`` with WFDB's NaN sentinel (-32768)."""
    dat = record.with_suffix(".dat")
    d = np.frombuffer(dat.read_bytes(), dtype="<i2").reshape(-1, n_leads).copy()
    d[100:200, lead_index] = -32768
    dat.write_bytes(d.tobytes())


def rename_lead(record: Path, old: str, new: str) -> None:
    """Rename channel ``old`` to ``new`` in ``record``.hea."""
    hea = record.with_suffix(".hea")
    lines = hea.read_text().splitlines()
    out = [lines[0]] + [" ".join([*ln.split()[:-1], new]) if ln.split()[-1] == old else ln
                        for ln in lines[1:]]
    hea.write_text("\n".join(out) + "\n")
