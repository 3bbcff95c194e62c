"""Catalogs: PTB-XL labels and folds, LUDB, CinC 2021, MIMIC-IV-ECG, ECG-QA (all question
types, official layout), ECG-Expert-QA schemas."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ecglm.data import (CatalogError, add_scp_labels, clean_report, load_cinc_catalog,
                        load_ecgqa_json, load_ecgqa_split, load_expert_qa, load_ludb_catalog,
                        load_mimic_catalog, load_ptbxl_catalog, scp_labels)
from ecglm.data.ecgqa import NUMERIC_OPTIONS, QUESTION_TYPES, VERIFY_OPTIONS
from ecglm.data.ptbxl import load_scp_statements
from ecglm.data.splits import record_splits
from tests.helpers import CINC, LUDB, RECORDS500, write_mimic_fixture


def test_ptbxl_labels_and_folds(shared_data: Path) -> None:
    statements = load_scp_statements(shared_data)
    cat = add_scp_labels(load_ptbxl_catalog(shared_data, 300), shared_data)
    first = json.loads(cat.loc[0, "labels"])  # {'NORM': 100, 'LVOLT': 0, 'SR': 0}
    assert first == {"superclass": ["NORM"], "subclass": ["NORM"], "diagnostic": ["NORM"],
                     "form": ["LVOLT"], "rhythm": ["SR"]}
    codes = {"IMI": 35.0, "ASMI": 100.0, "NDT": 50.0, "AFIB": 0.0, "XYZ": 100.0}
    all_ = scp_labels(codes, statements, 0.0)
    assert all_["superclass"] == ["MI", "STTC"] and all_["subclass"] == ["AMI", "IMI", "STTC"]
    assert all_["form"] == ["NDT"] and all_["rhythm"] == ["AFIB"]
    sure = scp_labels(codes, statements, 50.0)  # diagnostic statements below 50 dropped
    assert sure["diagnostic"] == ["ASMI", "NDT"] and sure["rhythm"] == ["AFIB"]
    splits = record_splits(cat["ecg_id"].tolist(), cat["patient_id"].tolist(),
                           cat["strat_fold"].tolist(), "strat_fold", 0.1, 0.2, 0, shared_data)
    for e, f in zip(cat["ecg_id"], cat["strat_fold"]):
        assert splits[e] == ("test" if f == 10 else "valid" if f == 9 else "train")
    by_patient: dict[int, set[str]] = {}
    for e, p in zip(cat["ecg_id"], cat["patient_id"]):
        by_patient.setdefault(p, set()).add(splits[e])
    assert all(len(s) == 1 for s in by_patient.values())  # patient-level


def test_ludb_catalog(shared_data: Path) -> None:
    cat = load_ludb_catalog(LUDB)
    assert len(cat) == 100 and cat["record_id"].tolist() == list(range(1, 101))
    first = cat.iloc[0]
    assert (first["sex"], first["age"], first["rhythm"]) == ("F", 51, "Sinus bradycardia")
    assert "Left ventricular hypertrophy" in first["diagnoses"]
    assert first["report"].startswith("Sinus bradycardia. Electric axis")
    assert cat["age"].max() == 90  # ">89"
    assert (cat["patient_id"] == cat["record_id"]).all()


def test_cinc_catalog(shared_data: Path) -> None:
    cat = load_cinc_catalog(CINC)
    assert len(cat) == 50
    assert cat["source"].value_counts().to_dict() == {"Georgia (G12EC)": 20,
                                                     "Chapman-Shaoxing/Ningbo": 20, "PTB-XL": 10}
    e0 = cat.set_index("record_id").loc["E07500"]
    assert e0["dx"] == ["67741000119109", "426177001"] and e0["age"] == 78 and e0["sex"] == "M"
    assert e0["dx_names"] == ["left atrial enlargement", "sinus bradycardia"]
    assert (cat["fs"] == 500).all() and (cat["n_samples"] == 5000).all()


def test_mimic_catalog_and_report_cleaning(shared_data: Path, tmp_path: Path) -> None:
    recs = write_mimic_fixture(tmp_path, [RECORDS500 / f"0000{k}_hr" for k in (1, 2, 3)])
    cat = load_mimic_catalog(tmp_path)
    kept = [r for r in recs if r["report"]]
    assert cat["study_id"].tolist() == sorted(r["study_id"] for r in kept)
    got = dict(zip(cat["study_id"], cat["report"]))
    assert all(got[r["study_id"]] == r["report"] for r in kept)
    assert (cat["patient_id"] == [r["subject_id"] for r in kept]).all()
    assert cat["rr_interval"].tolist() == [659, 659] and Path(cat["path"][0] + ".hea").is_file()
    everything = load_mimic_catalog(tmp_path, drop_short_reports=False)
    assert len(everything) == 3 and (everything["report"] == "").sum() == 1
    assert clean_report(["Sinus rhythm.", float("nan"), "nan", "12.5", "Normal ECG", "", None,
                         "Borderline"]) == "Sinus rhythm. Normal ECG. Borderline."
    assert clean_report(["Sinus rhythm", "Normal ECG"]) == ""  # 4 tokens < 5
    (tmp_path / "machine_measurements.csv").write_text("subject_id,study_id\n1,2\n")
    with pytest.raises(CatalogError, match="report_0: missing column"):
        load_mimic_catalog(tmp_path)


def _ecgqa_root(tmp: Path, shared: Path) -> Path:
    qa = tmp / "ecgqa" / "ptbxl"
    qa.mkdir(parents=True)
    shutil.copyfile(shared / "ecgqa" / "ptbxl" / "answers_for_each_template.csv",
                    qa / "answers_for_each_template.csv")
    return tmp


ALL_TYPES = [  # one item per question type, wording and templates as in ECG-QA
    (1, "single-verify", "Does this ECG show symptoms of non-diagnostic t abnormalities?",
     ["yes"], [1]),
    (22, "single-choose", "Which kind of heart axis does this ECG show, left axis deviation "
                          "or normal heart axis?", ["left axis deviation"], [2]),
    (19, "single-query", "What leads show baseline drift?", ["lead V1", "lead V2"], [3]),
    (34, "comparison_consecutive-verify", "Is the rhythm unchanged compared to the previous "
                                          "ECG?", ["no"], [4, 5]),
    (38, "comparison_consecutive-query", "What numeric features of the second ECG have become "
                                         "abnormal?", ["qt interval"], [4, 5]),
    (52, "comparison_irrelevant-verify", "Do both ECGs show atrial fibrillation?", ["yes"],
     [6, 9]),
    (68, "comparison_irrelevant-query", "What numeric features of the second ECG now have "
                                        "become normal as compared to the first ECG?",
     ["none"], [6, 9]),
]


def _item(sid: int, tid: int, qtype: str, question: str, answer: list[str],
          ecgs: list[int]) -> dict:
    return {"template_id": tid, "question_id": 100 + sid, "sample_id": sid,
            "question_type": qtype, "attribute_type": "scp_code", "question": question,
            "answer": answer, "ecg_id": ecgs, "attribute": None if len(ecgs) == 2 else ["x"]}


def test_ecgqa_all_question_types(shared_data: Path, tmp_path: Path) -> None:
    root = _ecgqa_root(tmp_path, shared_data)
    items = [_item(i, *case) for i, case in enumerate(ALL_TYPES)]
    path = root / "ecgqa" / "ptbxl" / "mixed.json"
    path.write_text(json.dumps(items))
    got = load_ecgqa_json(path, root)
    assert [it.question_type for it in got] == list(QUESTION_TYPES)
    for it in got:
        assert set(it.answer) <= set(it.options) and len(set(it.options)) == len(it.options)
        assert len(it.ecg_ids) == (2 if it.question_type.startswith("comparison") else 1)
        if it.question_type.endswith("verify"):
            assert it.options == list(VERIFY_OPTIONS)
    assert got[2].options[:12] == [f"lead {lead}" for lead in
                                   ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3",
                                    "V4", "V5", "V6")]
    assert got[6].options == [*NUMERIC_OPTIONS, "none"] and got[4].question_id == 104
    assert got[0].attribute == ["x"] and got[6].attribute is None
    assert [it.sample_id for it in load_ecgqa_json(path, root, {1, 2, 3})] == [0, 1, 2]
    # a comparison with one ECG, an unknown type: typed errors naming sample and field
    bad = [_item(0, 52, "comparison_irrelevant-verify", "Do both?", ["yes"], [6])]
    path.write_text(json.dumps(bad))
    with pytest.raises(CatalogError, match="sample_id 0: ecg_id: comparison_irrelevant-verify "
                                           "needs 2 ECG id"):
        load_ecgqa_json(path, root)
    bad = [_item(0, 1, "single-guess", "Is it?", ["yes"], [1])]
    path.write_text(json.dumps(bad))
    with pytest.raises(CatalogError, match="question_type: got 'single-guess'"):
        load_ecgqa_json(path, root)


def test_ecgqa_official_layout_and_text_only(shared_data: Path, tmp_path: Path) -> None:
    root = _ecgqa_root(tmp_path, shared_data)
    items = [_item(i, *case) for i, case in enumerate(ALL_TYPES)]
    for variant in ("template", "paraphrased"):
        folder = root / "ecgqa" / "ptbxl" / variant / "train"
        folder.mkdir(parents=True)
        (folder / "00000.json").write_text(json.dumps(items[:4]))
        (folder / "00001.json").write_text(json.dumps(items[4:]))
    (root / "ecgqa" / "ptbxl" / "template" / "valid.json").write_text(json.dumps(items[:2]))
    assert len(load_ecgqa_split(root, "template", "train")) == 7
    assert len(load_ecgqa_split(root, "paraphrased", "train")) == 7
    assert len(load_ecgqa_split(root, "template", "valid")) == 2
    with pytest.raises(FileNotFoundError, match="test split not found"):
        load_ecgqa_split(root, "template", "test")
    text_only = shared_data / "ecgqa" / "ptbxl" / "text_only"
    train = load_ecgqa_json(text_only / "train_120000_template.json", shared_data)
    valid = load_ecgqa_json(text_only / "valid_60000_template.json", shared_data)
    assert (len(train), len(valid)) == (10_000, 4_663)
    assert {it.question_type for it in valid} == {"comparison_irrelevant-query"}
    assert all(len(it.ecg_ids) == 2 and set(it.answer) <= set(it.options) for it in valid)


def test_expert_qa_schemas(tmp_path: Path) -> None:
    files = {
        "Cardiology Knowledge": [{"Q": "What is a P wave?", "A": "Atrial depolarisation."}],
        "Complex diagnosis": [{"Disease": "Tuberculous Pericarditis", "Q": "Typical ECG?",
                               "A": "Diffuse ST elevation."}],
        "Patient prognosis": [{"medical_advice": "Start a beta-blocker.", "Q": "For life?",
                               "A": "Usually long-term."}],
        "Right to know": [{"Question": "Can I get a copy?", "Answer": "Yes."}],
        "Multiple Rounds of Dialogue": [
            [{"Q": "Is my ECG normal?", "A": "Mostly."}, {"Q": "What is abnormal?",
                                                         "A": "A long QT."}],
            {"Disease": "Long QT", "dialogue": [{"Question": "Risky?", "Answer": "Yes."}]},
            {"conversations": [{"from": "human", "value": "Hi?"}, {"from": "gpt",
                                                                   "value": "Hello."}]},
            [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"},
             {"role": "user", "content": "Q2"}, {"role": "assistant", "content": "A2"}],
        ],
    }
    for name, data in files.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(data))
    items = load_expert_qa(tmp_path)
    by_task = {it.task: [] for it in items}
    for it in items:
        by_task[it.task].append(it)
    assert by_task["Cardiology Knowledge"][0].schema == "Q-A"
    dis = by_task["Complex diagnosis"][0]
    assert (dis.schema, dis.context_kind, dis.context) == ("Disease-Q-A", "Disease",
                                                           "Tuberculous Pericarditis")
    assert by_task["Patient prognosis"][0].context_kind == "medical_advice"
    assert by_task["Right to know"][0].turns[0].answer == "Yes."
    dialogues = by_task["Multiple Rounds of Dialogue"]
    assert [len(d.turns) for d in dialogues] == [2, 1, 1, 2]
    assert all(d.schema == "dialogue" for d in dialogues)
    assert dialogues[3].turns[1].question == "Q2" and dialogues[1].context == "Long QT"
    assert dialogues[0].item_id == "Multiple Rounds of Dialogue:0"
    for bad, match in [([{"Q": "x"}], r"keys: got \['Q'\]"),
                       ([{"Q": "x", "A": "y", "id": 3}], "keys"),
                       ([{"Q": "", "A": "y"}], "Q: expected a non-empty string"),
                       ([[{"role": "assistant", "content": "A"}]], "out of order"),
                       ([42], "expected an object or a turn list"),
                       ({"Q": "x", "A": "y"}, "expected a JSON list")]:
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        with pytest.raises(CatalogError, match=match) as err:
            load_expert_qa(tmp_path / "bad.json")
        assert "bad.json" in str(err.value)
