"""ECG-QA exact-match evaluation with set-valued answers.

An answer is correct when the *set* of predicted options equals the *set* of reference answers
(order, case and duplicates do not matter). ECG-QA writes the empty answer as ``none``; a
prediction must say ``none`` to match it: an unparseable generation (empty set) matches nothing.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence

import torch

from ecglm.config import ExperimentConfig


def normalise_answer(answer: Iterable[str]) -> frozenset[str]:
    """Lower-cased, stripped answer set (blank entries dropped)."""
    return frozenset(a.strip().lower() for a in answer if a and a.strip())


def exact_match(pred: Iterable[str], gold: Iterable[str]) -> bool:
    """True when the two answers are the same non-empty set."""
    p, g = normalise_answer(pred), normalise_answer(gold)
    return bool(g) and p == g


@dataclass
class Prediction:
    """One evaluated item."""

    sample_id: int
    question_type: str
    attribute_type: str
    question: str
    gold: list[str]
    generated: str
    parsed: list[str]
    correct: bool


def score(predictions: Sequence[Prediction]) -> dict[str, float]:
    """Exact-match accuracy: ``em/<question_type>``, ``em/attr/<attribute_type>``,
    ``em/overall`` (micro) and ``em/type_avg`` (mean over question types), plus ``n/...``."""
    by_type: dict[str, list[bool]] = defaultdict(list)
    by_attr: dict[str, list[bool]] = defaultdict(list)
    for p in predictions:
        by_type[p.question_type].append(p.correct)
        by_attr[p.attribute_type].append(p.correct)
    out: dict[str, float] = {}
    for t, v in sorted(by_type.items()):
        out[f"em/{t}"] = sum(v) / len(v)
        out[f"n/{t}"] = float(len(v))
    for a, v in sorted(by_attr.items()):
        out[f"em/attr/{a}"] = sum(v) / len(v)
    if predictions:
        out["em/overall"] = sum(p.correct for p in predictions) / len(predictions)
        out["em/type_avg"] = sum(out[f"em/{t}"] for t in by_type) / len(by_type)
        out["n/overall"] = float(len(predictions))
    return out


@torch.no_grad()
def generate_texts(model: Any, rows: Sequence[dict], cfg: ExperimentConfig) -> list[str]:
    """Greedy generation from the evaluation prompt of every row (QA items or generation-task
    records), ``evaluation.batch_size`` at a time, with progress lines (rows/s, ETA).

    Args:
        model: an :class:`~ecglm.models.ecg_lm.ECGLanguageModel` (put in eval mode here).
        rows: shard rows with ``retrieved_reports``.
    """
    from ecglm.train.batches import prompt_batch

    model.eval()
    out: list[str] = []
    bs = cfg.evaluation.batch_size
    t0 = time.perf_counter()
    for i in range(0, len(rows), bs):
        batch = prompt_batch(list(rows[i : i + bs]), model.tokenizer, cfg)
        signals, ecg_mask = batch.pop("signals"), batch.pop("ecg_mask")
        # input_ids, attention_mask and, with fusion.position=placeholder, prefix_at
        out += model.generate(signals, ecg_mask, max_new_tokens=cfg.llm.max_new_tokens, **batch)
        rate = len(out) / max(time.perf_counter() - t0, 1e-9)
        print(f"[eval] {len(out)}/{len(rows)} generated ({rate:.2f}/s, ETA "
              f"{(len(rows) - len(out)) / max(rate, 1e-9):.0f}s)", flush=True)
    return out


def predict(model: Any, rows: list[dict], cfg: ExperimentConfig) -> list[Prediction]:
    """Generate an answer for every QA row and parse it into the row's option set.

    Args:
        model: an :class:`~ecglm.models.ecg_lm.ECGLanguageModel`.
        rows: QA shard rows with ``retrieved_reports``.
    """
    from ecglm.models.prompting import parse_answer

    preds: list[Prediction] = []
    for r, text in zip(rows, generate_texts(model, rows, cfg)):
        options = list(r["options"])
        parsed = sorted(parse_answer(text, options))
        gold = list(r["answer"])
        preds.append(Prediction(int(r["sample_id"]), str(r["question_type"]),
                                str(r["attribute_type"]), str(r["question"]), gold, text,
                                parsed, exact_match(parsed, gold)))
    return preds


def predictions_table(predictions: Sequence[Prediction]) -> list[dict[str, Any]]:
    """Plain dicts for JSON artifacts."""
    return [asdict(p) for p in predictions]
