"""``ecglm eval-expertqa CONFIG --data D --predictions P``: score ECG-Expert-QA predictions per
task (BLEU-1/ROUGE-L/METEOR, optionally an LLM judge from ``evaluation.judge``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ecglm.config import ExperimentConfig
from ecglm.data.expertqa import load_expert_qa
from ecglm.evaluation.expertqa import (
    attach_predictions,
    load_predictions,
    reference_rows,
    score_expert_qa,
)
from ecglm.evaluation.judging import build_judge


def run(cfg: ExperimentConfig, data: Path, predictions: Path) -> dict[str, Any]:
    """Score ``predictions`` against the ECG-Expert-QA items in ``data``.

    Raises:
        ValueError: the predictions file is malformed (the message names the entry).
    """
    rows, missing = attach_predictions(reference_rows(load_expert_qa(data)),
                                       load_predictions(predictions))
    judge, judge_error = None, None
    try:
        judge = build_judge(cfg.evaluation.judge, cfg.evaluation.judge_model_path)
    except Exception as exc:  # recorded in the output, text metrics still computed
        judge_error = f"{type(exc).__name__}: {exc}"
    metrics = score_expert_qa(rows, judge=judge)
    return {"data": str(data), "predictions": str(predictions), "n_rows": len(rows),
            "n_missing": len(missing), "missing": missing[:20], "judge": cfg.evaluation.judge,
            "judge_error": judge_error, "metrics": metrics}
