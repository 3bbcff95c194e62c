"""Texts and labels of the records used for ECG <-> text pretraining.

Each record of the records shards gets one text (``pretrain.text_source``):

* ``statements``: the English descriptions of its SCP codes from ``scp_statements.csv``
  (highest likelihood first, joined with ``"; "``), e.g. ``"normal ECG; sinus rhythm"``;
* ``report``: the free-text report (PTB-XL: mostly German);
* ``both``: statements and report joined with ``". "``.

Records whose text is empty (no known SCP code, empty report) cannot be paired: they are left
out of training and *counted* per split (:attr:`RecordTexts.n_missing`), never dropped silently.

Labels are the five PTB-XL diagnostic superclasses (:func:`ecglm.evaluation.classify.
superclass_matrix`, diagnostic statements with likelihood >= 50 as in the evaluation). When no
``scp_statements.csv`` is found (the synthetic set has none and ``data.shared_root`` may be
absent), :data:`FALLBACK_STATEMENTS` describes the codes the synthetic generator writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from ecglm.data.splits import SPLITS
from ecglm.data.reference import statement_texts
from ecglm.evaluation.classify import SUPERCLASSES, find_statements, superclass_matrix

TextSource = Literal["report", "statements", "both"]

SUPERCLASS_DESCRIPTIONS: dict[str, str] = {
    "NORM": "normal ECG",
    "MI": "myocardial infarction",
    "STTC": "ST/T change",
    "CD": "conduction disturbance",
    "HYP": "hypertrophy",
}
"""Plain-English name of each PTB-XL diagnostic superclass (PTB-XL's class names); ``NORM``
is replaced by the ``NORM`` statement's description when ``scp_statements.csv`` has one."""

FALLBACK_STATEMENTS = pd.DataFrame(
    {
        "description": ["normal ECG", "first degree AV block",
                        "non-specific intraventricular conduction disturbance (block)",
                        "sinus rhythm", "atrial fibrillation", "sinus tachycardia",
                        "sinus bradycardia"],
        "diagnostic": [1.0, 1.0, 1.0, np.nan, np.nan, np.nan, np.nan],
        "form": [np.nan] * 7,
        "rhythm": [np.nan, np.nan, np.nan, 1.0, 1.0, 1.0, 1.0],
        "diagnostic_class": ["NORM", "CD", "CD", np.nan, np.nan, np.nan, np.nan],
        "diagnostic_subclass": ["NORM", "_AVB", "IVCD", np.nan, np.nan, np.nan, np.nan],
    },
    index=pd.Index(["NORM", "1AVB", "IVCD", "SR", "AFIB", "STACH", "SBRAD"]),
)
"""The rows of ``scp_statements.csv`` for the SCP codes of the synthetic dataset (same
columns and values as the PTB-XL file)."""



class PretrainDataError(ValueError):
    """The records cannot feed pretraining (names the split, counts and the fix)."""


def load_statements(roots: Sequence[str | Path]) -> tuple[pd.DataFrame, str]:
    """``scp_statements.csv`` from the first of ``roots`` holding one, else
    :data:`FALLBACK_STATEMENTS`; returns ``(table, where)`` (``where``: path or ``"builtin"``)."""
    try:
        return find_statements(roots), "scp_statements.csv"
    except FileNotFoundError:
        return FALLBACK_STATEMENTS, "builtin"


def statement_text(scp_codes: str | dict[str, float], statements: pd.DataFrame) -> str:
    """English descriptions of a record's SCP codes, highest likelihood first, ``", "``-joined
    (the same text the report/grounding targets use, :func:`ecglm.data.reference.statement_texts`).
    """
    return ", ".join(statement_texts(scp_codes or "{}", statements))


def record_text(report: str, scp_codes: str, statements: pd.DataFrame,
                source: TextSource) -> str:
    """The text paired with one record (``""`` when it has none), see the module docstring."""
    report = " ".join(str(report or "").split())
    if source == "report":
        return report
    stmts = statement_text(scp_codes or "{}", statements)
    if source == "statements":
        return stmts
    return ". ".join(t for t in (stmts, report) if t)


def label_descriptions(statements: pd.DataFrame,
                       classes: Sequence[str] = SUPERCLASSES) -> list[str]:
    """Description of each superclass for the zero-shot prompts (see
    :data:`SUPERCLASS_DESCRIPTIONS`)."""
    out = []
    for c in classes:
        desc = SUPERCLASS_DESCRIPTIONS.get(c, c)
        if c in statements.index and isinstance(statements.loc[c, "description"], str):
            desc = statements.loc[c, "description"]
        out.append(desc)
    return out


def label_prompts(template: str, statements: pd.DataFrame,
                  classes: Sequence[str] = SUPERCLASSES) -> list[str]:
    """``template.format(label=description)`` per superclass, e.g. ``"an ECG showing
    myocardial infarction"``."""
    return [template.format(label=d) for d in label_descriptions(statements, classes)]


@dataclass
class RecordTexts:
    """Text and labels of every record of a shard folder (shard order).

    Attributes:
        ecg_ids: (N,) record ids.
        splits: (N,) ``train``/``valid``/``test``.
        texts: (N,) paired text, ``""`` when the record has none.
        labels: (N, C) 0/1 superclass labels (:data:`SUPERCLASSES` order).
    """

    ecg_ids: list[int]
    splits: list[str]
    texts: list[str]
    labels: np.ndarray

    def ids(self, split: str, with_text: bool = True) -> list[int]:
        """Ids of ``split`` (only those with a text when ``with_text``)."""
        return [e for e, s, t in zip(self.ecg_ids, self.splits, self.texts)
                if s == split and (t or not with_text)]

    def n_missing(self) -> dict[str, int]:
        """Records without text per split."""
        return {s: sum(1 for sp, t in zip(self.splits, self.texts) if sp == s and not t)
                for s in SPLITS}

    def counts(self) -> dict[str, dict[str, int]]:
        """``{split: {"records", "with_text", "missing_text"}}``."""
        miss = self.n_missing()
        out = {}
        for s in SPLITS:
            n = sum(1 for sp in self.splits if sp == s)
            out[s] = {"records": n, "with_text": n - miss[s], "missing_text": miss[s]}
        return out

    def require(self, splits: Sequence[str] = SPLITS) -> None:
        """Raise :class:`PretrainDataError` when a split has no record with text."""
        counts = self.counts()
        for s in splits:
            c = counts[s]
            if c["with_text"] == 0:
                raise PretrainDataError(
                    f"pretrain: split '{s}' has no record with a text ({c['records']} records, "
                    f"{c['missing_text']} without text); adjust data.valid_fraction/"
                    f"data.test_fraction/data.max_ecg_id or pretrain.text_source")


def read_record_texts(records: Path, statements: pd.DataFrame,
                      source: TextSource) -> RecordTexts:
    """Texts and labels of every record in a records Parquet folder (no signals are read)."""
    t = pq.read_table(str(records), columns=["ecg_id", "split", "report",
                                             "scp_codes"]).to_pydict()
    codes = [str(c or "{}") for c in t["scp_codes"]]
    texts = [record_text(r, c, statements, source) for r, c in zip(t["report"], codes)]
    return RecordTexts([int(e) for e in t["ecg_id"]], [str(s) for s in t["split"]], texts,
                       superclass_matrix(codes, statements))
