"""Shard catalogs of the datasets besides PTB-XL (``data.dataset``: ``ludb``, ``cinc2021``,
``mimic``), in the columns the shard build reads (:data:`SHARD_CATALOG_COLUMNS`).

=========  ==========================  ===================  ===================================
dataset    ``ecg_id`` (int64, stable)  ``patient_id``       ``report``
=========  ==========================  ===================  ===================================
ludb       the LUDB ID (1-200)         = ``ecg_id`` (one    diagnoses of ``ludb.csv`` joined
                                       record per patient)  with ``". "``
cinc2021   :func:`cinc_ecg_id` of the  = ``ecg_id`` (the    SNOMED ``# Dx`` names joined with
           record name                 challenge has no     ``", "`` (``SNOMED <code>`` where
                                       patient ids)         the mapping CSV lacks the code)
mimic      ``study_id``                ``subject_id``       cleaned machine report
                                                            (:func:`~ecglm.data.catalogs.
                                                            mimic.clean_report`)
=========  ==========================  ===================  ===================================

Every row keeps the original record name in ``record`` (LUDB ID, CinC name, MIMIC path
``files/pNNNN/pNNNNNNNN/sNNNNNNNN/NNNNNNNN``); ``labels`` is JSON (LUDB ``rhythm`` and
``diagnoses``, CinC ``dx`` codes and ``dx_names``, MIMIC ``{}``); ``scp_codes`` is ``"{}"``
(PTB-XL only). Splits are seeded and patient-level (:func:`ecglm.data.splits.assign_splits`
with ``data.valid_fraction``/``test_fraction`` and the experiment seed). MIMIC-IV-ECG has
ECG-QA items (study ids; :mod:`ecglm.data.qa_source`), whose official splits then override
the seeded split of the records they use; LUDB and CinC 2021 have none (empty QA splits).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from ecglm.config.schema import DataConfig
from ecglm.data.catalogs import load_cinc_catalog, load_ludb_catalog, load_mimic_catalog
from ecglm.data.errors import CatalogError
from ecglm.data.splits import assign_splits

SHARD_CATALOG_COLUMNS: tuple[str, ...] = ("ecg_id", "patient_id", "split", "path", "report",
                                          "scp_codes", "labels", "record")
"""Columns of :func:`load_dataset_catalog` (``source_fp``/``source_bytes`` are added by the
shard build)."""
_CINC_NAME = re.compile(r"^([A-Za-z]{1,3})(\d{1,8})$")
CINC_ID_BASE = 10**8
"""``cinc_ecg_id = prefix_code * CINC_ID_BASE + number``."""


def cinc_ecg_id(name: str) -> int:
    """Stable int64 id of a CinC record name ``<1-3 letters><1-8 digits>``.

    The letters are read as a base-27 number (``A`` = 1 ... ``Z`` = 26), so ``E07500`` ->
    ``5 * 10**8 + 7500`` and ``HR06000`` -> ``(8 * 27 + 18) * 10**8 + 6000``; distinct
    prefixes never collide, and the name is recoverable from the id (up to leading zeros).

    Raises:
        CatalogError: the name does not follow the pattern (names the record).
    """
    match = _CINC_NAME.match(name)
    if match is None:
        raise CatalogError(name, "record", "CinC record name must be 1-3 letters followed by "
                                           "1-8 digits (e.g. E07500, HR06000, JS20011)")
    code = 0
    for ch in match.group(1).upper():
        code = code * 27 + (ord(ch) - ord("A") + 1)
    return code * CINC_ID_BASE + int(match.group(2))


def _ludb(root: Path) -> pd.DataFrame:
    cat = load_ludb_catalog(root)
    return pd.DataFrame({
        "ecg_id": cat["record_id"].astype("int64"),
        "patient_id": cat["patient_id"].astype("int64"),
        "path": cat["path"], "report": cat["report"].fillna("").astype(str),
        "labels": [json.dumps({"rhythm": r, "diagnoses": list(d)}, sort_keys=True)
                   for r, d in zip(cat["rhythm"], cat["diagnoses"])],
        "record": cat["record_id"].astype(str),
    })


def _cinc_report(codes: list[str], names: list[str]) -> str:
    return ", ".join(n if n else f"SNOMED {c}" for c, n in zip(codes, names))


def _cinc(root: Path) -> pd.DataFrame:
    cat = load_cinc_catalog(root)
    ids = [cinc_ecg_id(str(r)) for r in cat["record_id"]]
    seen: dict[int, str] = {}
    for e, r in zip(ids, cat["record_id"]):
        if e in seen:
            raise CatalogError(str(root), "record", f"records {seen[e]} and {r} map to the same "
                                                    f"ecg_id {e} (names differ only in leading "
                                                    f"zeros)")
        seen[e] = str(r)
    return pd.DataFrame({
        "ecg_id": pd.Series(ids, dtype="int64"),
        "patient_id": pd.Series(ids, dtype="int64"),  # no patient ids in the challenge data
        "path": cat["path"],
        "report": [_cinc_report(list(c), list(n)) for c, n in zip(cat["dx"], cat["dx_names"])],
        "labels": [json.dumps({"dx": list(c), "dx_names": list(n)}, sort_keys=True)
                   for c, n in zip(cat["dx"], cat["dx_names"])],
        "record": cat["record_id"].astype(str),
    })


def _mimic(root: Path) -> pd.DataFrame:
    cat = load_mimic_catalog(root)
    return pd.DataFrame({
        "ecg_id": cat["study_id"].astype("int64"),
        "patient_id": cat["patient_id"].astype("int64"),
        "path": cat["path"], "report": cat["report"].astype(str),
        "labels": ["{}"] * len(cat),
        "record": [str(Path(p).relative_to(root.resolve())) for p in cat["path"]],
    })


_LOADERS = {"ludb": _ludb, "cinc2021": _cinc, "mimic": _mimic}


def meta_files(dataset: str, root: Path) -> list[Path]:
    """Catalog files of ``dataset`` under ``root`` whose change invalidates a build
    (``ludb.csv``; the CinC mapping CSVs; MIMIC's two CSVs)."""
    root = Path(root)
    names = {"ludb": ["ludb.csv"],
             "cinc2021": [p.name for p in root.glob("*.csv")],
             "mimic": ["record_list.csv", "machine_measurements.csv"]}[dataset]
    return [root / n for n in sorted(names)]


def load_dataset_catalog(cfg: DataConfig, root: Path, seed: int) -> pd.DataFrame:
    """Shard catalog of ``cfg.dataset`` (not ``ptbxl``) read from ``root``.

    Args:
        cfg: the ``data`` section (``dataset``, ``max_records``, split fractions).
        root: the dataset folder (:func:`ecglm.data.source.dataset_root`).
        seed: seed of the patient-level split.

    Returns:
        DataFrame sorted by ``ecg_id`` with :data:`SHARD_CATALOG_COLUMNS`, at most
        ``cfg.max_records`` rows (the first by ``ecg_id``).

    Raises:
        ValueError: ``cfg.dataset`` is not one of ``ludb``, ``cinc2021``, ``mimic``, or no
            record is found (names ``data.dataset``).
        CatalogError: a malformed catalog file or record name.
    """
    if cfg.dataset not in _LOADERS:
        raise ValueError(f"data.dataset: expected one of {sorted(_LOADERS)} here, "
                         f"got {cfg.dataset!r}")
    cat = _LOADERS[cfg.dataset](Path(root)).sort_values("ecg_id").reset_index(drop=True)
    if cfg.max_records is not None:
        cat = cat.head(cfg.max_records)
    if cat.empty:
        raise ValueError(f"data.dataset: no {cfg.dataset} record found under {root}")
    by_patient = assign_splits(cat["patient_id"].tolist(), cfg.valid_fraction,
                               cfg.test_fraction, seed)
    cat = cat.assign(split=[by_patient[p] for p in cat["patient_id"]], scp_codes="{}")
    return cat[list(SHARD_CATALOG_COLUMNS)]
