"""MIMIC-IV-ECG catalog (documented layout, v1.0)::

    <root>/record_list.csv            subject_id, study_id, file_name, ecg_time, path
    <root>/machine_measurements.csv   subject_id, study_id, cart_id, ecg_time,
                                      report_0 ... report_17, bandwidth, filtering,
                                      rr_interval, p_onset, p_end, qrs_onset, qrs_end, t_end,
                                      p_axis, qrs_axis, t_axis
    <root>/files/pNNNN/pNNNNNNNN/sNNNNNNNN/NNNNNNNN.{hea,dat}   WFDB, 12 leads, 500 Hz, 10 s

The machine report is the ``report_*`` columns joined and cleaned as MEIT does: ``nan`` and
number-only sentences dropped, reports under 5 tokens dropped.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Iterable

import pandas as pd

from ecglm.data.errors import CatalogError

REPORT_COLUMNS: tuple[str, ...] = tuple(f"report_{i}" for i in range(18))
MEASUREMENT_COLUMNS: tuple[str, ...] = ("rr_interval", "p_onset", "p_end", "qrs_onset",
                                        "qrs_end", "t_end", "p_axis", "qrs_axis", "t_axis")
"""Machine measurements kept in the catalog (ms, or degrees for the axes)."""
MIN_REPORT_TOKENS = 5
_LETTER = re.compile(r"[A-Za-z]")


def clean_report(parts: Iterable[object], min_tokens: int = MIN_REPORT_TOKENS) -> str:
    """Join the ``report_*`` sentences of one ECG.

    Empty cells, ``nan`` and sentences without any letter (``"---"``, ``"1.0"``, ``"120/80"``)
    are dropped; the rest are stripped of trailing periods and joined with ``". "`` plus a final
    ``"."``. Returns ``""`` when fewer than ``min_tokens`` whitespace tokens remain.
    """
    sentences: list[str] = []
    for part in parts:
        if part is None or (isinstance(part, float) and math.isnan(part)):
            continue
        text = " ".join(str(part).split()).strip()
        if not text or text.lower() == "nan" or not _LETTER.search(text):
            continue
        sentences.append(text.rstrip(". "))
    report = ". ".join(s for s in sentences if s)
    report = report + "." if report else ""
    return report if len(report.split()) >= min_tokens else ""


def _read_csv(path: Path, required: Iterable[str]) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: MIMIC-IV-ECG file not found")
    df = pd.read_csv(path, low_memory=False)
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise CatalogError(str(path), ", ".join(missing), "missing column(s)")
    return df


def load_mimic_catalog(root: Path, min_report_tokens: int = MIN_REPORT_TOKENS,
                       drop_short_reports: bool = True) -> pd.DataFrame:
    """Records of ``record_list.csv`` whose ``.hea`` exists, joined with their machine report.

    Args:
        root: the MIMIC-IV-ECG folder.
        min_report_tokens: cleaned reports with fewer tokens become ``""``.
        drop_short_reports: drop rows whose cleaned report is ``""`` (report generation);
            ``False`` keeps every readable record (signal-only uses).

    Returns:
        DataFrame sorted by ``study_id`` with ``record_id`` (= study_id), ``patient_id``
        (= subject_id), ``study_id``, ``path`` (absolute, no extension), ``ecg_time``,
        ``report`` and the :data:`MEASUREMENT_COLUMNS` present in the CSV.

    Raises:
        FileNotFoundError: a CSV is missing.
        CatalogError: a required column is missing, or a record has no measurements row.
    """
    root = Path(root)
    records = _read_csv(root / "record_list.csv", ("subject_id", "study_id", "path"))
    meas_path = root / "machine_measurements.csv"
    meas = _read_csv(meas_path, ("subject_id", "study_id", "report_0"))
    report_cols = [c for c in REPORT_COLUMNS if c in meas.columns]
    keep = [c for c in MEASUREMENT_COLUMNS if c in meas.columns]
    meas = meas.assign(report=[clean_report(r, min_report_tokens)
                               for r in meas[report_cols].itertuples(index=False)])
    merged = records.merge(meas[["subject_id", "study_id", "report", *keep]],
                           on=["subject_id", "study_id"], how="left", indicator=True)
    orphans = merged.loc[merged["_merge"] == "left_only", "study_id"].tolist()
    if orphans:
        raise CatalogError(str(meas_path), "study_id", f"no measurements row for study(s) "
                                                       f"{orphans[:5]}")
    merged["path"] = [str((root / p).resolve()) for p in merged["path"]]
    merged = merged[[Path(p + ".hea").is_file() for p in merged["path"]]]
    if drop_short_reports:
        merged = merged[merged["report"] != ""]
    out = pd.DataFrame({
        "record_id": merged["study_id"].astype("int64"),
        "patient_id": merged["subject_id"].astype("int64"),
        "study_id": merged["study_id"].astype("int64"),
        "path": merged["path"],
        "ecg_time": merged.get("ecg_time", pd.Series([""] * len(merged), index=merged.index)),
        "report": merged["report"],
        **{c: pd.to_numeric(merged[c], errors="coerce") for c in keep},
    })
    return out.sort_values("study_id").reset_index(drop=True)
