"""PTB-XL metadata catalog (``ptbxl_database.csv``) restricted to records present on disk, and
the SCP-code labels (diagnostic superclass/subclass, form, rhythm) from ``scp_statements.csv``.

Splits: ``strat_fold`` 1-8 train, 9 valid, 10 test (patient-level by construction), see
:data:`ecglm.data.splits.FOLD_SPLITS`.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pandas as pd

from ecglm.data.errors import CatalogError

CATALOG_COLUMNS: tuple[str, ...] = ("ecg_id", "patient_id", "report", "scp_codes",
                                    "strat_fold", "path")
"""Columns of :func:`load_ptbxl_catalog`."""

RATE_COLUMNS: dict[int, str] = {500: "filename_hr", 100: "filename_lr"}
"""``data.ptbxl_rate`` -> the ``ptbxl_database.csv`` column naming the record files."""
_BASE_CSV_COLUMNS = ("ecg_id", "patient_id", "report", "scp_codes", "strat_fold")


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


def _listed_records(root: Path, max_ecg_id: int | None, rate: int) -> pd.DataFrame:
    """Rows of ``ptbxl_database.csv`` with ``ecg_id <= max_ecg_id`` (``None``: all), with
    ``path`` (absolute, no extension) of the ``rate`` Hz files and ``exists`` (both the
    ``.hea`` and the ``.dat`` file are there)."""
    if rate not in RATE_COLUMNS:
        raise ValueError(f"data.ptbxl_rate: expected one of {sorted(RATE_COLUMNS)}, got {rate!r}")
    file_col = RATE_COLUMNS[rate]
    required = (*_BASE_CSV_COLUMNS, file_col)
    base = ptbxl_dir(root).resolve()
    csv_path = base / "ptbxl_database.csv"
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path}: PTB-XL catalog not found")
    df = pd.read_csv(csv_path, usecols=lambda c: c in required,
                     dtype={"report": str, "scp_codes": str, file_col: str})
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"{csv_path}: missing column(s) {', '.join(missing)} "
                         f"(data.ptbxl_rate is {rate})")
    if max_ecg_id is not None:
        df = df[df["ecg_id"] <= max_ecg_id]
    df = df.copy()
    df["path"] = [str(base / f) if isinstance(f, str) and f else "" for f in df[file_col]]
    df["exists"] = [bool(p) and Path(p + ".hea").is_file() and Path(p + ".dat").is_file()
                    for p in df["path"]]
    return df


def missing_ptbxl_records(root: Path, max_ecg_id: int | None, rate: int = 500
                          ) -> pd.DataFrame:
    """Records listed in ``ptbxl_database.csv`` (``ecg_id <= max_ecg_id``; ``None``: all)
    whose ``rate`` Hz ``.hea``/``.dat`` files are not on disk.

    Returns:
        DataFrame sorted by ``ecg_id`` with ``ecg_id`` (int64) and ``path`` (the expected
        record path, no extension; ``""`` when the CSV names no file).
    """
    df = _listed_records(root, max_ecg_id, rate)
    out = df.loc[~df["exists"], ["ecg_id", "path"]].astype({"ecg_id": "int64"})
    return out.sort_values("ecg_id").reset_index(drop=True)


def load_ptbxl_catalog(root: Path, max_ecg_id: int | None, rate: int = 500) -> pd.DataFrame:
    """Load the PTB-XL catalog of records with ``ecg_id <= max_ecg_id`` whose files exist.

    Args:
        root: data root holding ``ptbxl/ptbxl_database.csv`` (the ``ptbxl`` folder itself is
            accepted too).
        max_ecg_id: keep rows with ``ecg_id <= max_ecg_id``; ``None``: every row.
        rate: ``500`` reads ``filename_hr`` (``records500/``), ``100`` ``filename_lr``.

    Returns:
        DataFrame sorted by ``ecg_id`` with columns ``ecg_id`` (int64), ``patient_id`` (int64),
        ``report`` (str), ``scp_codes`` (JSON text of a dict code -> likelihood),
        ``strat_fold`` (int64, 1-10), ``path`` (absolute record path at ``rate`` Hz, no
        extension). Only rows whose ``.hea`` and ``.dat`` files both exist are kept; the others
        are listed by :func:`missing_ptbxl_records` (the shard build reports them).

    Raises:
        FileNotFoundError: no ``ptbxl_database.csv`` under ``root``.
        ValueError: a required column is missing or a value cannot be parsed (names it).
    """
    csv_path = ptbxl_dir(root).resolve() / "ptbxl_database.csv"
    df = _listed_records(root, max_ecg_id, rate)
    df = df[df["exists"]]
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


LABEL_KINDS: tuple[str, ...] = ("superclass", "subclass", "diagnostic", "form", "rhythm")
"""Label groups of :func:`scp_labels` (PTB-XL benchmark tasks, Wagner et al./Strodthoff et al.)."""
_STATEMENT_COLUMNS = ("diagnostic", "form", "rhythm", "diagnostic_class", "diagnostic_subclass")


def load_scp_statements(root: Path) -> pd.DataFrame | None:
    """``scp_statements.csv`` indexed by SCP code, or ``None`` when the file is absent (the
    synthetic dataset has none).

    Raises:
        CatalogError: a required column is missing.
    """
    path = ptbxl_dir(root) / "scp_statements.csv"
    if not path.is_file():
        return None
    table = pd.read_csv(path, index_col=0)
    missing = [c for c in _STATEMENT_COLUMNS if c not in table.columns]
    if missing:
        raise CatalogError(str(path), ", ".join(missing), "missing column(s), expected "
                                                          f"{list(_STATEMENT_COLUMNS)}")
    return table


def scp_labels(codes: dict[str, float], statements: pd.DataFrame | None,
               min_likelihood: float = 0.0) -> dict[str, list[str]]:
    """Aggregate one record's SCP codes into the PTB-XL label groups.

    Args:
        codes: ``{code: likelihood}`` (likelihood 0-100 for diagnostic statements; form and
            rhythm statements are recorded with 0).
        statements: :func:`load_scp_statements` (``None``: every group empty).
        min_likelihood: diagnostic statements below it are ignored (form/rhythm never are).

    Returns:
        ``{"superclass": [...], "subclass": [...], "diagnostic": [...], "form": [...],
        "rhythm": [...]}``, each sorted and unique; unknown codes are ignored.
    """
    out: dict[str, set[str]] = {k: set() for k in LABEL_KINDS}
    if statements is not None:
        for code, likelihood in codes.items():
            if code not in statements.index:
                continue
            row = statements.loc[code]
            if row["diagnostic"] == 1.0 and float(likelihood) >= min_likelihood:
                out["diagnostic"].add(code)
                if isinstance(row["diagnostic_class"], str):
                    out["superclass"].add(row["diagnostic_class"])
                if isinstance(row["diagnostic_subclass"], str):
                    out["subclass"].add(row["diagnostic_subclass"])
            if row["form"] == 1.0:
                out["form"].add(code)
            if row["rhythm"] == 1.0:
                out["rhythm"].add(code)
    return {k: sorted(v) for k, v in out.items()}


def add_scp_labels(catalog: pd.DataFrame, root: Path, min_likelihood: float = 0.0
                   ) -> pd.DataFrame:
    """``catalog`` (from :func:`load_ptbxl_catalog`) plus a ``labels`` column: JSON text of
    :func:`scp_labels` for each row's ``scp_codes``."""
    statements = load_scp_statements(root)
    labels = [json.dumps(scp_labels(json.loads(c), statements, min_likelihood), sort_keys=True)
              for c in catalog["scp_codes"]]
    return catalog.assign(labels=labels)
