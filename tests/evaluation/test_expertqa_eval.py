"""ECG-Expert-QA scoring on a small fixture: per-task BLEU-1 / ROUGE-L / METEOR and judge."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ecglm.evaluation.expertqa import reference_rows, score_expert_qa
from ecglm.evaluation.judge import Judge
from ecglm.evaluation.metrics import TextScorer

FIXTURE = Path(__file__).parent / "fixtures" / "expertqa"


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    from ecglm.data.expertqa import load_expert_qa

    rows = reference_rows(load_expert_qa(FIXTURE))
    for r in rows:  # CK answered perfectly, CD half, MROD with unrelated text
        r["prediction"] = {"CK": r["reference"],
                           "CD": " ".join(r["reference"].split()[:4]),
                           "MROD": "please drink more water"}[r["task"]]
    return rows


@pytest.fixture(scope="module")
def scorer(java, wordnet) -> TextScorer:
    return TextScorer(use_bertscore=False)


def test_reference_rows_flatten_turns_and_context(rows: list[dict]) -> None:
    assert [r["task"] for r in rows].count("MROD") == 2          # one row per dialogue turn
    assert sum(r["task"] == "CK" for r in rows) == 3
    cd = [r for r in rows if r["task"] == "CD"]
    assert cd[0]["question"].startswith("Disease: atrial fibrillation\n")


def test_per_task_metrics_order_and_ranges(rows: list[dict], scorer: TextScorer) -> None:
    m = score_expert_qa(rows, scorer)
    for task in ("CK", "CD", "MROD"):
        for k in ("bleu1", "rouge_l", "meteor"):
            assert 0.0 <= m[f"{task}/{k}"] <= 1.0 + 1e-9
    assert m["CK/bleu1"] == pytest.approx(1.0) and m["CK/rouge_l"] == pytest.approx(1.0)
    assert m["CK/meteor"] > 0.99
    assert m["CK/rouge_l"] > m["CD/rouge_l"] > m["MROD/rouge_l"]
    assert m["MROD/bleu1"] < 0.1 and m["CD/n"] == 2 and m["MROD/n"] == 2
    assert m["overall/n_tasks"] == 3 and m["micro/n"] == 7
    assert m["overall/rouge_l"] == pytest.approx(
        (m["CK/rouge_l"] + m["CD/rouge_l"] + m["MROD/rouge_l"]) / 3)


class _Backend:
    """Scores 5 when the candidate equals the reference, 2 otherwise; garbles every 4th call."""

    def __init__(self) -> None:
        self.calls = 0

    def complete(self, messages: list[dict[str, str]]) -> str:
        self.calls += 1
        text = messages[-1]["content"]
        if self.calls % 4 == 0:
            return "I cannot score this."
        ref = re.search(r"^Reference: (.*)$", text, re.M).group(1)
        cand = re.search(r"^Candidate: (.*)$", text, re.M).group(1)
        same = ref.strip() == cand.strip()
        return '{"agreement": %d}' % (5 if same else 2)


def test_m2m_judge_scores_per_task(rows: list[dict], scorer: TextScorer) -> None:
    backend = _Backend()
    m = score_expert_qa(rows, scorer, Judge(backend, criteria="m2m", retries=1))
    assert m["MROD/judge/agreement"] == 2.0 and m["CD/judge/agreement"] == 2.0
    assert m["CK/judge/agreement"] == 5.0
    assert all(f"{t}/judge/failures" in m for t in ("CK", "CD", "MROD"))
    assert sum(m[f"{t}/judge/failures"] for t in ("CK", "CD", "MROD")) == 0  # retried
    assert "overall/judge/agreement" in m and backend.calls >= 7


def test_rows_are_validated(scorer: TextScorer) -> None:
    with pytest.raises(ValueError, match="missing"):
        score_expert_qa([{"task": "CK", "question": "q", "reference": "r"}], scorer)
    with pytest.raises(ValueError, match="empty reference"):
        score_expert_qa([{"task": "CK", "question": "q", "reference": " ", "prediction": "p"}],
                        scorer)
