"""ECG-QA items (PTB-XL) with Q-HEART-style candidate options.

All seven question types (single-verify/-choose/-query, comparison_consecutive-verify/-query,
comparison_irrelevant-verify/-query; comparisons hold two ECGs), template and paraphrased
wordings, candidate options per template (``answers_for_each_template.csv``) and the Q-HEART
option rules. Files: the ``*_ecgid_le300.json`` subsets of ../shared/data, any ECG-QA JSON list
(:func:`load_ecgqa_json`), or one split of a release layout (:func:`load_ecgqa_split`). Shard
builds choose and read their items through :mod:`ecglm.data.qa_source` (curated or release
layout, PTB-XL or MIMIC-IV-ECG, official splits, counted unavailable items).
"""

from __future__ import annotations

import ast
import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

from ecglm.data.canonical import LEADS
from ecglm.data.errors import CatalogError

VERIFY_OPTIONS: tuple[str, ...] = ("yes", "no", "not sure")
LEAD_OPTIONS: tuple[str, ...] = tuple(f"lead {lead}" for lead in LEADS)
"""The 12 leads as ECG-QA spells them (``lead I`` ... ``lead aVR`` ... ``lead V6``)."""
NUMERIC_OPTIONS: tuple[str, ...] = ("rr interval", "p duration", "pr interval",
                                    "qrs duration", "qt interval", "qt corrected")
RANGE_OPTIONS: tuple[str, ...] = ("below the normal range", "within the normal range",
                                  "above the normal range")
NONE = "none"
VARIANTS: tuple[str, ...] = ("template", "paraphrased")
QUESTION_TYPES: tuple[str, ...] = (
    "single-verify", "single-choose", "single-query",
    "comparison_consecutive-verify", "comparison_consecutive-query",
    "comparison_irrelevant-verify", "comparison_irrelevant-query",
)
"""The seven ECG-QA question types; ``comparison_*`` items hold two ECGs, ``single-*`` one."""
ATTRIBUTE_TYPES: tuple[str, ...] = ("scp_code", "noise", "stage_of_infarction",
                                    "extra_systole", "heart_axis", "numeric_feature")

_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("what leads", LEAD_OPTIONS),
    ("what numeric features", NUMERIC_OPTIONS),
    ("what range", RANGE_OPTIONS),
)


@dataclass
class QAItem:
    """One ECG-QA question about ``len(ecg_ids)`` ECGs (1 for single-*, 2 for comparison-*)."""

    sample_id: int
    template_id: int
    question_type: str
    attribute_type: str
    question: str
    answer: list[str]
    """Unordered answer set; ``["none"]`` is the empty set."""
    ecg_ids: list[int]
    options: list[str]
    """Candidate options (Q-HEART rules); always contains every answer."""
    question_id: int = -1
    """Shared by the paraphrases of one template question (``-1`` when absent)."""
    attribute: Optional[list[str]] = None
    """Attributes the question is about (``None`` for comparison questions)."""
    split: Optional[str] = None
    """Official split of a release-layout item (``train``/``valid``/``test``: the release folder
    it was read from); ``None`` for curated files, whose items are split by their ECGs."""


def qa_dir(root: Path) -> Path:
    """``<root>/ecgqa/ptbxl`` (``root`` is the data root)."""
    return Path(root) / "ecgqa" / "ptbxl"


def qa_file(root: Path, variant: str) -> Path:
    """Path of the ECG-QA JSON for ``variant`` (``template`` or ``paraphrased``)."""
    if variant not in VARIANTS:
        raise ValueError(f"data.qa_variant: expected one of {list(VARIANTS)}, got {variant!r}")
    return qa_dir(root) / f"{variant}_ecgid_le300.json"


def load_template_classes(root: Path) -> dict[int, list[str]]:
    """``<root>/ecgqa/ptbxl/answers_for_each_template.csv`` -> ``{template_id: [class, ...]}``
    (file order; :func:`read_template_classes`)."""
    return read_template_classes(qa_dir(root) / "answers_for_each_template.csv")


def read_template_classes(path: Path) -> dict[int, list[str]]:
    """An ``answers_for_each_template.csv`` -> ``{template_id: [class, ...]}`` (file order).

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: a malformed row (names the file).
    """
    path = Path(path)
    out: dict[int, list[str]] = {}
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            try:
                classes = ast.literal_eval(row["classes"])
                tid = int(row["template_id"])
            except (KeyError, ValueError, SyntaxError) as exc:
                raise ValueError(f"{path}: bad row {row!r}: expected template_id,classes") from exc
            if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
                raise ValueError(f"{path}: template {tid}: classes must be a list of strings")
            out[tid] = classes
    return out


def _dedupe(values: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for v in values:
        if v not in seen:
            seen.add(v)
            out.append(v)
    return out


def _rule_options(question: str, classes: list[str] | None) -> tuple[str, ...] | None:
    """Fixed option list of a lead/numeric/range question, else ``None``.

    Decided by the question's wording (template questions); paraphrased questions fall back to
    the template's class list matching one of the fixed lists.
    """
    q = question.strip().lower()
    for prefix, opts in _RULES:
        if q.startswith(prefix):
            return opts
    if classes is not None:
        proper = set(classes) - {NONE}
        for _, opts in _RULES:
            if proper == set(opts):
                return opts
    return None


def candidate_options(question_type: str, question: str, answer: list[str],
                      classes: list[str] | None, template_id: int = -1) -> list[str]:
    """Candidate options of one item (Q-HEART "Candidate options" rules).

    * ``*verify`` -> yes / no / not sure;
    * "What leads..." -> the 12 lead names; "What numeric features..." -> the 6 features;
      "What range..." -> below / within / above the normal range; each plus ``none`` when the
      template's class list has ``none`` (so that options never depend on the answer);
    * otherwise the template's classes plus ``none``.

    Every answer missing from the list is appended; the result has no duplicates and a stable
    order.

    Raises:
        ValueError: a non-verify, non-rule question whose template has no class list.
    """
    if question_type.endswith("verify"):
        opts: list[str] = list(VERIFY_OPTIONS)
    else:
        fixed = _rule_options(question, classes)
        if fixed is not None:
            opts = list(fixed) + ([NONE] if classes and NONE in classes else [])
        elif classes is not None:
            opts = list(classes) + [NONE]
        else:
            raise ValueError(f"template_id {template_id}: no classes in "
                             f"answers_for_each_template.csv for question {question!r}")
    return _dedupe(opts + list(answer))


def _field(raw: dict[str, Any], key: str, tp: type, where: str) -> Any:
    if key not in raw:
        raise ValueError(f"{where}: missing field {key!r}")
    value = raw[key]
    if tp is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"{where}: {key}: expected int, got {value!r}")
    if tp is str and not isinstance(value, str):
        raise ValueError(f"{where}: {key}: expected str, got {value!r}")
    return value


def parse_item(raw: dict[str, Any], classes: dict[int, list[str]], where: str,
               split: Optional[str] = None) -> QAItem:
    """Validate one ECG-QA JSON object and attach its candidate options (``split``: the
    official split of a release-layout item).

    Raises:
        ValueError: a missing or mistyped field (names ``where``, the sample_id and the field).
    """
    if not isinstance(raw, dict):
        raise CatalogError(where, "<item>", f"expected a JSON object, got {type(raw).__name__}")
    sid = raw.get("sample_id", "?")
    where = f"{where}: sample_id {sid}"
    answer = _field(raw, "answer", list, where)
    ecg_ids = _field(raw, "ecg_id", list, where)
    if not isinstance(answer, list) or not answer or not all(isinstance(a, str)
                                                            for a in answer):
        raise ValueError(f"{where}: answer: expected a non-empty list of str, got {answer!r}")
    if not isinstance(ecg_ids, list) or not ecg_ids or not all(
            isinstance(e, int) and not isinstance(e, bool) for e in ecg_ids):
        raise ValueError(f"{where}: ecg_id: expected a non-empty list of int, got {ecg_ids!r}")
    tid = _field(raw, "template_id", int, where)
    qtype = _field(raw, "question_type", str, where)
    question = _field(raw, "question", str, where)
    if qtype not in QUESTION_TYPES:
        raise CatalogError(where, "question_type", f"got {qtype!r}, expected one of "
                                                   f"{list(QUESTION_TYPES)}")
    n_expected = 2 if qtype.startswith("comparison") else 1
    if len(ecg_ids) != n_expected:
        raise CatalogError(where, "ecg_id", f"{qtype} needs {n_expected} ECG id(s), got "
                                            f"{ecg_ids!r}")
    attr_type = raw.get("attribute_type") or ""
    attribute = raw.get("attribute")
    qid = raw.get("question_id", -1)
    return QAItem(
        sample_id=_field(raw, "sample_id", int, where),
        template_id=tid,
        question_type=qtype,
        attribute_type=str(attr_type),
        question=question,
        answer=list(answer),
        ecg_ids=[int(e) for e in ecg_ids],
        options=candidate_options(qtype, question, answer, classes.get(tid), tid),
        question_id=qid if isinstance(qid, int) and not isinstance(qid, bool) else -1,
        attribute=[str(a) for a in attribute] if isinstance(attribute, list) else None,
        split=split,
    )


def load_ecgqa_items(root: Path, variant: str, available_ecg_ids: set[int]) -> list[QAItem]:
    """Load ECG-QA items whose ECGs are all in ``available_ecg_ids``.

    Args:
        root: data root holding ``ecgqa/ptbxl/{variant}_ecgid_le300.json`` and
            ``ecgqa/ptbxl/answers_for_each_template.csv``.
        variant: ``template`` or ``paraphrased``.
        available_ecg_ids: ECG ids that can be read.

    Returns:
        Items in file order, each with its candidate options.

    Raises:
        FileNotFoundError: the JSON or the template CSV is missing.
        ValueError: unknown variant or a malformed item (names sample_id and field).
    """
    path = qa_file(root, variant)
    classes = load_template_classes(root)
    data = json.loads(path.read_text())
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of items")
    items = [parse_item(raw, classes, str(path)) for raw in data]
    return [it for it in items if all(e in available_ecg_ids for e in it.ecg_ids)]


def load_ecgqa_json(path: Path, root: Path,
                    available_ecg_ids: set[int] | None = None) -> list[QAItem]:
    """Items of one ECG-QA JSON list (any split or variant), options from ``root``'s
    ``answers_for_each_template.csv``; ``available_ecg_ids`` keeps only items whose ECGs are all
    in it (``None``: every item).

    Raises:
        FileNotFoundError: the JSON or the template CSV is missing.
        ValueError: not a JSON list, or a malformed item (names file, sample_id and field).
    """
    path = Path(path)
    data = json.loads(path.read_text())
    if not isinstance(data, list):
        raise CatalogError(str(path), "<root>", "expected a JSON list of items")
    classes = load_template_classes(root)
    items = [parse_item(raw, classes, str(path)) for raw in data]
    if available_ecg_ids is None:
        return items
    return [it for it in items if all(e in available_ecg_ids for e in it.ecg_ids)]


def load_ecgqa_split(root: Path, variant: str, split: str,
                     available_ecg_ids: set[int] | None = None) -> list[QAItem]:
    """One split of the official release: ``<root>/ecgqa/ptbxl/<variant>/<split>.json`` or the
    folder ``<variant>/<split>/*.json`` (files in name order).

    Raises:
        FileNotFoundError: neither exists.
        ValueError: unknown variant/split or a malformed item.
    """
    if variant not in VARIANTS:
        raise ValueError(f"data.qa_variant: expected one of {list(VARIANTS)}, got {variant!r}")
    if split not in ("train", "valid", "test"):
        raise ValueError(f"split: expected train, valid or test, got {split!r}")
    base = qa_dir(root) / variant
    files = ([base / f"{split}.json"] if (base / f"{split}.json").is_file()
             else sorted((base / split).glob("*.json")))
    if not files:
        raise FileNotFoundError(f"{base / split}.json or {base / split}/*.json: ECG-QA "
                                f"{variant} {split} split not found")
    return [it for f in files for it in load_ecgqa_json(f, root, available_ecg_ids)]
