"""Data layer: readers (WFDB, WFDB + .mat, CPSC2018 .mat, MIMIC-IV-ECG, LUDB), normalisation
policies, catalogs (PTB-XL, LUDB, CinC 2021, MIMIC-IV-ECG, ECG-QA, ECG-Expert-QA), synthetic
fallback, patient-level splits, Ray Data shards, the shard epoch reader and ``data check``.

Canonical ECG: float32 ``(12, T)`` in mV, lead order :data:`LEADS`, ``fs`` in Hz.

Names are imported on first use (PEP 562), so that Ray workers importing one submodule (e.g.
the shard reader UDF) do not pay for pandas/pyarrow/ray.data imports of the others.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "ECGRecord": "canonical", "RawECG": "canonical", "LEADS": "canonical",
    "clean_report": "catalogs", "load_cinc_catalog": "catalogs",
    "load_ludb_catalog": "catalogs", "load_mimic_catalog": "catalogs",
    "CheckResult": "check", "check_paths": "check",
    "cinc_ecg_id": "datasets", "load_dataset_catalog": "datasets",
    "QAItem": "ecgqa", "candidate_options": "ecgqa", "load_ecgqa_items": "ecgqa",
    "load_ecgqa_json": "ecgqa", "load_ecgqa_split": "ecgqa",
    "CatalogError": "errors", "RecordError": "errors",
    "ExpertQAItem": "expertqa", "load_expert_qa": "expertqa",
    "iter_record_batches": "loader",
    "add_scp_labels": "ptbxl", "load_ptbxl_catalog": "ptbxl", "scp_labels": "ptbxl",
    "missing_ptbxl_records": "ptbxl",
    "QASelection": "qa_source", "load_qa_items": "qa_source", "resolve_qa_layout": "qa_source",
    "find_records": "readers", "read_raw": "readers", "read_record": "readers",
    "read_wfdb": "records",
    "ShardSet": "shards", "build_shards": "shards", "decode_signals": "sharding",
    "encode_signals": "sharding",
    "DataSource": "source", "DataSourceError": "source", "dataset_root": "source",
    "resolve_source": "source",
    "assign_splits": "splits", "load_official_splits": "splits", "load_split_lists": "splits",
    "write_synthetic_dataset": "synthetic",
}
"""Public name -> submodule of :mod:`ecglm.data` that defines it (``normalize`` is not listed:
the name is its submodule; use ``ecglm.data.normalize.normalize``)."""

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import the submodule defining ``name`` on first access."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ecglm.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"ecglm.data.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
