"""Reports of what a shard build could not use from its inputs, written next to the shards.

* ``records_missing.jsonl`` (PTB-XL): records listed in ``ptbxl_database.csv`` (within
  ``data.max_ecg_id``) whose ``data.ptbxl_rate`` Hz files are not on disk, one
  ``{"ecg_id", "path"}`` per line;
* ``qa_unavailable.jsonl``: ECG-QA items left out because some of their ECGs are not available,
  one ``{"sample_id", "split", "missing_ecg_ids"}`` per line.

The manifest gets their counts and paths under ``inputs`` (:func:`write_input_reports`).
"""

from __future__ import annotations

import json
from pathlib import Path

from ecglm.config.schema import DataConfig
from ecglm.data.ptbxl import missing_ptbxl_records
from ecglm.data.qa_source import QASelection, write_unavailable

RECORDS_MISSING = "records_missing.jsonl"
QA_UNAVAILABLE = "qa_unavailable.jsonl"


def write_input_reports(cfg: DataConfig, data_root: Path, qa: QASelection, out: Path,
                        final: Path) -> dict:
    """Write the two reports into ``out`` and return the manifest block.

    Args:
        cfg: the ``data`` section.
        data_root: the resolved data root.
        qa: the build's :class:`~ecglm.data.qa_source.QASelection`.
        out: the folder being written (a temporary sibling of ``final``).
        final: the shard folder's final path (the paths in the block point there).

    Returns:
        ``{"records_missing": n, "records_missing_report": path, "qa": {...counts...,
        "unavailable_report": path}}`` (``records_missing`` is 0 for datasets other than PTB-XL,
        whose catalogs keep only records with files).
    """
    n_missing = 0
    with (Path(out) / RECORDS_MISSING).open("w") as fh:
        if cfg.dataset == "ptbxl":
            missing = missing_ptbxl_records(data_root, cfg.max_ecg_id, cfg.ptbxl_rate)
            n_missing = len(missing)
            for e, p in zip(missing["ecg_id"].tolist(), missing["path"].tolist()):
                fh.write(json.dumps({"ecg_id": int(e), "path": p}) + "\n")
    write_unavailable(qa, Path(out) / QA_UNAVAILABLE)
    if n_missing:
        print(f"[ecglm.data] {n_missing} PTB-XL records listed in ptbxl_database.csv have no "
              f"{cfg.ptbxl_rate} Hz files: see {Path(final) / RECORDS_MISSING}", flush=True)
    if qa.unavailable:
        per_split = {s: c["unavailable"] for s, c in qa.counts.items() if c["unavailable"]}
        print(f"[ecglm.data] {len(qa.unavailable)} ECG-QA items left out, their ECGs are not "
              f"available ({per_split}): see {Path(final) / QA_UNAVAILABLE}", flush=True)
    return {"records_missing": n_missing,
            "records_missing_report": str(Path(final) / RECORDS_MISSING),
            "qa": {**qa.summary(), "unavailable_report": str(Path(final) / QA_UNAVAILABLE)}}
