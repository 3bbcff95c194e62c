"""ECG-Expert-QA scoring: per-task BLEU-1, ROUGE-L, METEOR and optional judge scores.

Input rows are dicts ``{"task", "question", "reference", "prediction"}`` (one per answered
turn; a dialogue contributes one row per turn). :func:`reference_rows` turns loaded items
(:func:`ecglm.data.expertqa.load_expert_qa`) into such rows without predictions.

Per task: corpus BLEU-1 (coco-caption), mean ROUGE-L and mean METEOR over the task's rows;
``overall/...`` is the macro mean over tasks and ``micro/...`` the score of all rows pooled.
With a :class:`~ecglm.evaluation.judge.Judge` (criteria ``m2m``: model-to-model agreement,
1-5), each row is judged against its reference; ``<task>/judge/agreement`` is the mean over
successfully judged rows and ``<task>/judge/failures`` counts the rest.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional, Sequence

from ecglm.evaluation.metrics import TextScorer

TEXT_KEYS = ("bleu1", "rouge_l", "meteor")
REQUIRED = ("task", "question", "reference", "prediction")


def reference_rows(items: Sequence[Any]) -> list[dict[str, str]]:
    """One row per turn of ECG-Expert-QA items (``prediction`` empty, to be filled).

    The context (disease or medical advice) is prefixed to the question as
    ``"<context kind>: <context>\\n<question>"``; rows also carry ``item_id`` and ``turn``.
    """
    rows = []
    for it in items:
        ctx = f"{it.context_kind}: {it.context}\n" if it.context else ""
        for k, t in enumerate(it.turns):
            rows.append({"task": it.task, "item_id": it.item_id, "turn": str(k),
                         "question": ctx + t.question, "reference": t.answer,
                         "prediction": ""})
    return rows


def _check(rows: Sequence[dict]) -> None:
    for i, r in enumerate(rows):
        missing = [k for k in REQUIRED if k not in r]
        if missing:
            raise ValueError(f"expert-qa rows[{i}]: missing {missing} (need {list(REQUIRED)})")
        if not str(r["reference"]).strip():
            raise ValueError(f"expert-qa rows[{i}] (task {r['task']}): empty reference")


def score_expert_qa(rows: Sequence[dict], scorer: Optional[TextScorer] = None,
                    judge: Optional[Any] = None) -> dict[str, float]:
    """Metrics per task (``<task>/bleu1``, ``<task>/rouge_l``, ``<task>/meteor``,
    ``<task>/n``, judge keys when ``judge`` is given) plus ``overall/...`` (macro over tasks)
    and ``micro/...`` (all rows).

    Args:
        rows: dicts with ``task``, ``question``, ``reference``, ``prediction``.
        scorer: text scorer (default: no BERTScore).
        judge: a :class:`~ecglm.evaluation.judge.Judge`, normally ``criteria="m2m"``.
    """
    _check(rows)
    scorer = scorer or TextScorer(use_bertscore=False)
    by_task: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_task[str(r["task"])].append(r)
    out: dict[str, float] = {}
    for task in sorted(by_task):
        rs = by_task[task]
        m = scorer.score([str(r["prediction"]) for r in rs], [str(r["reference"]) for r in rs])
        out.update({f"{task}/{k}": float(m[k]) for k in TEXT_KEYS})
        out[f"{task}/n"] = float(len(rs))
        if judge is not None:
            jm, _ = judge.score_many([str(r["prediction"]) for r in rs],
                                     [str(r["reference"]) for r in rs],
                                     [str(r["question"]) for r in rs])
            out.update({f"{task}/{k}": v for k, v in jm.items() if k != "judge/n"})
    if by_task:
        keys = list(TEXT_KEYS) + sorted({k.split("/", 1)[1] for k in out
                                         if "/judge/" in k and not k.endswith("failures")})
        for k in keys:
            vals = [out[f"{t}/{k}"] for t in by_task if f"{t}/{k}" in out]
            if vals:
                out[f"overall/{k}"] = sum(vals) / len(vals)
        m = scorer.score([str(r["prediction"]) for r in rows], [str(r["reference"]) for r in rows])
        out.update({f"micro/{k}": float(m[k]) for k in TEXT_KEYS})
        out["overall/n_tasks"] = float(len(by_task))
        out["micro/n"] = float(len(rows))
    return out


def load_predictions(path: Path) -> dict[tuple[str, str], str]:
    """Predictions keyed by ``(item_id, turn)`` from a JSON list / JSON Lines file of objects
    ``{"item_id": "<task>:<index>", "turn": 0, "prediction": "..."}`` (``turn`` optional,
    default 0) or a JSON object ``{item_id: "answer" | ["turn 0 answer", ...]}``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: unreadable JSON or an entry without ``item_id``/``prediction`` (names the
            entry).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: predictions file not found")
    text = path.read_text(encoding="utf-8")
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError:
        try:
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: neither JSON nor JSON Lines ({err})") from err
    out: dict[tuple[str, str], str] = {}
    if isinstance(data, dict):
        for item_id, pred in data.items():
            turns = pred if isinstance(pred, list) else [pred]
            for k, t in enumerate(turns):
                out[(str(item_id), str(k))] = str(t)
        return out
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list or an object, got {type(data).__name__}")
    for i, row in enumerate(data):
        if not isinstance(row, dict) or "item_id" not in row or "prediction" not in row:
            raise ValueError(f"{path}: entry {i} needs 'item_id' and 'prediction', got "
                             f"{row!r:.120}")
        out[(str(row["item_id"]), str(row.get("turn", 0)))] = str(row["prediction"])
    return out


def attach_predictions(rows: Sequence[dict], preds: dict[tuple[str, str], str]
                       ) -> tuple[list[dict], list[str]]:
    """Copies of :func:`reference_rows` rows with ``prediction`` filled in; a turn without a
    prediction is scored as an empty answer. Returns (rows, ``item_id:turn`` of the missing).

    Raises:
        ValueError: predictions for items or turns that are not in the benchmark data.
    """
    known = {(str(r["item_id"]), str(r["turn"])) for r in rows}
    unknown = sorted(f"{i}:{t}" for i, t in preds if (i, t) not in known)
    if unknown:
        raise ValueError(f"predictions for unknown item/turn(s): {unknown[:5]}"
                         f"{' ...' if len(unknown) > 5 else ''}")
    out, missing = [], []
    for r in rows:
        key = (str(r["item_id"]), str(r["turn"]))
        if key not in preds:
            missing.append(f"{key[0]}:{key[1]}")
        out.append({**r, "prediction": preds.get(key, "")})
    return out, missing
