"""Report-generation evaluation: scoring, the nearest-neighbour baseline, the eval section."""

from __future__ import annotations

import pytest

from ecglm.evaluation.metrics import TextScorer
from ecglm.evaluation.reports import (clean_reports, neighbour_baseline, report_section_data,
                                      score_reports)

REPORTS = {1: "sinus rhythm. normal ecg.", 2: "atrial fibrillation with rapid ventricular "
           "response.", 3: "sinus bradycardia, left axis deviation.", 4: "nan"}
NEIGHBOURS = {1: ["sinus rhythm, normal ecg", "sinus tachycardia"],
              2: ["atrial fibrillation, rapid ventricular response"],
              3: [], 4: ["sinus rhythm"]}


@pytest.fixture(scope="module")
def scorer(java, wordnet) -> TextScorer:
    return TextScorer(use_bertscore=False)


def test_clean_reports() -> None:
    assert clean_reports([" a \n b ", None, "NaN", "x"]) == ["a b", "", "", "x"]


def test_score_reports_skips_empty_references(scorer: TextScorer) -> None:
    ids = [1, 2, 3, 4]
    m = score_reports([REPORTS[i] for i in ids], [REPORTS[i] for i in ids], scorer)
    assert m["n"] == 3 and m["n_skipped"] == 1
    assert m["bleu1"] == pytest.approx(1.0) and m["rouge_l"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="predictions"):
        score_reports(["a"], [], scorer)


def test_neighbour_baseline_uses_first_neighbour(scorer: TextScorer) -> None:
    ids = [1, 2, 3]
    m, preds = neighbour_baseline(ids, [REPORTS[i] for i in ids], NEIGHBOURS, scorer)
    assert preds == ["sinus rhythm, normal ecg", "atrial fibrillation, rapid ventricular "
                     "response", ""]
    assert 0.3 < m["rouge_l"] < 1.0 and m["n"] == 3
    systems, body = report_section_data(ids, [REPORTS[i] for i in ids], NEIGHBOURS, scorer,
                                        predictions={"model": [REPORTS[i] for i in ids]})
    assert list(systems) == ["model", "retrieved_report"]
    assert systems["model"]["rouge_l"] > systems["retrieved_report"]["rouge_l"]
    assert "<table>" in body and "nearest neighbour" in body


@pytest.mark.slow
def test_eval_sections_on_tiny_run(tiny_eval, tmp_path) -> None:
    """report_metrics + classification on the tiny synthetic run end up in the JSON summary,
    MLflow-style metric keys and report.html."""
    import dataclasses
    import json

    from pathlib import Path

    from ecglm.recipes.common import evaluate_prepared

    prep, ckpt = tiny_eval
    ev = dataclasses.replace(prep.cfg.evaluation, report_metrics=True, classification=True,
                             baselines=False, report_examples=0, max_items=4,
                             regime="ten_percent")
    prep = dataclasses.replace(prep, cfg=dataclasses.replace(prep.cfg, evaluation=ev))
    try:
        res = evaluate_prepared(prep, ckpt, None, tmp_path)
    except FileNotFoundError as err:      # no scp_statements.csv anywhere
        pytest.skip(str(err))
    assert [k for k in ("report_generation", "classification") if k in res] == [
        "report_generation", "classification"]
    m = res["metrics"]
    assert 0.0 <= m["report_generation/retrieved_report/bleu1"] <= 1.0
    assert "report_generation/retrieved_report/bertscore_f1" in m
    assert "classification/zero_shot/hamming_loss" in m
    assert "classification/retrieval_encoder/zero_shot/hamming_loss" in m
    summary = json.loads(Path(res["summary"]).read_text())
    assert summary["regime"] == "ten_percent"
    assert summary["report_generation"]["retrieved_report"]["n"] > 0
    assert set(summary["classification"]["prevalence"]) == {"NORM", "MI", "STTC", "CD", "HYP"}
    html = (tmp_path / "report.html").read_text()
    assert "Report generation" in html and "superclass classification" in html
