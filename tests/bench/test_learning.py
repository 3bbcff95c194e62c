"""The learning benchmark (``jobs/bench/learning.py``): its statistics on known prediction
files, the headline and how the demo prints it. The training run itself is the benchmark
(about 25 minutes), not a test."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from ecglm.evaluation.learning import LEARNING_JSON, learning_lines
from tests.helpers import REPO, load_script

SCRIPT = REPO / "jobs" / "bench" / "learning.py"
CLASSES = ["NORM", "MI"]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_script(SCRIPT, "learning_bench")


def _classify_table(n: int, separable: bool) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        labels = [c for j, c in enumerate(CLASSES) if (i >> j) & 1]
        noise = rng.random(2)
        probs = {c: (0.6 + 0.4 * noise[j] if c in labels else 0.5 * noise[j]) if separable
                 else float(noise[j]) for j, c in enumerate(CLASSES)}
        rows.append({"sample_id": i, "labels": labels, "probabilities": probs,
                     "prior": {"NORM": 0.5, "MI": 0.5}})
    return rows


def test_classify_stats_separate_a_reader_from_noise(bench: ModuleType) -> None:
    patients = {i: i // 2 for i in range(40)}  # two records per patient
    good = bench.classify_stats(_classify_table(40, True), CLASSES, patients, 300)
    assert good["macro_auc"]["value"] == 1.0 and good["patients"] == 20
    assert good["prior_auc"]["value"] == 0.5 and good["auc_minus_prior"]["ci95"][0] > 0.3
    noise = bench.classify_stats(_classify_table(40, False), CLASSES, patients, 300)
    low, high = noise["auc_minus_prior"]["ci95"]
    assert low < 0 < high  # a random scorer is not distinguishable from the prior
    assert set(noise["auc_per_class"]) == set(CLASSES)


def test_qa_stats_per_type_with_paired_differences(bench: ModuleType) -> None:
    def preds(correct: list[bool]) -> list[dict]:
        return [{"sample_id": i, "question_type": "single-verify" if i < 30 else "other",
                 "correct": c} for i, c in enumerate(correct)]

    model = [True] * 25 + [False] * 5 + [True] * 10      # 25/30 single-verify, 10/10 other
    majority = [True] * 18 + [False] * 12 + [False] * 10  # 18/30, 0/10
    systems = {"model": preds(model), "majority": preds(majority), "blind": preds(majority)}
    out = bench.qa_stats(systems, {i: i for i in range(40)}, 300)
    sv = out["by_type"]["single-verify"]
    assert sv["model"]["value"] == pytest.approx(25 / 30, abs=1e-4) and sv["items"] == 30
    assert sv["majority"]["value"] == pytest.approx(0.6)
    assert sv["model_minus_majority"]["value"] == pytest.approx(7 / 30, abs=1e-4)
    assert sv["model_minus_majority"]["ci95"][0] > 0  # the model is right wherever majority is
    assert out["by_type"]["overall"]["items"] == 40
    shuffled = {**systems, "blind": list(reversed(systems["blind"]))}
    with pytest.raises(RuntimeError, match="blind"):
        bench.qa_stats(shuffled, {}, 10)


def test_headline_goals_and_demo_lines(bench: ModuleType, tmp_path: Path) -> None:
    patients = {i: i for i in range(40)}
    cl = {"mlflow_run_id": "c", **bench.classify_stats(_classify_table(40, True), CLASSES,
                                                        patients, 200)}
    systems = {n: [{"sample_id": i, "question_type": "single-verify", "correct": i % 3 > 0}
                   for i in range(30)] for n in ("model", "majority", "blind")}
    qa = {"mlflow_run_id": "q", **bench.qa_stats(systems, patients, 200)}
    pre = {"mlflow_run_id": "p", "zeroshot": {"zeroshot/test/macro_auc": 0.7}}
    args = bench.main.__globals__["argparse"].Namespace(
        quick=False, pretrain_epochs=1, classify_steps=2, qa_steps=3, pretrain_set=[],
        classify_set=["train.lr=1e-3"], qa_set=[])
    head = bench.headline({"pretrain": pre, "classify": cl, "qa": qa},
                          {"pretrain": 1.0, "classify": 2.0, "qa": 3.0}, args)
    assert head["classify_macro_auc"] == 1.0 and head["classify_prior_auc"] == 0.5
    assert head["goals"]["classify_auc_ge_0.75"] and head["goals"]["classify_ci_above_prior"]
    assert not head["goals"]["qa_single_verify_above_majority"]  # equal is not above
    assert head["qa_em"]["single-verify"] == pytest.approx(0.6667, abs=1e-4)
    assert head["total_seconds"] == 6.0 and head["overrides"] == {"classify": ["train.lr=1e-3"]}
    assert learning_lines(tmp_path)[0].startswith("learned model (bench) : not run yet")
    (tmp_path / LEARNING_JSON).parent.mkdir(parents=True)
    (tmp_path / LEARNING_JSON).write_text(json.dumps(head))
    lines = learning_lines(tmp_path)
    assert "classify macro AUC   : 1.000 [1.000, 1.000] vs label prior 0.500" in lines[1]
    assert "single-verify" in lines[-1] and "vs majority 0.667" in lines[-1]


def test_verify_auc_stats(bench: ModuleType) -> None:
    preds = [{"sample_id": i, "gold": ["yes"] if i % 4 == 0 else ["no"],
              "p_yes": (0.4 if i % 4 == 0 else 0.1) + 0.001 * i} for i in range(40)]
    preds.append({"sample_id": 99, "gold": ["a"], "p_yes": None})  # not a verify item
    out = bench.verify_auc_stats(preds, {i: i // 4 for i in range(40)}, 200)
    assert out["value"] == 1.0 and out["positives"] == 10 and out["patients"] == 10
    assert out["n"] == 40
    assert bench.verify_auc_stats(preds[-1:], {}, 10) is None
