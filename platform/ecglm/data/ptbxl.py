"""PTB-XL metadata catalog (``ptbxl_database.csv``) restricted to records present on disk."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pandas as pd

CATALOG_COLUMNS: tuple[str, ...] = ("ecg_id", "patient_id", "report", "scp_codes",
                                    "strat_fold", "path")
"""Columns of :func:`load_ptbxl_catalog`."""

_REQUIRED_CSV_COLUMNS = ("ecg_id", "patient_id", "report", "scp_codes", "strat_fold",
                         "filename_hr")


def ptbxl_dir(root: Path) -> Path:
    """The folder holding ``ptbxl_database.csv``: ``root/ptbxl`` or ``root`` itself."""
    root = Path(root)
    if (root / "ptbxl" / "ptbxl_database.csv").is_file():
        return root / "ptbxl"
    return root


def scp_codes_to_json(text: str, ecg_id: int) -> str:
    """PTB-XL's Python-literal ``{'NORM': 100.0}`` (or JSON) -> canonical JSON text."""
    try:
        value = ast.literal_eval(text) if isinstance(text, str) and text.strip() else {}
    except (ValueError, SyntaxError) as exc:
        raise ValueError(f"ptbxl_database.csv: ecg_id {ecg_id}: scp_codes: "
                         f"expected a dict literal, got {text!r}") from exc
    if not isinstance(value, dict):
        raise ValueError(f"ptbxl_database.csv: ecg_id {ecg_id}: scp_codes: "
                         f"expected a dict literal, got {text!r}")
    return json.dumps({str(k): float(v) for k, v in value.items()}, sort_keys=True)


def load_ptbxl_catalog(root: Path, max_ecg_id: int) -> pd.DataFrame:
    """Load the PTB-XL catalog of records with ``ecg_id <= max_ecg_id`` whose files exist.

    Args:
        root: data root holding ``ptbxl/ptbxl_database.csv`` (the ``ptbxl`` folder itself is
            accepted too).
        max_ecg_id: keep rows with ``ecg_id <= max_ecg_id``.

    Returns:
        DataFrame sorted by ``ecg_id`` with columns ``ecg_id`` (int64), ``patient_id`` (int64),
        ``report`` (str), ``scp_codes`` (JSON text of a dict code -> likelihood),
        ``strat_fold`` (int64, 1-10), ``path`` (absolute 500 Hz record path, no extension).
        Only rows whose ``.hea`` and ``.dat`` files both exist are kept.

    Raises:
        FileNotFoundError: no ``ptbxl_database.csv`` under ``root``.
        ValueError: a required column is missing or a value cannot be parsed (names it).
    """
    base = ptbxl_dir(root).resolve()
    csv_path = base / "ptbxl_database.csv"
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path}: PTB-XL catalog not found")
    df = pd.read_csv(csv_path, usecols=lambda c: c in _REQUIRED_CSV_COLUMNS,
                     dtype={"report": str, "scp_codes": str, "filename_hr": str})
    missing = [c for c in _REQUIRED_CSV_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{csv_path}: missing column(s) {', '.join(missing)}")
    df = df[df["ecg_id"] <= max_ecg_id].copy()
    df["path"] = [str(base / f) for f in df["filename_hr"]]
    exists = [Path(p + ".hea").is_file() and Path(p + ".dat").is_file() for p in df["path"]]
    df = df[exists]
    if df["patient_id"].isna().any():
        bad = df.loc[df["patient_id"].isna(), "ecg_id"].tolist()[:5]
        raise ValueError(f"{csv_path}: patient_id missing for ecg_id {bad}")
    out = pd.DataFrame({
        "ecg_id": df["ecg_id"].astype("int64"),
        "patient_id": df["patient_id"].astype("float64").round().astype("int64"),
        "report": df["report"].fillna("").astype(str).str.strip(),
        "scp_codes": [scp_codes_to_json(t, int(e)) for t, e in zip(df["scp_codes"],
                                                                    df["ecg_id"])],
        "strat_fold": df["strat_fold"].astype("int64"),
        "path": df["path"].astype(str),
    })
    return out.sort_values("ecg_id").reset_index(drop=True)
