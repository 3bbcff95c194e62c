"""The task seam: nothing outside ``ecglm.tasks`` switches on the task name, and every task
plugin answers the whole protocol."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from ecglm.config import ExperimentConfig, apply_overrides
from ecglm.config.schema import ServeConfig
from ecglm.data.rows import ECGRow, LabelRow, QARow
from ecglm.tasks import TASKS, RequestError, get_task
from ecglm.tasks.base import EvalContext

PACKAGE = Path(__file__).resolve().parents[2] / "platform" / "ecglm"
BRANCH = re.compile(r"\btask\s*(==|!=|\bin\b|\bnot in\b)\s*[\"'(\[{]|[\"']\s*(==|!=)\s*\w*\.?task\b")


def test_no_task_string_branch_outside_tasks() -> None:
    hits = []
    for path in PACKAGE.rglob("*.py"):
        if path.is_relative_to(PACKAGE / "tasks"):
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if BRANCH.search(line):
                hits.append(f"{path.relative_to(PACKAGE)}:{n}: {line.strip()}")
    assert not hits, "task-name branches outside ecglm.tasks:\n" + "\n".join(hits)


def test_branch_pattern_catches_the_usual_spellings() -> None:
    for line in ('if cfg.task == "qa":', "x = a if self.task != 'qa' else b",
                 'if task in ("report", "grounding"):'):
        assert BRANCH.search(line), line
    assert not BRANCH.search("task = get_task(cfg.task)")


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_has_rows_prompts_and_a_serving_schema(name: str) -> None:
    task = get_task(name)
    assert task.name == name and issubclass(task.row_type, ECGRow) and task.items
    serve = ServeConfig()
    fields = {"question": "Does this ECG show atrial fibrillation?"} if task.request_fields else {}
    row = task.request_row(fields, serve)
    assert isinstance(row, task.row_type)
    assert task.request_fields_of(row).keys() <= task.request_fields
    cfg = apply_overrides(ExperimentConfig(), {"task": name})
    text = task.user_text(row, cfg, None)
    assert isinstance(text, str) and text.strip()
    for key, value in task.response(row, "NORM", cfg).items():
        assert isinstance(key, str) and value is not None


def test_qa_request_errors_name_the_field() -> None:
    qa = get_task("qa")
    with pytest.raises(RequestError) as exc:
        qa.request_row({}, ServeConfig())
    assert exc.value.field == "question" and exc.value.status == 422
    with pytest.raises(RequestError) as exc:
        qa.request_row({"question": "Which leads show noise?"}, ServeConfig())
    assert exc.value.field == "options"  # only yes/no questions get default options
    row = qa.request_row({"question": "Is the rhythm regular?"}, ServeConfig())
    assert isinstance(row, QARow) and row.options == ("yes", "no", "not sure")


def _label_rows(labels: list[tuple[str, ...]], start: int = 0) -> list[LabelRow]:
    return [LabelRow(sample_id=start + i, ecg_ids=(start + i,), n_ecg=1, n_samples=0,
                     signals=b"", labels=lab, target=", ".join(lab) or "none")
            for i, lab in enumerate(labels)]


def test_classify_evaluation_scores_parsed_answers(monkeypatch) -> None:
    """F1 and accuracy come from the generated texts (a perfect answer sheet scores macro F1
    1), AUC from the answer scores' label probabilities; the label prior scores AUC 0.5, the
    nearest neighbour copies its neighbour's labels."""
    import ecglm.tasks.classify as classify

    cfg = apply_overrides(ExperimentConfig(), {
        "task": "classify", "targets.classes": ["NORM", "MI"], "evaluation.report": False})
    test = _label_rows([("NORM",), ("MI",), ("NORM", "MI"), ()])
    train = _label_rows([("NORM",), ("MI",), ()], start=100)
    answers = ["norm", "I see MI here", "NORM, MI", "none"]
    monkeypatch.setattr(classify, "generate_texts", lambda task, model, rows, cfg: answers)
    # candidates: none, NORM, MI, NORM+MI. P(NORM) per row: 0.9, 0.8, 0.7, 0.1 and P(MI):
    # 0.3, 0.2, 0.7, 0.1 -> 3 of 4 (positive, negative) pairs ordered for each: AUC 0.75
    probs = np.array([[0.05, 0.65, 0.05, 0.25], [0.1, 0.7, 0.1, 0.1], [0.2, 0.1, 0.1, 0.6],
                      [0.85, 0.05, 0.05, 0.05]])
    seen: list[list[str]] = []
    monkeypatch.setattr(classify, "score_answers",
                        lambda task, model, rows, cfg, texts, enc: seen.append(texts)
                        or np.log(probs))
    ctx = EvalContext(cfg, test, train, {0: [100], 1: [101], 2: [102], 3: [100]},
                      lambda: object())
    out = get_task("classify").evaluate(ctx)
    m = out.metrics
    assert m["model/macro_f1"] == 1.0 and m["model/subset_accuracy"] == 1.0
    assert seen == [["none", "NORM", "MI", "NORM, MI"]]  # every label set, as trained
    assert m["model/hamming_loss"] == 0.0 and m["model/macro_auc"] == pytest.approx(0.75)
    assert [t["probabilities"]["NORM"] for t in out.tables["predictions.json"]] == \
        pytest.approx([0.9, 0.8, 0.7, 0.1], abs=1e-6)
    assert m["baseline/prior/macro_auc"] == 0.5
    assert m["baseline/nearest_neighbour/subset_accuracy"] == 0.5  # rows 0 and 1 match
    table = out.tables["predictions.json"]
    assert [t["parsed"] for t in table] == [["NORM"], ["MI"], ["NORM", "MI"], []]
    head = get_task("classify").headline(m)
    assert head["model"]["macro_f1"] == 1.0 and "prior" in head


def test_qa_verify_probabilities_and_auc(monkeypatch) -> None:
    """Verify questions get P(yes) from scoring "yes" against "no"; ``verify/auc`` ranks them
    against the gold answers; other question types are not scored."""
    import ecglm.tasks.qa as qa
    from ecglm.evaluation.qa import Prediction

    def row(i: int, qtype: str, options: tuple[str, ...]) -> QARow:
        return QARow(sample_id=i, ecg_ids=(i,), n_ecg=1, n_samples=0, signals=b"",
                     question="q", options=options, question_type=qtype)

    rows = [row(0, "single-verify", ("yes", "no")), row(1, "single-query", ("a", "b")),
            row(2, "comparison_consecutive-verify", ("yes", "no", "not sure")),
            row(3, "single-verify", ("yes", "no"))]
    calls: list[tuple[list[int], list]] = []

    def fake(task, model, chosen, cfg, answers, enc):
        calls.append(([r.sample_id for r in chosen], answers))
        return np.log(np.array([[0.2, 0.8], [0.9, 0.1], [0.6, 0.4]]))

    monkeypatch.setattr(qa, "score_answers", fake)
    p_yes = qa.verify_probabilities(qa.QATask(), object(), rows, ExperimentConfig())
    assert calls == [([0, 2, 3], [["yes"], ["no"]])]
    assert p_yes == pytest.approx({0: 0.2, 2: 0.9, 3: 0.6})
    preds = [Prediction(i, "single-verify", "noise", "q", gold, "no", ["no"], gold == ["no"],
                        p_yes.get(i)) for i, gold in ((0, ["no"]), (2, ["yes"]), (3, ["no"]))]
    m = qa.verify_metrics(preds + [Prediction(1, "single-query", "x", "q", ["a"], "a", ["a"],
                                              True)])
    assert m == {"verify/n": 3.0, "verify/auc": 1.0}  # the one "yes" has the highest P(yes)
    assert "verify/auc" not in qa.verify_metrics(preds[:1])  # one class only: undefined
