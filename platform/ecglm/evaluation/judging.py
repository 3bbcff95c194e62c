"""The LLM judge inside ``ecglm eval`` and ``ecglm eval-expertqa``.

``evaluation.judge`` picks the backend (:func:`build_judge`): ``local`` loads the Hugging Face
folder ``evaluation.judge_model_path`` (:class:`~ecglm.evaluation.judge.LocalHFJudge`),
``openai`` talks to the endpoint in ``$ECGLM_JUDGE_URL`` (:class:`OpenAIJudge`). The criteria
set is ``m2m`` (agreement of the model's answer with the reference, 1-5).

:func:`judge_section` judges the first ``evaluation.judge_max_items`` QA predictions: the
candidate is the model's generated text (its parsed options when the text is empty), the
reference the gold answer set joined with ", ". Every failure (a backend that cannot be built,
a transport error, a reply without valid scores after the retries) is recorded in the section
summary and counted in ``m2m/failures``; nothing is raised.
"""

from __future__ import annotations

import html
from typing import Any, Optional, Sequence

from ecglm.evaluation.judge import CRITERIA, Judge, LocalHFJudge, OpenAIJudge
from ecglm.evaluation.writer import EvalSection

CRITERIA_SET = "m2m"
"""Criteria set used for QA answers and ECG-Expert-QA."""


def build_judge(kind: str, model_path: Optional[str] = None, retries: int = 2,
                max_new_tokens: int = 64) -> Optional[Judge]:
    """A :class:`Judge` with criteria ``m2m`` for ``kind`` (``none`` -> None).

    Args:
        kind: ``none``, ``local`` or ``openai`` (``evaluation.judge``).
        model_path: Hugging Face folder of the ``local`` judge.
        retries: extra attempts per item after a malformed reply or a backend error.
        max_new_tokens: reply length limit of the local judge (tokens).

    Raises:
        ValueError: unknown ``kind``, ``local`` without ``model_path`` or ``openai`` without
            ``$ECGLM_JUDGE_URL``.
    """
    if kind == "none":
        return None
    if kind == "local":
        if not model_path:
            raise ValueError("evaluation.judge_model_path: required for the local judge")
        return Judge(LocalHFJudge(model_path, max_new_tokens=max_new_tokens), CRITERIA_SET,
                     retries=retries)
    if kind == "openai":
        return Judge(OpenAIJudge(), CRITERIA_SET, retries=retries)
    raise ValueError(f"evaluation.judge: expected none, local or openai, got {kind!r}")


def _candidate(pred: Any) -> str:
    text = str(getattr(pred, "generated", "") or "").strip()
    return text or ", ".join(getattr(pred, "parsed", []) or []) or "(no answer)"


def judge_predictions(judge: Judge, preds: Sequence[Any], max_items: Optional[int]
                      ) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Judge QA predictions; returns (``m2m/<criterion>``, ``m2m/mean``, ``m2m/failures``,
    ``m2m/n`` and per-item records ``{sample_id, candidate, reference, scores, error,
    attempts}``)."""
    items = list(preds)[:max_items] if max_items is not None else list(preds)
    cands = [_candidate(p) for p in items]
    refs = [", ".join(p.gold) or "none" for p in items]
    summary, results = judge.score_many(cands, refs, [str(p.question) for p in items])
    metrics = {f"{CRITERIA_SET}/{k.split('/', 1)[1]}": v for k, v in summary.items()}
    records = [{"sample_id": int(p.sample_id), "candidate": c, "reference": r,
                "scores": res.scores, "error": res.error, "attempts": res.attempts}
               for p, c, r, res in zip(items, cands, refs, results)]
    return metrics, records


def _html(metrics: dict[str, float], records: list[dict[str, Any]], error: str) -> str:
    crit = [c.name for c in CRITERIA[CRITERIA_SET]]
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{metrics[f'{CRITERIA_SET}/{k}']:.2f}"
                   f"</td></tr>" for k in crit + ["mean"] if f"{CRITERIA_SET}/{k}" in metrics)
    body = (f"<p>LLM judge (criteria '{CRITERIA_SET}', 1-5) on "
            f"{int(metrics.get(f'{CRITERIA_SET}/n', 0))} QA answers; "
            f"{int(metrics.get(f'{CRITERIA_SET}/failures', 0))} failed.</p>")
    if error:
        body += f"<p>Judge unavailable: {html.escape(error)}</p>"
    if rows:
        body += f"<table><tr><th>criterion</th><th>mean</th></tr>{rows}</table>"
    failed = [r for r in records if r["error"]][:5]
    if failed:
        body += "<p>First failures:</p><ul>" + "".join(
            f"<li>item {r['sample_id']}: {html.escape(str(r['error'])[:200])}</li>"
            for r in failed) + "</ul>"
    return body


def judge_section(preds: Sequence[Any], kind: str, model_path: Optional[str],
                  max_items: Optional[int], judge: Optional[Judge] = None) -> EvalSection:
    """``judge`` section of ``ecglm eval`` (metrics logged as ``eval/judge/m2m/...``).

    Args:
        preds: QA predictions (:class:`ecglm.evaluation.qa.Prediction`).
        kind, model_path, max_items: ``evaluation.judge``, ``judge_model_path``,
            ``judge_max_items``.
        judge: a ready judge (tests); default: :func:`build_judge`.
    """
    n = len(preds) if max_items is None else min(len(preds), max_items)
    error = ""
    try:
        judge = judge or build_judge(kind, model_path)
    except Exception as err:  # recorded, not raised: evaluation goes on without the judge
        error, judge = f"{type(err).__name__}: {err}", None
    if judge is None:
        metrics = {f"{CRITERIA_SET}/n": float(n), f"{CRITERIA_SET}/failures": float(n)}
        records: list[dict[str, Any]] = []
    else:
        metrics, records = judge_predictions(judge, preds, max_items)
    summary = {"backend": kind, "criteria": CRITERIA_SET, "metrics": metrics,
               "error": error or None, "items": records}
    return EvalSection("judge", "LLM judge of QA answers", metrics, summary,
                       _html(metrics, records, error))
