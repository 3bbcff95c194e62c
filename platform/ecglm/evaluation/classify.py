"""PTB-XL superclass classification: zero-shot from encoder embeddings and from text.

Labels: the five PTB-XL diagnostic superclasses (NORM, MI, STTC, CD, HYP) of each record,
from its SCP codes through ``scp_statements.csv`` (``diagnostic_class``), keeping diagnostic
statements with likelihood >= ``min_likelihood`` (default 50). The mapping is
:func:`ecglm.data.ptbxl.scp_labels`.

* Embeddings (:func:`zero_shot_scores`): every record is embedded by the ECG encoder
  (pooled, L2-normalised). For each class, a positive prototype is the normalised mean
  embedding of the training records with the class, a negative one that of the records
  without it. The score is ``cos(e, pos_c) - cos(e, neg_c)`` (range [-2, 2]); the label is
  predicted when the score is > 0 (closer to the positive prototype). No classifier is fitted.
* Text (:func:`extract_labels`): keyword matching of class names and their usual phrasings
  (English and the German of PTB-XL's reports) in a generated or reference report; a match
  preceded by a negation ("no", "without", "kein"...) within three words is ignored.

Metrics come from :func:`ecglm.evaluation.metrics.classification_metrics` (macro AUC, macro F1,
Hamming loss, subset accuracy).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pyarrow.parquet as pq

from ecglm.data.ptbxl import load_scp_statements, scp_labels
from ecglm.data.sharding import decode_signals

from ecglm.evaluation.metrics import classification_metrics
from ecglm.retrieval.build import embed

SUPERCLASSES: tuple[str, ...] = ("NORM", "MI", "STTC", "CD", "HYP")

KEYWORDS: dict[str, tuple[str, ...]] = {
    "NORM": (r"normal (?:ecg|ekg)", r"normales? ekg", r"within normal limits",
             r"no (?:significant )?abnormalit"),
    "MI": (r"infarct", r"infarkt", r"myocardial infarction", r"\bmi\b", r"\b[ai]mi\b",
           r"pathologic(?:al)? q waves?"),
    "STTC": (r"st(?:-| )?(?:segment )?(?:depression|elevation|changes?)", r"st-t",
             r"t(?:-| )?wave (?:inversion|changes?|abnormalit)", r"ischa?emi",
             r"st-(?:senkung|hebung|strecken)", r"t-negativierung", r"repolari[sz]ation",
             r"repolarisationsst"),
    "CD": (r"bundle branch block", r"\b[lr]bbb\b", r"schenkelblock", r"\bav[- ]block",
           r"(?:first|second|third|1st|2nd|3rd)[- ]degree (?:av )?block", r"\b1avb\b",
           r"hemiblock", r"fascicular block", r"intraventricular conduction", r"\bivcd\b",
           r"wolff|\bwpw\b", r"conduction (?:delay|disturbance|defect)"),
    "HYP": (r"hypertroph", r"\b[lr]vh\b", r"atrial (?:enlargement|overload)",
            r"ventricular (?:enlargement|overload)", r"p[- ](?:mitrale|pulmonale)"),
}
_NEGATIONS = {"no", "not", "without", "kein", "keine", "keinen", "ohne", "negative", "nicht"}


def superclass_matrix(scp_codes: Sequence[str | Mapping[str, float]], statements: Any,
                      min_likelihood: float = 50.0,
                      classes: Sequence[str] = SUPERCLASSES) -> np.ndarray:
    """(N, C) 0/1 superclass labels of N records.

    Args:
        scp_codes: per record, ``{code: likelihood}`` or its JSON text.
        statements: ``scp_statements.csv`` as from :func:`ecglm.data.ptbxl.load_scp_statements`.
        min_likelihood: diagnostic statements below it (0-100) are ignored.
    """
    col = {c: i for i, c in enumerate(classes)}
    y = np.zeros((len(scp_codes), len(classes)), dtype=np.int64)
    for n, codes in enumerate(scp_codes):
        d = json.loads(codes) if isinstance(codes, str) else dict(codes)
        for sup in scp_labels(d, statements, min_likelihood)["superclass"]:
            if sup in col:
                y[n, col[sup]] = 1
    return y


def find_statements(roots: Sequence[str | Path]) -> Any:
    """``scp_statements.csv`` from the first root that has one.

    Raises:
        FileNotFoundError: none of ``roots`` holds ``ptbxl/scp_statements.csv``.
    """
    for root in roots:
        table = load_scp_statements(Path(root))
        if table is not None:
            return table
    raise FileNotFoundError(f"classification: no ptbxl/scp_statements.csv under {list(roots)}"
                            " (needed to map SCP codes to superclasses)")


# --------------------------------------------------------------------------------------------
# zero-shot from embeddings
# --------------------------------------------------------------------------------------------

def _unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(n, 1e-12)


@dataclass
class Prototypes:
    """Per-class normalised mean embeddings: ``pos``/``neg`` (C, d); rows of classes without
    positive (or negative) training records are NaN."""

    pos: np.ndarray
    neg: np.ndarray
    classes: tuple[str, ...]


def build_prototypes(emb: np.ndarray, y: np.ndarray,
                     classes: Sequence[str] = SUPERCLASSES) -> Prototypes:
    """Prototypes from training embeddings ``emb`` (N, d) and labels ``y`` (N, C)."""
    e = _unit(np.asarray(emb, dtype=np.float64))
    y = np.asarray(y).astype(bool)
    d = e.shape[1]
    pos = np.full((y.shape[1], d), np.nan)
    neg = np.full((y.shape[1], d), np.nan)
    for c in range(y.shape[1]):
        if y[:, c].any():
            pos[c] = _unit(e[y[:, c]].mean(0))
        if (~y[:, c]).any():
            neg[c] = _unit(e[~y[:, c]].mean(0))
    return Prototypes(pos, neg, tuple(classes))


def zero_shot_scores(emb: np.ndarray, protos: Prototypes) -> np.ndarray:
    """(M, C) scores ``cos(e, pos_c) - cos(e, neg_c)`` of M embeddings (NaN rows -> 0)."""
    e = _unit(np.asarray(emb, dtype=np.float64))
    s = e @ np.nan_to_num(protos.pos).T - e @ np.nan_to_num(protos.neg).T
    return s


def zero_shot_eval(train_emb: np.ndarray, train_y: np.ndarray, test_emb: np.ndarray,
                   test_y: np.ndarray, classes: Sequence[str] = SUPERCLASSES
                   ) -> dict[str, float]:
    """Macro AUC / F1 / Hamming loss of the prototype classifier (predict where score > 0)."""
    scores = zero_shot_scores(test_emb, build_prototypes(train_emb, train_y, classes))
    return classification_metrics(test_y, y_score=scores, y_pred=(scores > 0).astype(int),
                                  label_names=list(classes))


# --------------------------------------------------------------------------------------------
# labels from text
# --------------------------------------------------------------------------------------------

def _negated(text: str, start: int) -> bool:
    words = re.findall(r"[a-zäöüß]+", text[max(0, start - 40):start])
    return any(w in _NEGATIONS for w in words[-3:])


def extract_labels(text: str, classes: Sequence[str] = SUPERCLASSES) -> list[str]:
    """Superclasses named in ``text`` (keyword match, negations skipped), in ``classes`` order.

    >>> extract_labels("Sinus rhythm. Left bundle branch block. No signs of infarction.")
    ['CD']
    """
    t = " ".join(str(text).lower().split())
    found = []
    for c in classes:
        for pat in KEYWORDS.get(c, (re.escape(c.lower()),)):
            if any(not _negated(t, m.start()) for m in re.finditer(pat, t)):
                found.append(c)
                break
    if "NORM" in found and len(found) > 1 and re.search(r"\babnormal", t):
        found.remove("NORM")
    return found


def text_label_matrix(texts: Sequence[str], classes: Sequence[str] = SUPERCLASSES
                      ) -> np.ndarray:
    """(N, C) 0/1 labels extracted from N texts."""
    y = np.zeros((len(texts), len(classes)), dtype=np.int64)
    for n, t in enumerate(texts):
        for c in extract_labels(t, classes):
            y[n, list(classes).index(c)] = 1
    return y


def text_classification_eval(texts: Sequence[str], y_true: np.ndarray,
                             classes: Sequence[str] = SUPERCLASSES) -> dict[str, float]:
    """Macro F1 / Hamming loss / subset accuracy of labels extracted from N texts (no AUC:
    text gives no scores)."""
    return classification_metrics(y_true, y_pred=text_label_matrix(texts, classes),
                                  label_names=list(classes))


# --------------------------------------------------------------------------------------------
# on shards
# --------------------------------------------------------------------------------------------

class ShardSignals:
    """Signals of chosen rows of a records folder, read on demand: ``len()`` and slicing
    (``signals[i:j]`` -> float32 ``(j - i, 12, T)`` mV) like an ``(N, 12, T)`` array, without
    holding the split in memory (one Parquet file's signal column is cached at a time).

    Args:
        rows: ``(file, row in file)`` of each record, in order.
        n_samples: samples per lead.
    """

    def __init__(self, rows: list[tuple[Path, int]], n_samples: int) -> None:
        self.rows, self.n_samples = rows, n_samples
        self._cached: tuple[Path | None, Any] = (None, None)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.rows), 12, self.n_samples)

    def _column(self, file: Path) -> Any:
        if self._cached[0] != file:
            table = pq.read_table(file, columns=["signal"], memory_map=True)
            self._cached = (file, table.column("signal"))
        return self._cached[1]

    def __getitem__(self, index: slice) -> np.ndarray:
        if not isinstance(index, slice):
            raise TypeError(f"ShardSignals: index with a slice, got {type(index).__name__}")
        part = self.rows[index]
        out = np.empty((len(part), 12, self.n_samples), np.float32)
        for k, (file, row) in enumerate(part):
            out[k] = decode_signals(self._column(file)[row].as_py(), 1, self.n_samples)[0]
        return out


@dataclass
class RecordSet:
    """Records of one split: ``ecg_ids`` (N,), ``signals`` (N, 12, T) mV (an array, or
    :class:`ShardSignals` read in batches), ``reports``, ``scp_codes`` (JSON texts)."""

    ecg_ids: list[int]
    signals: Any
    reports: list[str]
    scp_codes: list[str]


def read_records(records: Path, split: str) -> RecordSet:
    """Records of ``split`` from a records Parquet folder (shard order); the signals stay on
    disk until sliced (:class:`ShardSignals`)."""
    ids: list[int] = []
    reports: list[str] = []
    codes: list[str] = []
    where: list[tuple[Path, int]] = []
    n_samples = 0
    for f in sorted(Path(records).glob("*.parquet")):
        t = pq.read_table(f, columns=["ecg_id", "split", "n_samples", "report",
                                      "scp_codes"]).to_pydict()
        for i, s in enumerate(t["split"]):
            if s == split:
                ids.append(int(t["ecg_id"][i]))
                reports.append(str(t["report"][i] or ""))
                codes.append(str(t["scp_codes"][i] or "{}"))
                where.append((f, i))
                n_samples = int(t["n_samples"][i])
    return RecordSet(ids, ShardSignals(where, n_samples), reports, codes)


def embed_signals(encoder: Any, signals: np.ndarray, batch: int = 16) -> np.ndarray:
    """Pooled embeddings (N, d) of ``signals`` (N, 12, T) mV by ``encoder`` (eval mode)."""
    parts = [embed(encoder, signals[i:i + batch]) for i in range(0, len(signals), batch)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def classification_report(encoder: Any, train: RecordSet, test: RecordSet, statements: Any,
                          min_likelihood: float = 50.0,
                          neighbour_reports: Optional[Sequence[str]] = None
                          ) -> dict[str, Any]:
    """Zero-shot superclass metrics of ``encoder`` on ``test`` (prototypes from ``train``),
    plus text-extraction metrics on the reference reports (a ceiling for the keyword matcher)
    and, when given, on nearest-neighbour reports (one per test record).

    Returns:
        ``{"metrics": {"zero_shot/macro_auc", ..., "text_reference/macro_f1", ...},
        "prevalence": {class: share of test records}, "n_train", "n_test"}``
    """
    y_tr = superclass_matrix(train.scp_codes, statements, min_likelihood)
    y_te = superclass_matrix(test.scp_codes, statements, min_likelihood)
    out: dict[str, float] = {}
    zs = zero_shot_eval(embed_signals(encoder, train.signals), y_tr,
                        embed_signals(encoder, test.signals), y_te)
    out.update({f"zero_shot/{k}": v for k, v in zs.items()})
    out.update({f"text_reference/{k}": v for k, v in
                text_classification_eval(test.reports, y_te).items()})
    if neighbour_reports is not None:
        out.update({f"text_retrieved/{k}": v for k, v in
                    text_classification_eval(list(neighbour_reports), y_te).items()})
    prev = {c: float(y_te[:, i].mean()) if len(y_te) else 0.0
            for i, c in enumerate(SUPERCLASSES)}
    return {"metrics": out, "prevalence": prev, "n_train": len(train.ecg_ids),
            "n_test": len(test.ecg_ids)}
