"""Zero-shot transfer: the PTB-XL superclass classifier scored on PhysioNet/CinC 2021 records.

The prototypes of :mod:`ecglm.evaluation.classify` come from the training dataset (PTB-XL
train split); the test records come from another dataset, read with the data package's CinC
2021 catalog and reader. Their SNOMED-CT ``# Dx`` codes are mapped to PTB-XL superclasses with
the small table :data:`SNOMED_TO_SUPERCLASS`, restricted to codes whose PTB-XL counterpart is
unambiguous:

=================  =========================================================  ==========
SNOMED-CT          diagnosis (PTB-XL statement)                               superclass
=================  =========================================================  ==========
164865005          myocardial infarction (IMI/AMI...)                         MI
164934002          T-wave abnormal (NT\\_, INVT)                               STTC
59931005           T-wave inversion (INVT)                                    STTC
55930002           ST changes (NST\\_)                                         STTC
428750005          nonspecific ST-T abnormality (NDT)                         STTC
164930006          ST interval abnormal (STD\\_/STE\\_)                          STTC
111975006          prolonged QT interval (LNGQT)                              STTC
270492004          1st degree AV block (1AVB)                                 CD
164909002          left bundle branch block (CLBBB)                           CD
59118001           right bundle branch block (CRBBB)                          CD
713427006          complete right bundle branch block (CRBBB)                 CD
713426002          incomplete right bundle branch block (IRBBB)               CD
698252002          nonspecific intraventricular conduction disorder (IVCD)    CD
445118002          left anterior fascicular block (LAFB)                      CD
164873001          left ventricular hypertrophy (LVH)                         HYP
89792004           right ventricular hypertrophy (RVH)                        HYP
67741000119109     left atrial enlargement (LAO/LAE)                          HYP
253352002          left atrial abnormality (LAO/LAE)                          HYP
426783006 alone    sinus rhythm and no other diagnosis                        NORM
=================  =========================================================  ==========

Codes in :data:`NEUTRAL_CODES` (rhythm, ectopic beats, voltage-only statements: no PTB-XL
diagnostic superclass) add no label. A record is kept when its codes are all in the table or
neutral and it has at least one mapped code, or when its only code is sinus rhythm (NORM);
every other record (an unmapped code such as "anterior ischemia", or rhythm codes only, whose
NORM status is unknown) is left out and counted as ``n_excluded`` with the reason.
"""

from __future__ import annotations

import html
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ecglm.data.catalogs.cinc2021 import load_cinc_catalog
from ecglm.data.errors import RecordError
from ecglm.data.records import read_wfdb
from ecglm.evaluation.classify import SUPERCLASSES, zero_shot_eval

SINUS_RHYTHM = "426783006"
"""SNOMED-CT code of (normal) sinus rhythm."""

SNOMED_TO_SUPERCLASS: dict[str, str] = {
    "164865005": "MI",
    "164934002": "STTC", "59931005": "STTC", "55930002": "STTC", "428750005": "STTC",
    "164930006": "STTC", "111975006": "STTC",
    "270492004": "CD", "164909002": "CD", "59118001": "CD", "713427006": "CD",
    "713426002": "CD", "698252002": "CD", "445118002": "CD",
    "164873001": "HYP", "89792004": "HYP", "67741000119109": "HYP",
    "253352002": "HYP",
}
"""SNOMED-CT code -> PTB-XL superclass (see the module table)."""

NEUTRAL_CODES: frozenset[str] = frozenset({
    SINUS_RHYTHM, "426177001", "427084000", "427393009", "284470004", "427172004",
    "713422000", "251170000", "251187003", "164889003", "164890007", "17338001",
    "55827005",
})
"""Codes without a PTB-XL diagnostic superclass: sinus rhythm/bradycardia/tachycardia/
arrhythmia, atrial and ventricular premature or escape beats, atrial tachycardia, atrial
fibrillation/flutter, and left ventricular high voltage (PTB-XL's VCLVH is a form statement)."""

TRANSFER_DATASETS: tuple[str, ...] = ("cinc2021",)
"""Values of ``evaluation.transfer`` besides None."""


def snomed_labels(dx: Sequence[str], classes: Sequence[str] = SUPERCLASSES
                  ) -> tuple[Optional[np.ndarray], str]:
    """``(0/1 label row (C,), "")`` for a record's Dx codes, or ``(None, reason)`` when the
    record must be left out (see module doc)."""
    codes = [str(c).strip() for c in dx if str(c).strip()]
    unknown = [c for c in codes if c not in SNOMED_TO_SUPERCLASS and c not in NEUTRAL_CODES]
    if unknown:
        return None, f"unmapped code(s) {','.join(unknown)}"
    row = np.zeros(len(classes), dtype=np.int64)
    mapped = {SNOMED_TO_SUPERCLASS[c] for c in codes if c in SNOMED_TO_SUPERCLASS}
    if not mapped:
        if set(codes) == {SINUS_RHYTHM} and "NORM" in classes:
            mapped = {"NORM"}
        else:
            return None, "no diagnostic code (NORM status unknown)"
    for c in mapped:
        if c in classes:
            row[list(classes).index(c)] = 1
    return row, ""


@dataclass
class TransferSet:
    """Records of the target dataset: ``record_ids``, ``signals`` (N, 12, T) mV, labels ``y``
    (N, C), ``sources`` (database per record), ``excluded`` (record id -> reason)."""

    record_ids: list[str]
    signals: np.ndarray
    y: np.ndarray
    sources: list[str]
    excluded: dict[str, str] = field(default_factory=dict)


def load_cinc2021(root: Path, fs: int, n_samples: int, policy: Any = None,
                  classes: Sequence[str] = SUPERCLASSES) -> TransferSet:
    """CinC 2021 records under ``root`` with mappable labels, resampled to ``fs`` Hz and
    cropped/padded to ``n_samples`` (``policy``: :class:`NormalizeConfig`, None = defaults).

    Raises:
        FileNotFoundError: ``root`` holds no ``.hea`` file.
    """
    root = Path(root)
    cat = load_cinc_catalog(root) if root.is_dir() else None
    if cat is None or cat.empty:
        raise FileNotFoundError(f"evaluation.transfer: no CinC 2021 headers (*.hea) under {root}")
    ids, sigs, ys, srcs, excluded = [], [], [], [], {}
    for _, row in cat.iterrows():
        y, why = snomed_labels(list(row["dx"]), classes)
        if y is None:
            excluded[str(row["record_id"])] = why
            continue
        try:
            x, _ = read_wfdb(row["path"], fs, n_samples, policy)
        except RecordError as err:
            excluded[str(row["record_id"])] = f"unreadable: {err}"
            continue
        ids.append(str(row["record_id"]))
        sigs.append(np.asarray(x, dtype=np.float32))
        ys.append(y)
        srcs.append(str(row["source"]))
    signals = np.stack(sigs) if sigs else np.zeros((0, 12, n_samples), np.float32)
    y_all = np.stack(ys) if ys else np.zeros((0, len(classes)), np.int64)
    return TransferSet(ids, signals, y_all, srcs, excluded)


def transfer_eval(train_emb: np.ndarray, train_y: np.ndarray, target_emb: np.ndarray,
                  target: TransferSet, classes: Sequence[str] = SUPERCLASSES
                  ) -> dict[str, Any]:
    """Prototype classifier (training records) scored on ``target``.

    Returns:
        ``{"metrics": {"macro_auc", "macro_f1", "hamming_loss", "subset_accuracy",
        "n_labels_used", "n_records", "n_excluded"}, "classes_used": [...],
        "prevalence": {class: share}, "sources": {db: n}, "excluded": {id: reason}}``;
        only classes with positive and negative target records enter the macro means.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        m = zero_shot_eval(train_emb, train_y, target_emb, target.y, classes)
    used = [c for k, c in enumerate(classes)
            if len(target.y) and target.y[:, k].min() != target.y[:, k].max()]
    m.update(n_records=float(len(target.record_ids)), n_excluded=float(len(target.excluded)))
    prev = {c: float(target.y[:, k].mean()) if len(target.y) else 0.0
            for k, c in enumerate(classes)}
    sources: dict[str, int] = {}
    for s in target.sources:
        sources[s] = sources.get(s, 0) + 1
    return {"metrics": m, "classes_used": used, "prevalence": prev, "sources": sources,
            "excluded": dict(target.excluded)}


def transfer_html(name: str, results: dict[str, dict[str, Any]]) -> str:
    """HTML table: one row per encoder (``results``: encoder name -> :func:`transfer_eval`)."""
    first = next(iter(results.values()), None)
    if first is None:
        return ""
    keys = ("macro_auc", "macro_f1", "hamming_loss", "subset_accuracy")
    head = "".join(f"<th>{k}</th>" for k in keys)
    rows = "".join(
        f"<tr><td>{html.escape(enc)}</td>" + "".join(
            f"<td>{r['metrics'][k]:.3f}</td>" if k in r["metrics"] else "<td>-</td>"
            for k in keys) + "</tr>" for enc, r in results.items())
    prev = ", ".join(f"{c} {p:.2f}" for c, p in first["prevalence"].items())
    src = ", ".join(f"{s}: {n}" for s, n in first["sources"].items())
    return (f"<p>Zero-shot transfer to {html.escape(name)}: prototypes from the training "
            f"split, {int(first['metrics']['n_records'])} target records ({html.escape(src)}), "
            f"{int(first['metrics']['n_excluded'])} left out (codes without a confident "
            f"superclass mapping). Classes scored: {html.escape(', '.join(first['classes_used']))}"
            f"; prevalence {html.escape(prev)}.</p><table><tr><th>encoder</th>{head}</tr>"
            f"{rows}</table>")
