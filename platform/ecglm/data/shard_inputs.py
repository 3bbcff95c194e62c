"""What a shard build reads before and around the records: the catalog of ``data.dataset``
with splits, labels and file fingerprints, the digest of all input files, and the QA items
turned into per-split rows (items whose ECGs were quarantined or fall in different splits are
quarantined themselves).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ecglm.config.schema import DataConfig, ExperimentConfig
from ecglm.data.datasets import load_dataset_catalog, meta_files
from ecglm.data.ecgqa import QAItem, qa_dir
from ecglm.data.ptbxl import add_scp_labels, load_ptbxl_catalog, ptbxl_dir
from ecglm.data.sharding import files_fingerprint, fingerprints
from ecglm.data.source import DataSource
from ecglm.data.qa_source import release_record_splits, resolve_qa_layout
from ecglm.data.splits import SPLITS, record_splits


def select_items(items: list[QAItem], max_items: int | None, seed: int) -> list[QAItem]:
    """At most ``max_items`` of ``items`` (a seeded random subset, original order kept)."""
    if max_items is None or len(items) <= max_items:
        return items
    keep = np.random.default_rng(seed).choice(len(items), size=max_items, replace=False)
    return [items[i] for i in sorted(int(k) for k in keep)]


def with_fingerprints(catalog: pd.DataFrame) -> pd.DataFrame:
    """``catalog`` plus ``source_fp`` (fingerprint) and ``source_bytes`` of each ``path``."""
    fps = fingerprints(catalog["path"].tolist())
    return catalog.assign(source_fp=[fps[p][0] for p in catalog["path"]],
                          source_bytes=[fps[p][1] for p in catalog["path"]])


def shard_catalog(cfg: ExperimentConfig, source: DataSource) -> pd.DataFrame:
    """Catalog of ``data.dataset`` with ``split``, ``labels`` (JSON) and the files'
    ``source_fp`` / ``source_bytes`` (plus ``record`` for datasets other than PTB-XL)."""
    dcfg = cfg.data
    if dcfg.dataset != "ptbxl":
        catalog = load_dataset_catalog(dcfg, source.root, cfg.seed)
        ids = catalog["ecg_id"].tolist()  # a release ECG-QA layout (MIMIC) sets the splits
        official = release_record_splits(dcfg, source.root, ids,
                                         dict(zip(ids, catalog["split"].tolist())))
        return with_fingerprints(catalog.assign(split=[official[e] for e in ids]))
    catalog = load_ptbxl_catalog(source.root, dcfg.max_ecg_id, dcfg.ptbxl_rate)
    if catalog.empty:
        raise ValueError(f"data.max_ecg_id: no PTB-XL record with ecg_id <= {dcfg.max_ecg_id} "
                         f"and {dcfg.ptbxl_rate} Hz files found under {source.root}")
    ids, folds = catalog["ecg_id"].tolist(), catalog["strat_fold"].tolist()
    if _is_release(dcfg, source.root):  # official splits: split lists, items, then strat_fold
        by_fold = record_splits(ids, [], folds, "strat_fold", 0.0, 0.1, cfg.seed, source.root)
        splits = release_record_splits(dcfg, source.root, ids, by_fold)
    else:
        splits = record_splits(ids, catalog["patient_id"].tolist(), folds, dcfg.qa_split,
                               dcfg.valid_fraction, dcfg.test_fraction, cfg.seed, source.root)
    catalog = add_scp_labels(catalog.assign(split=catalog["ecg_id"].map(splits)), source.root,
                             dcfg.scp_min_likelihood)
    return with_fingerprints(catalog)


def _is_release(dcfg: DataConfig, root: Path) -> bool:
    """Whether ``dcfg`` resolves to a release-layout ECG-QA source."""
    layout = resolve_qa_layout(dcfg, root)
    return layout is not None and layout.kind == "release"


def input_fingerprint(catalog: pd.DataFrame, root: Path, dataset: str = "ptbxl",
                      qa_files: Sequence[Path] = ()) -> str:
    """Digest of the metadata files (PTB-XL CSVs and ECG-QA files, or the dataset's catalog
    files), the ECG-QA files in use (``qa_files``: :func:`~ecglm.data.qa_source.qa_input_files`)
    and every record's files."""
    meta = ([f for d in (ptbxl_dir(root), qa_dir(root)) if d.is_dir()
             for f in d.iterdir() if f.is_file()] if dataset == "ptbxl"
            else meta_files(dataset, root))
    meta = sorted(set(meta) | set(qa_files))
    h = hashlib.sha1(files_fingerprint(meta).encode())
    for e, fp in sorted(zip(catalog["ecg_id"].tolist(), catalog["source_fp"].tolist())):
        h.update(f"{e}:{fp};".encode())
    return h.hexdigest()


def qa_rows(qa_items: list[QAItem], splits: dict[int, str], bad_ids: set[int],
            signal_of: dict[int, bytes] | None, patient_of: dict[int, int], n_samples: int,
            quarantine: list[dict]) -> dict[str, list[dict]]:
    """QA shard rows per split (``QA_SCHEMA`` of :mod:`ecglm.data.shards`, unsorted).

    Args:
        qa_items: the selected ECG-QA items.
        splits: split of each ``ecg_id``.
        bad_ids: quarantined ``ecg_id`` values.
        signal_of: int16 microvolt bytes of each usable ``ecg_id``; ``None`` leaves the
            ``signals`` field out (the shard build joins signals on its workers).
        patient_of: patient of each ``ecg_id``.
        n_samples: samples per lead of every signal.
        quarantine: list the quarantined items are appended to (``{"id": "qa:<id>", ...}``).
    """
    rows: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for it in qa_items:
        bad = [e for e in it.ecg_ids if e in bad_ids]
        if bad:
            quarantine.append({"id": f"qa:{it.sample_id}",
                               "reason": f"ECG(s) {bad} quarantined"})
            continue
        item_splits = sorted({splits[e] for e in it.ecg_ids})
        if len(item_splits) > 1:  # a comparison across splits would leak patients
            quarantine.append({"id": f"qa:{it.sample_id}",
                               "reason": f"ECGs {list(it.ecg_ids)} fall in different splits "
                                         f"{item_splits}; left out to keep splits disjoint"})
            continue
        if it.split is not None and item_splits != [it.split]:  # release item: official split
            quarantine.append({"id": f"qa:{it.sample_id}",
                               "reason": f"official split {it.split!r} but its ECGs "
                                         f"{list(it.ecg_ids)} are in split {item_splits[0]!r} "
                                         f"(used by items of another split); left out"})
            continue
        split = item_splits[0]
        row = {
            "sample_id": it.sample_id, "template_id": it.template_id,
            "question_type": it.question_type, "attribute_type": it.attribute_type,
            "question": it.question, "answer": it.answer, "options": it.options,
            "ecg_ids": it.ecg_ids, "patient_ids": [patient_of[e] for e in it.ecg_ids],
            "n_ecg": len(it.ecg_ids), "n_samples": n_samples, "split": split}
        if signal_of is not None:
            row["signals"] = b"".join(signal_of[e] for e in it.ecg_ids)
        rows[split].append(row)
    return rows
