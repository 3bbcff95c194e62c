"""The LLM judge inside ``ecglm eval``: section metrics, recorded failures, report wiring."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ecglm.config import ExperimentConfig, apply_overrides, parse_cli_overrides
from ecglm.evaluation.judging import build_judge, judge_section
from ecglm.evaluation.qa import Prediction


def _preds() -> list[Prediction]:
    return [Prediction(1, "single-verify", "scp_code", "Does this ECG show sinus rhythm?",
                       ["yes"], "yes", ["yes"], True),
            Prediction(2, "single-choose", "scp_code", "Which of LBBB or RBBB?", ["rbbb"],
                       "", ["lbbb"], False),
            Prediction(3, "single-query", "scp_code", "What rhythm?", ["sinus rhythm"],
                       "afib", ["afib"], False)]


def test_section_scores_and_records_failures(server, monkeypatch) -> None:  # noqa: F811
    replies, url = server
    monkeypatch.setenv("ECGLM_JUDGE_URL", url)
    replies.replies += ['{"agreement": 5}', "no idea", "HTTP500", "nope", '{"agreement": 2}']
    sec = judge_section(_preds(), "openai", None, max_items=2)
    assert sec.key == "judge"
    assert sec.metrics["m2m/agreement"] == 5.0 and sec.metrics["m2m/failures"] == 1.0
    assert sec.metrics["m2m/n"] == 2.0
    items = sec.summary["items"]
    assert items[0]["scores"] == {"agreement": 5} and items[1]["scores"] is None
    assert items[1]["candidate"] == "lbbb" and items[1]["reference"] == "rbbb"
    assert "LLM judge" in sec.html and "item 2" in sec.html
    assert len(replies.requests) == 4  # 1 + 3 attempts (retries=2); item 3 beyond max_items


def test_unavailable_backend_is_recorded_not_raised(monkeypatch) -> None:
    monkeypatch.delenv("ECGLM_JUDGE_URL", raising=False)
    sec = judge_section(_preds(), "openai", None, max_items=None)
    assert sec.metrics == {"m2m/n": 3.0, "m2m/failures": 3.0}
    assert "ECGLM_JUDGE_URL" in sec.summary["error"] and "unavailable" in sec.html
    assert build_judge("none") is None
    with pytest.raises(ValueError, match="judge_model_path"):
        build_judge("local")


def test_local_tiny_judge_section(tmp_path: Path) -> None:
    from ecglm.config.schema import LLMConfig
    from ecglm.models.llm import prepare_llm_dir

    folder = prepare_llm_dir(LLMConfig(source="tiny", cache_dir=str(tmp_path)))
    judge = build_judge("local", str(folder), retries=0, max_new_tokens=8)
    sec = judge_section(_preds(), "local", str(folder), max_items=1, judge=judge)
    assert sec.metrics["m2m/n"] == 1.0 and sec.summary["error"] is None
    item = sec.summary["items"][0]
    assert item["attempts"] >= 1 and (item["scores"] is not None or item["error"])


def test_evaluate_logs_judge_metrics_and_report(server, monkeypatch,  # noqa: F811
                                                tmp_path: Path) -> None:
    import ecglm.tasks.qa as qa
    from ecglm.data.rows import QARow
    from ecglm.evaluation.writer import write_evaluation
    from ecglm.tasks.base import EvalContext

    replies, url = server
    monkeypatch.setenv("ECGLM_JUDGE_URL", url)
    replies.replies += ['{"agreement": 4}', '{"agreement": 2}', '{"agreement": 3}']
    monkeypatch.setattr(qa, "predict", lambda task, model, rows, cfg: _preds())
    cfg = apply_overrides(ExperimentConfig(), parse_cli_overrides([
        "evaluation.judge=openai", "evaluation.baselines=false",
        "evaluation.report_examples=0", f"output_dir={tmp_path}"]))
    rows = [QARow(sample_id=p.sample_id, ecg_ids=(p.sample_id,), n_ecg=1, n_samples=0,
                  signals=b"", question=p.question, options=(), question_type=p.question_type)
            for p in _preds()]
    outcome = qa.QATask().evaluate(EvalContext(cfg, rows, [], {}, lambda: object()))
    res = write_evaluation(outcome, tmp_path / "eval", split="test", checkpoint="ckpt",
                           checkpoint_step=None, run_id=None, tracking_uri="")
    assert res.metrics["judge/m2m/agreement"] == pytest.approx(3.0)
    assert res.metrics["judge/m2m/failures"] == 0.0
    summary = json.loads(res.summary_path.read_text())
    assert len(summary["judge"]["items"]) == 3
    assert "LLM judge of QA answers" in (tmp_path / "eval" / "report.html").read_text()
