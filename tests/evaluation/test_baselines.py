"""QA baselines (majority, blind) and the retrieved-report baseline."""

from __future__ import annotations

from ecglm.evaluation.baselines import (BlindBaseline, MajorityBaseline, fit_qa_baselines,
                                        predict_baseline, retrieved_report_baseline)
from ecglm.data.rows import QARow
from ecglm.evaluation.qa import score


def _row(i: int, q: str, tpl: int, qtype: str, ans: list[str], opts: list[str]) -> QARow:
    return QARow(sample_id=i, ecg_ids=(i,), n_ecg=1, n_samples=0, signals=b"", question=q,
                 template_id=tpl, question_type=qtype, attribute_type="scp_code",
                 answer=tuple(ans), options=tuple(opts))


YN = ["yes", "no", "not sure"]
LEADS = ["lead I", "lead II", "lead V1", "none"]


def _train() -> list[QARow]:
    rows = []
    for i in range(60):
        rows.append(_row(i, "Does this ECG show sinus rhythm?", 1, "single-verify",
                         ["yes"] if i % 3 else ["no"], YN))
        rows.append(_row(100 + i, "Does this ECG show atrial fibrillation?", 2, "single-verify",
                         ["no"] if i % 4 else ["yes"], YN))
        rows.append(_row(200 + i, "Which leads show ST depression?", 3, "single-query",
                         ["lead V1", "lead II"] if i % 2 else ["none"], LEADS))
    return rows


def test_majority_per_template() -> None:
    m = MajorityBaseline().fit(_train())
    assert m.answer(_row(0, "x", 1, "single-verify", [], YN)) == ["yes"]
    assert m.answer(_row(0, "x", 2, "single-verify", [], YN)) == ["no"]
    # unseen template: falls back to the question type's majority
    assert m.answer(_row(0, "x", 99, "single-verify", [], YN)) in (["yes"], ["no"])


def test_blind_uses_question_text_and_scores_with_em() -> None:
    b = BlindBaseline().fit(_train())
    assert b.answer(_row(0, "Does this ECG show sinus rhythm?", 9, "single-verify", [],
                         YN)) == ["yes"]
    assert b.answer(_row(0, "Does this ECG show atrial fibrillation?", 9, "single-verify", [],
                         YN)) == ["no"]
    test = [_row(1000 + i, "Does this ECG show sinus rhythm?", 1, "single-verify",
                 ["yes"] if i % 3 else ["no"], YN) for i in range(9)]
    for model in fit_qa_baselines(_train()).values():
        m = score(predict_baseline(model, test))
        assert abs(m["em/single-verify"] - 6 / 9) < 1e-9


def test_retrieved_report_baseline() -> None:
    assert retrieved_report_baseline([["sinus rhythm", "x"], [], ["", "afib"]],
                                     fallback="normal ecg") == ["sinus rhythm", "normal ecg",
                                                                "afib"]
