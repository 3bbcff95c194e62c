"""LUDB catalog from ``ludb.csv`` (one record per patient; rhythm, axis, diagnoses)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ecglm.data.errors import CatalogError

LUDB_COLUMNS: tuple[str, ...] = ("record_id", "patient_id", "path", "sex", "age", "rhythm",
                                 "diagnoses", "report")
"""Columns of :func:`load_ludb_catalog`."""
_DIAGNOSIS_COLUMNS = ("Rhythms", "Electric axis of the heart", "Conduction abnormalities",
                      "Extrasystolies", "Hypertrophies", "Cardiac pacing", "Ischemia",
                      "Non-specific repolarization abnormalities", "Other states")


def _cell_lines(value: object) -> list[str]:
    if not isinstance(value, str):
        return []
    return [ln.strip().rstrip(".") for ln in value.splitlines() if ln.strip()]


def load_ludb_catalog(root: Path) -> pd.DataFrame:
    """LUDB records listed in ``<root>/ludb.csv`` whose ``<root>/data/<ID>.hea`` exists.

    Returns:
        DataFrame sorted by ``record_id`` with :data:`LUDB_COLUMNS`: ``record_id`` and
        ``patient_id`` (int, the LUDB ID), ``path`` (record path without extension), ``sex``
        (``M``/``F``), ``age`` (int; ``>89`` becomes 90), ``rhythm`` (str), ``diagnoses``
        (list of statements from every diagnosis column), ``report`` (the diagnoses joined
        with ``". "``).

    Raises:
        FileNotFoundError: no ``ludb.csv``.
        CatalogError: a required column is missing.
    """
    root = Path(root)
    csv_path = root / "ludb.csv"
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path}: LUDB catalog not found")
    df = pd.read_csv(csv_path, dtype=str)
    missing = [c for c in ("ID", "Sex", "Age", "Rhythms") if c not in df.columns]
    if missing:
        raise CatalogError(str(csv_path), ", ".join(missing), "missing column(s)")
    rows = []
    for _, row in df.iterrows():
        rid = int(str(row["ID"]).strip())
        path = root / "data" / str(rid)
        if not Path(str(path) + ".hea").is_file():
            continue
        age_text = str(row["Age"]).strip()
        age = 90 if age_text.startswith(">") else int(age_text) if age_text.isdigit() else None
        diagnoses = [d for col in _DIAGNOSIS_COLUMNS if col in df.columns
                     for d in _cell_lines(row[col])]
        rows.append({"record_id": rid, "patient_id": rid, "path": str(path.resolve()),
                     "sex": str(row["Sex"]).strip() or None, "age": age,
                     "rhythm": "; ".join(_cell_lines(row["Rhythms"])), "diagnoses": diagnoses,
                     "report": ". ".join(diagnoses)})
    out = pd.DataFrame(rows, columns=list(LUDB_COLUMNS))
    return out.sort_values("record_id").reset_index(drop=True)
