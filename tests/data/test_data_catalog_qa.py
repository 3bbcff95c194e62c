"""PTB-XL catalog and ECG-QA items (real files) with the Q-HEART candidate options."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from ecglm.data import QAItem, candidate_options, load_ecgqa_items, load_ptbxl_catalog
from ecglm.data.ecgqa import LEAD_OPTIONS, NUMERIC_OPTIONS, RANGE_OPTIONS, load_template_classes


def _answer_vocab(root: Path) -> set[str]:
    with (root / "ecgqa" / "ptbxl" / "answers.csv").open(newline="") as fh:
        return {row["class"] for row in csv.DictReader(fh)}


def test_catalog_real(shared_data: Path) -> None:
    cat = load_ptbxl_catalog(shared_data, 300)
    assert list(cat.columns) == ["ecg_id", "patient_id", "report", "scp_codes", "strat_fold",
                                 "path"]
    assert cat["ecg_id"].tolist() == list(range(1, 301))  # 21,837 rows, only 1-300 on disk
    assert str(cat["patient_id"].dtype) == "int64" and str(cat["strat_fold"].dtype) == "int64"
    first = cat.iloc[0]
    assert first["patient_id"] == 15709  # 15709.0 in the CSV
    assert json.loads(first["scp_codes"]) == {"LVOLT": 0.0, "NORM": 100.0, "SR": 0.0}
    assert first["report"].startswith("sinusrhythmus")
    assert first["path"] == str(shared_data / "ptbxl" / "records500" / "00000" / "00001_hr")
    assert cat["strat_fold"].between(1, 10).all()
    assert len(load_ptbxl_catalog(shared_data / "ptbxl", 25)) == 25  # the ptbxl folder works too


def test_catalog_drops_rows_without_files(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "ptbxl"
    dst = tmp_path / "ptbxl"
    (dst / "records500" / "00000").mkdir(parents=True)
    lines = (src / "ptbxl_database.csv").read_text().splitlines(keepends=True)
    (dst / "ptbxl_database.csv").write_text("".join(lines[:7]))  # header + ecg_id 1..6
    for ecg_id in (1, 3, 4):
        for ext in ("hea", "dat"):
            name = f"{ecg_id:05d}_hr.{ext}"
            sub = Path("records500") / "00000" / name
            shutil.copyfile(src / sub, dst / sub)
    (dst / "records500" / "00000" / "00005_hr.hea").write_text("header only, no .dat\n")
    cat = load_ptbxl_catalog(tmp_path, 300)
    assert cat["ecg_id"].tolist() == [1, 3, 4]
    with pytest.raises(FileNotFoundError, match="ptbxl_database.csv"):
        load_ptbxl_catalog(tmp_path / "nothing", 300)


def test_ecgqa_items_real(shared_data: Path) -> None:
    items = load_ecgqa_items(shared_data, "template", set(range(1, 301)))
    assert len(items) == 351 and all(isinstance(it, QAItem) for it in items)
    vocab = _answer_vocab(shared_data)
    for it in items:
        assert set(it.answer) <= set(it.options)
        assert len(set(it.options)) == len(it.options)
        assert set(it.options) <= vocab, it.options
        if it.question_type == "single-verify":
            assert it.options == ["yes", "no", "not sure"]
        else:  # the comparison queries here all ask "What numeric features ..."
            assert it.question.startswith("What numeric features")
            # options never depend on the answer: the 6 features plus the template's "none"
            assert it.options == [*NUMERIC_OPTIONS, "none"]
            assert len(it.ecg_ids) == 2
    subset = load_ecgqa_items(shared_data, "template", set(range(1, 41)))
    assert 0 < len(subset) < 351
    assert all(max(it.ecg_ids) <= 40 for it in subset)


def test_paraphrased_items_share_options(shared_data: Path) -> None:
    ids = set(range(1, 301))
    tmpl = {it.sample_id: it for it in load_ecgqa_items(shared_data, "template", ids)}
    para = {it.sample_id: it for it in load_ecgqa_items(shared_data, "paraphrased", ids)}
    assert tmpl.keys() == para.keys()
    changed = 0
    for sid, it in tmpl.items():
        assert para[sid].options == it.options and set(para[sid].answer) == set(it.answer)
        changed += para[sid].question != it.question
    assert changed > 300
    with pytest.raises(ValueError, match="data.qa_variant"):
        load_ecgqa_items(shared_data, "other", ids)


def test_option_rules_spelling_matches_ecgqa(shared_data: Path) -> None:
    vocab = _answer_vocab(shared_data)
    assert set(LEAD_OPTIONS) <= vocab and "lead aVR" in LEAD_OPTIONS
    assert set(NUMERIC_OPTIONS) <= vocab and set(RANGE_OPTIONS) <= vocab
    classes = load_template_classes(shared_data)
    leads = candidate_options("single-query", "What leads show baseline drift?", ["lead V1"],
                              classes[19])
    assert leads == [*LEAD_OPTIONS, "none"]
    rng = candidate_options("single-query", "What range is the qrs duration in?",
                            ["within the normal range"], classes[41])
    assert rng == list(RANGE_OPTIONS)
    other = candidate_options("single-query", "What kind of diagnostic superclass?",
                              ["hypertrophy"], classes[3])
    assert other == classes[3]  # already holds "none": no duplicate
    axis = candidate_options("single-choose", "Which axis?", ["left axis deviation"],
                             classes[22])
    assert axis == [*classes[22], "none"]
    # an answer outside the rule list is still offered
    odd = candidate_options("comparison_consecutive-verify", "Is it the same?", ["maybe"], None)
    assert odd == ["yes", "no", "not sure", "maybe"]
    with pytest.raises(ValueError, match="template_id 999"):
        candidate_options("single-query", "Which thing?", ["x"], None, 999)
