"""PhysioNet/CinC Challenge 2020/2021 catalog: WFDB headers with ``# Age``, ``# Sex`` and
``# Dx`` (SNOMED-CT codes), signals in ``.mat``.

The challenge data has no patient identifiers, so each record is its own patient (documented
limitation: patient-level splits are record-level here). The record-name prefix tells the source
database.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pandas as pd
import wfdb

from ecglm.data.errors import CatalogError
from ecglm.data.readers.wfdb_format import parse_comments

CINC_COLUMNS: tuple[str, ...] = ("record_id", "patient_id", "path", "source", "age", "sex",
                                 "dx", "dx_names", "fs", "n_samples")
"""Columns of :func:`load_cinc_catalog`."""
SOURCES: dict[str, str] = {
    "A": "CPSC2018", "Q": "CPSC2018-extra", "I": "INCART", "S": "PTB", "HR": "PTB-XL",
    "E": "Georgia (G12EC)", "JS": "Chapman-Shaoxing/Ningbo",
}
"""Record-name prefix -> source database."""
_PREFIX_RE = re.compile(r"^([A-Za-z]+)")


def load_dx_mapping(path: Path) -> dict[str, str]:
    """SNOMED code -> diagnosis name from a mapping CSV.

    Accepts the challenge's ``dx_mapping_scored.csv``/``dx_mapping_unscored.csv`` (columns
    ``Dx``, ``SNOMEDCTCode``) and ECG-Bench's ``dx_mapping_from_ecgbench.csv`` (``snomed_code``,
    ``dx_name``).

    Raises:
        CatalogError: neither column pair is present.
    """
    with Path(path).open(newline="") as fh:
        reader = csv.DictReader(fh)
        cols = set(reader.fieldnames or [])
        for code_col, name_col in (("SNOMEDCTCode", "Dx"), ("snomed_code", "dx_name")):
            if {code_col, name_col} <= cols:
                return {str(r[code_col]).strip(): str(r[name_col]).strip() for r in reader}
    raise CatalogError(str(path), "columns", f"got {sorted(cols)}, expected SNOMEDCTCode+Dx "
                                             f"or snomed_code+dx_name")


def load_cinc_catalog(root: Path, mapping: Path | None = None) -> pd.DataFrame:
    """Every ``*.hea`` under ``root`` (recursively) as one catalog row; no signal is read.

    Args:
        root: folder with the challenge's ``.hea``/``.mat`` pairs.
        mapping: SNOMED mapping CSV (:func:`load_dx_mapping`); default: the first of
            ``dx_mapping_scored.csv``, ``dx_mapping_unscored.csv``,
            ``dx_mapping_from_ecgbench.csv`` found in ``root``; none: ``dx_names`` empty.

    Returns:
        DataFrame sorted by ``record_id`` with :data:`CINC_COLUMNS`; ``dx`` is a list of
        SNOMED codes (str), ``dx_names`` their names where known, ``patient_id`` the record
        name.

    Raises:
        CatalogError: a header that wfdb cannot parse (names the file).
    """
    root = Path(root)
    names: dict[str, str] = {}
    candidates = [mapping] if mapping else [root / n for n in (
        "dx_mapping_scored.csv", "dx_mapping_unscored.csv", "dx_mapping_from_ecgbench.csv")]
    for cand in candidates:
        if cand is not None and Path(cand).is_file():
            names.update(load_dx_mapping(Path(cand)))
    rows = []
    for hea in sorted(root.rglob("*.hea")):
        record = str(hea.with_suffix(""))
        try:
            header = wfdb.rdheader(record)
        except Exception as exc:
            raise CatalogError(str(hea), "header", f"unreadable: {type(exc).__name__}: "
                                                   f"{exc}") from exc
        meta = parse_comments(list(header.comments or []))
        prefix = _PREFIX_RE.match(hea.stem)
        key = prefix.group(1).upper() if prefix else ""
        rows.append({"record_id": hea.stem, "patient_id": hea.stem,
                     "path": str(Path(record).resolve()), "source": SOURCES.get(key, key),
                     "age": meta["age"], "sex": meta["sex"], "dx": meta["dx"],
                     "dx_names": [names.get(c, "") for c in meta["dx"]],
                     "fs": float(header.fs), "n_samples": int(header.sig_len or 0)})
    return pd.DataFrame(rows, columns=list(CINC_COLUMNS))
