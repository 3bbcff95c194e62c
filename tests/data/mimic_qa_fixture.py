"""A small synthetic MIMIC-IV-ECG + ECG-QA (MIMIC-IV-ECG) release, written in the published
layouts, with known splits, one item whose ECG does not exist and one split conflict.

MIMIC-IV-ECG (``<root>/mimic``): ``files/pNNNN/pNNNNNNNN/sNNNNNNNN/NNNNNNNN.{hea,dat}`` (WFDB
fmt 16, 200 adu/mV, 500 Hz, 10 s, MIMIC lead order), ``record_list.csv`` and
``machine_measurements.csv``; signals and reports come from the simulator of the synthetic
PTB-XL set (:mod:`ecglm.data.synthetic_signals`), one subject per study.

ECG-QA (``<root>/ecgqa/mimic-iv-ecg``): ``answers_for_each_template.csv``, ``answers.csv`` and
``template/{train,valid,test}/<shard>.json`` whose ``ecg_id`` are the study ids. Studies 1-8
are train ECGs, 9-10 valid, 11-12 test; the train split is written as two shard files.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import wfdb

from ecglm.data.canonical import LEADS
from ecglm.data.synthetic_qa import TEMPLATES, numeric_comparison
from ecglm.data.synthetic_signals import RHYTHMS, simulate_labels, simulate_signal

MIMIC_LEADS = ["I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6"]
N_RECORDS = 12
SPLIT_OF_INDEX = {**{i: "train" for i in range(8)}, 8: "valid", 9: "valid", 10: "test",
                  11: "test"}
MISSING_STUDY = 49999999
"""Study id of the item whose ECG is not in the MIMIC-IV-ECG fixture."""


@dataclass
class MimicQAFixture:
    """Paths and expected facts of the fixture."""

    mimic_root: Path
    qa_root: Path
    study_ids: list[int]
    split_of_study: dict[int, str]
    """Record split the build must assign (the conflict study goes to ``test``)."""
    items_per_split: dict[str, int]
    """Items written per split (all, including the unavailable and the conflicting ones)."""
    unavailable: dict[str, int]
    """Items per split whose ECG is not in the fixture."""
    conflict_study: int
    conflict_train_items: list[int]
    """sample_ids of the train items that use the study also used by a test item."""


def _study(k: int) -> tuple[int, int]:
    """(subject_id, study_id) of record index ``k``."""
    return 10000100 + 13 * k, 40100000 + 1009 * k


def _write_records(root: Path, seed: int) -> list:
    records = simulate_labels(N_RECORDS, seed)
    rows = []
    for k, rec in enumerate(records):
        subject, study = _study(k)
        rel = Path("files") / f"p{str(subject)[:4]}" / f"p{subject}" / f"s{study}"
        (root / rel).mkdir(parents=True, exist_ok=True)
        x = simulate_signal(rec, seed, 500, 5000)  # (12, 5000) mV, canonical order
        sig = np.stack([x[LEADS.index(n)] for n in MIMIC_LEADS], axis=1)
        wfdb.wrsamp(str(study), fs=500, units=["mV"] * 12, sig_name=MIMIC_LEADS, p_signal=sig,
                    fmt=["16"] * 12, adc_gain=[200.0] * 12, baseline=[0] * 12,
                    write_dir=str(root / rel))
        rows.append((subject, study, str(rel / str(study)), rec.report))
    with (root / "record_list.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["subject_id", "study_id", "file_name", "ecg_time", "path"])
        for subject, study, path, _ in rows:
            w.writerow([subject, study, study, "2180-07-23 08:44:00", path])
    cols = ["subject_id", "study_id", "cart_id", "ecg_time",
            *[f"report_{i}" for i in range(18)], "rr_interval", "qrs_axis"]
    with (root / "machine_measurements.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for subject, study, _, report in rows:
            parts = [s for s in report.split(".") if s.strip()][:18]
            w.writerow([subject, study, 6848296, "2180-07-23 08:44:00",
                        *(parts + [""] * (18 - len(parts))), 800, 45])
    return records


def _item(sample_id: int, tid: int, ecg_ids: list[int], answer: list[str],
          attribute: list[str] | None, fill: dict) -> dict:
    spec = TEMPLATES[tid]
    return {"template_id": tid, "question_id": tid * 100 + len(ecg_ids),
            "sample_id": sample_id, "question_type": spec["type"],
            "attribute_type": spec["attribute_type"], "question": spec["text"][0].format(**fill),
            "answer": answer, "ecg_id": ecg_ids, "attribute": attribute}


def write_mimic_qa_fixture(root: Path, seed: int = 0) -> MimicQAFixture:
    """Write the fixture under ``root`` (``root/mimic`` and ``root/ecgqa``)."""
    mimic, qa = root / "mimic", root / "ecgqa"
    records = _write_records(mimic, seed)
    studies = [_study(k)[1] for k in range(N_RECORDS)]
    by_split: dict[str, list[dict]] = {"train": [], "valid": [], "test": []}
    sid = 300000
    rhythms = list(RHYTHMS)
    for k, rec in enumerate(records):  # two verify questions per ECG, in its split
        for asked in (rec.rhythm, rhythms[(rhythms.index(rec.rhythm) + 1) % len(rhythms)]):
            sid += 1
            by_split[SPLIT_OF_INDEX[k]].append(
                _item(sid, 101, [studies[k]], ["yes" if asked == rec.rhythm else "no"],
                      [asked], {"a": asked}))
    for a, b in ((0, 1), (2, 3), (8, 9), (10, 11)):  # comparisons within a split
        sid += 1
        by_split[SPLIT_OF_INDEX[a]].append(
            _item(sid, 68, [studies[a], studies[b]], numeric_comparison(records[a], records[b], 68),
                  None, {}))
    sid += 1  # an ECG that is not in MIMIC-IV-ECG (here)
    by_split["valid"].append(_item(sid, 101, [MISSING_STUDY], ["no"], ["sinus rhythm"],
                                   {"a": "sinus rhythm"}))
    conflict = studies[7]  # a train ECG also asked about in the test split
    sid += 1
    by_split["test"].append(_item(sid, 68, [studies[10], conflict],
                                  numeric_comparison(records[10], records[7], 68), None, {}))
    conflict_train = [it["sample_id"] for it in by_split["train"] if conflict in it["ecg_id"]]
    folder = qa / "mimic-iv-ecg"
    for split, items in by_split.items():
        out = folder / "template" / split
        out.mkdir(parents=True, exist_ok=True)
        if split == "train":  # two shard files, as the release has
            half = len(items) // 2
            (out / "300000.json").write_text(json.dumps(items[:half]))
            (out / "300100.json").write_text(json.dumps(items[half:]))
        else:
            (out / f"{items[0]['sample_id']}.json").write_text(json.dumps(items))
    with (folder / "answers_for_each_template.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["template_id", "classes"])
        for tid in sorted(TEMPLATES):
            w.writerow([tid, repr(TEMPLATES[tid]["classes"])])
    vocab = sorted({c for spec in TEMPLATES.values() for c in spec["classes"]} | {"not sure"})
    with (folder / "answers.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["index", "class"])
        w.writerows(enumerate(vocab))
    split_of = {s: SPLIT_OF_INDEX[k] for k, s in enumerate(studies)}
    split_of[conflict] = "test"
    return MimicQAFixture(
        mimic_root=mimic, qa_root=qa, study_ids=studies, split_of_study=split_of,
        items_per_split={s: len(v) for s, v in by_split.items()},
        unavailable={"train": 0, "valid": 1, "test": 0}, conflict_study=conflict,
        conflict_train_items=conflict_train)
