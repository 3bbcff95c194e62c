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


CINC = SHARED_DATA / "cinc2021"
ODD = SHARED_DATA / "odd"
LUDB = SHARED_DATA / "ludb"
MIMIC_LEADS = ["I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6"]
"""MIMIC-IV-ECG's channel order (aVF before aVL)."""


def write_mimic_fixture(root: Path, sources: list[Path]) -> list[dict]:
    """A tiny MIMIC-IV-ECG in its documented layout from real PTB-XL signals.

    Writes ``files/pNNNN/pNNNNNNNN/sNNNNNNNN/NNNNNNNN.{hea,dat}`` (wfdb.wrsamp, fmt 16, 200
    adu/mV, 500 Hz, MIMIC lead order), ``record_list.csv`` and ``machine_measurements.csv``
    (report_0..report_17 with 'nan', number-only and short reports). Returns one dict per record:
    subject_id, study_id, path, report (the expected cleaned report, "" when dropped).
    """
    import csv

    import wfdb

    reports = [
        ["Sinus rhythm", "Possible left atrial abnormality", "nan", "---", "Borderline ECG"],
        ["Sinus tachycardia", "120", "Left axis deviation", "Abnormal ECG"],
        ["Normal ECG"],  # 2 tokens: dropped by the cleaning
    ]
    expected = ["Sinus rhythm. Possible left atrial abnormality. Borderline ECG.",
                "Sinus tachycardia. Left axis deviation. Abnormal ECG.", ""]
    out = []
    for k, src in enumerate(sources):
        subject, study = 10000032 + 7 * k, 40689238 + 11 * k
        rel = Path("files") / f"p{str(subject)[:4]}" / f"p{subject}" / f"s{study}"
        (root / rel).mkdir(parents=True, exist_ok=True)
        x, fields = wfdb.rdsamp(str(src))
        names = [n.lower() for n in fields["sig_name"]]
        sig = np.stack([x[:, names.index(n.lower())] for n in MIMIC_LEADS], axis=1)
        wfdb.wrsamp(str(study), fs=500, units=["mV"] * 12, sig_name=MIMIC_LEADS, p_signal=sig,
                    fmt=["16"] * 12, adc_gain=[200.0] * 12, baseline=[0] * 12,
                    write_dir=str(root / rel))
        out.append({"subject_id": subject, "study_id": study, "path": str(rel / str(study)),
                    "report": expected[k % 3], "parts": reports[k % 3]})
    with (root / "record_list.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["subject_id", "study_id", "file_name", "ecg_time", "path"])
        for r in out:
            w.writerow([r["subject_id"], r["study_id"], r["study_id"], "2180-07-23 08:44:00",
                        r["path"]])
    cols = ["subject_id", "study_id", "cart_id", "ecg_time",
            *[f"report_{i}" for i in range(18)], "bandwidth", "filtering", "rr_interval",
            "p_onset", "p_end", "qrs_onset", "qrs_end", "t_end", "p_axis", "qrs_axis", "t_axis"]
    with (root / "machine_measurements.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for r in out:
            parts = r["parts"] + [""] * (18 - len(r["parts"]))
            w.writerow([r["subject_id"], r["study_id"], 6848296, "2180-07-23 08:44:00", *parts,
                        "0.005-150 Hz", "60 Hz notch Baseline filter", 659, 40, 128, 170, 258,
                        518, 81, 77, 79])
    return out


def set_signal_count(record: Path, n_sig: int) -> None:
    """Rewrite the record line of ``record``.hea to declare ``n_sig`` signals."""
    hea = record.with_suffix(".hea")
    lines = hea.read_text().splitlines()
    parts = lines[0].split()
    parts[1] = str(n_sig)
    hea.write_text("\n".join([" ".join(parts), *lines[1:]]) + "\n")
