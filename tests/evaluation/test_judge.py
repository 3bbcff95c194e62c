"""LLM-as-judge: parsing, retries -> failure records, an OpenAI-compatible server on 127.0.0.1
and a real local (tiny) Hugging Face model."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecglm.evaluation.judge import (CRITERIA, Judge, JudgeParseError, LocalHFJudge,
                                    OpenAIJudge, parse_scores)

MEIT = CRITERIA["meit"]


def test_criteria_sets() -> None:
    assert [c.name for c in MEIT] == ["terminology", "logic", "completeness", "diagnosis"]
    assert len(CRITERIA["gem"]) == 8 and len(CRITERIA["m2m"]) == 1


def test_parse_scores_json_and_lines() -> None:
    good = '{"terminology": 4, "logic": 5, "completeness": 3, "diagnosis": 2}'
    assert parse_scores("Sure! " + good + " done", MEIT)["logic"] == 5
    lines = "terminology: 4\nLogic = 5\ncompleteness: 3\n\"diagnosis\": 1"
    assert parse_scores(lines, MEIT) == {"terminology": 4, "logic": 5, "completeness": 3,
                                         "diagnosis": 1}
    for bad in ["no scores here", good.replace("2", "7"), good.replace("4", "3.5"),
                '{"terminology": 4}']:
        with pytest.raises(JudgeParseError):
            parse_scores(bad, MEIT)


def test_openai_judge_retries_then_records_failure(server, monkeypatch) -> None:
    replies, url = server
    monkeypatch.setenv("ECGLM_JUDGE_URL", url)
    monkeypatch.setenv("ECGLM_JUDGE_API_KEY", "sk-test")
    good = '{"terminology": 4, "logic": 5, "completeness": 3, "diagnosis": 2}'
    replies.replies += ["I think it is fine.", "HTTP500", good,      # item 1: 3rd attempt
                        "garbage", "{\"logic\": 9}", "still garbage"]  # item 2: fails
    judge = Judge(OpenAIJudge(), "meit", retries=2)
    summary, results = judge.score_many(["sinus rhythm", "afib"], ["sinus rhythm", "normal"])
    assert results[0].ok and results[0].attempts == 3 and results[0].scores["logic"] == 5
    assert not results[1].ok and results[1].attempts == 3 and "no score" in results[1].error
    assert summary["judge/failures"] == 1 and summary["judge/terminology"] == 4
    assert replies.requests[0]["path"] == "/v1/chat/completions"
    assert replies.requests[0]["auth"] == "Bearer sk-test"
    assert replies.requests[0]["body"]["messages"][0]["role"] == "system"


def test_local_hf_judge_with_tiny_model(tmp_path: Path) -> None:
    """A real (random, tiny) local model: replies are nonsense, so every item ends as a
    recorded failure after its retries, without raising."""
    from ecglm.config.schema import LLMConfig
    from ecglm.models.llm import prepare_llm_dir

    folder = prepare_llm_dir(LLMConfig(source="tiny", cache_dir=str(tmp_path)))
    judge = Judge(LocalHFJudge(folder, max_new_tokens=16), "m2m", retries=1)
    summary, results = judge.score_many(["sinus rhythm"], ["sinus rhythm"])
    assert results[0].attempts in (1, 2) and len(results[0].replies) >= 1
    assert summary["judge/n"] == 1 and summary["judge/failures"] + (
        1 if results[0].ok else 0) == 1


@pytest.mark.slow
def test_local_hf_judge_smollm2() -> None:
    from ecglm.config.schema import LLMConfig
    from ecglm.models.llm import prepare_llm_dir

    try:
        folder = prepare_llm_dir(LLMConfig())
    except Exception as err:  # pragma: no cover
        pytest.skip(f"SmolLM2 not available: {err}")
    judge = Judge(LocalHFJudge(folder, max_new_tokens=64), "meit", retries=2)
    res = judge.score("sinus rhythm, normal ecg", "sinus rhythm. normal ecg.")
    assert res.attempts >= 1 and (res.ok or res.error)
