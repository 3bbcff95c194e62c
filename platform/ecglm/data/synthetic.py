"""Synthetic fallback dataset in the PTB-XL + ECG-QA layout.

Simulated 12-lead ECGs with known labels: rhythm (sinus rhythm / bradycardia / tachycardia,
atrial fibrillation with irregular RR and no P waves), heart rate, interval features (ms) and
noise (baseline drift, static noise, burst noise). Reports, SCP codes and ECG-QA-style
questions are derived from those labels, so every answer is computable. Output is
byte-identical for the same arguments.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from ecglm.data.synthetic_qa import TEMPLATES, numeric_comparison, write_ecgqa_files
from ecglm.data.synthetic_signals import (NOISES, NORMAL_RANGES_MS, RHYTHMS, SyntheticRecord,
                                          simulate_labels, simulate_signal)

__all__ = ["GENERATOR_VERSION", "MARKER_FILE", "NOISES", "NORMAL_RANGES_MS", "RHYTHMS",
           "TEMPLATES", "SyntheticRecord", "marker_for", "numeric_comparison", "read_marker",
           "record_relpath", "simulate_labels", "simulate_signal", "write_ecgqa_files",
           "write_synthetic_dataset", "write_wfdb_fmt16"]


GENERATOR_VERSION = 1
MARKER_FILE = "synthetic_manifest.json"
"""Written last into the dataset root: ``{"n_records", "seed", "fs", "seconds", "version"}``."""

# Header lead names as PTB-XL writes them (upper-case augmented leads).
_HEADER_LEADS = ("I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6")

def record_relpath(ecg_id: int, fs: int) -> str:
    """``records500/00000/00001_hr`` style path relative to ``ptbxl/``."""
    return f"records{fs}/{(ecg_id // 1000) * 1000:05d}/{ecg_id:05d}_hr"


def write_wfdb_fmt16(base: Path, x_mv: np.ndarray, fs: int) -> None:
    """Write ``x_mv`` ``(12, T)`` mV as WFDB format 16, gain 1000/mV (``base``.hea/.dat)."""
    d = np.clip(np.rint(x_mv * 1000.0), -32767, 32767).astype("<i2")  # -32768 = NaN in WFDB
    base.parent.mkdir(parents=True, exist_ok=True)
    base.with_suffix(".dat").write_bytes(np.ascontiguousarray(d.T).tobytes())
    name = base.name
    lines = [f"{name} {d.shape[0]} {fs} {d.shape[1]}"]
    for lead, row in zip(_HEADER_LEADS, d):
        checksum = int(row.astype(np.int64).sum()) % 65536
        lines.append(f"{name}.dat 16 1000.0(0)/mV 16 0 {int(row[0])} {checksum} 0 {lead}")
    base.with_suffix(".hea").write_text("\n".join(lines) + "\n")


def _database_csv(records: list[SyntheticRecord], fs: int) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    cols = ["ecg_id", "patient_id", "report", "scp_codes", "strat_fold", "filename_hr",
            "rhythm", "heart_rate", *[n.replace(" ", "_") for n in NORMAL_RANGES_MS],
            "baseline_drift", "static_noise", "burst_noise"]
    w.writerow(cols)
    for rec in records:
        feats = ["" if rec.features[n] is None else rec.features[n] for n in NORMAL_RANGES_MS]
        w.writerow([rec.ecg_id, f"{rec.patient_id:.1f}", rec.report, repr(rec.scp_codes),
                    rec.strat_fold, record_relpath(rec.ecg_id, fs), rec.rhythm, rec.heart_rate,
                    *feats, *["I-V6" if n in rec.noises else "" for n in NOISES]])
    return buf.getvalue()


def read_marker(root: Path) -> dict | None:
    """The marker of a complete synthetic dataset at ``root``, or ``None``."""
    path = Path(root) / MARKER_FILE
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def marker_for(n_records: int, seed: int, fs: int, seconds: float) -> dict:
    """Marker content identifying a synthetic dataset."""
    return {"n_records": n_records, "seed": seed, "fs": fs, "seconds": seconds,
            "version": GENERATOR_VERSION}


def write_synthetic_dataset(root: Path, n_records: int, seed: int, fs: int = 500,
                            seconds: float = 10.0) -> Path:
    """Write a simulated PTB-XL + ECG-QA dataset under ``root`` and return ``root``.

    Layout: ``ptbxl/records{fs}/00000/NNNNN_hr.{hea,dat}`` (WFDB fmt 16, gain 1000/mV),
    ``ptbxl/ptbxl_database.csv`` (catalog columns plus the labels), ``ecgqa/ptbxl/``
    ``{template,paraphrased}_ecgid_le300.json``, ``answers_for_each_template.csv``,
    ``answers.csv``, ``{train,valid,test}_ecgs.tsv`` (strat_fold 1-8/9/10) and the marker
    :data:`MARKER_FILE` (written last). Same arguments -> identical bytes.
    """
    if n_records < 2:
        raise ValueError(f"n_records: expected >= 2, got {n_records}")
    root = Path(root)
    (root / MARKER_FILE).unlink(missing_ok=True)
    n_samples = int(round(fs * seconds))
    records = simulate_labels(n_records, seed)
    ptb = root / "ptbxl"
    for rec in records:
        x = simulate_signal(rec, seed, fs, n_samples)
        write_wfdb_fmt16(ptb / record_relpath(rec.ecg_id, fs), x, fs)
    (ptb / "ptbxl_database.csv").write_text(_database_csv(records, fs))
    write_ecgqa_files(root / "ecgqa" / "ptbxl", records, seed)
    marker = marker_for(n_records, seed, fs, seconds)
    (root / MARKER_FILE).write_text(json.dumps(marker, sort_keys=True) + "\n")
    return root
