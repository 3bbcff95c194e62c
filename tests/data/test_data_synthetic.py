"""Synthetic fallback: deterministic, readable by the real readers, answers match labels."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.signal import find_peaks

from ecglm.data import load_ecgqa_items, load_ptbxl_catalog, read_wfdb, write_synthetic_dataset
from ecglm.data.ecgqa import load_template_classes
from ecglm.data.synthetic import NORMAL_RANGES_MS


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_deterministic_and_fast(tmp_path: Path) -> None:
    t0 = time.process_time()  # CPU time: robust to other processes sharing the machine
    write_synthetic_dataset(tmp_path / "a", 120, seed=3)
    elapsed = time.process_time() - t0
    write_synthetic_dataset(tmp_path / "b", 120, seed=3)
    write_synthetic_dataset(tmp_path / "c", 120, seed=4)
    a, b, c = (_files(tmp_path / k) for k in "abc")
    assert elapsed < 5.0
    assert len(a) == 2 * 120 + 1 + 7 + 1  # records, database, 7 ECG-QA files, marker
    assert a == b
    assert a["ptbxl/records500/00000/00001_hr.dat"] != c["ptbxl/records500/00000/00001_hr.dat"]


def _labels(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / "ptbxl" / "ptbxl_database.csv",
                       keep_default_na=False).set_index("ecg_id")


def test_reads_back_with_the_real_readers(synthetic_root: Path) -> None:
    cat = load_ptbxl_catalog(synthetic_root, 300)
    labels = _labels(synthetic_root)
    assert cat["ecg_id"].tolist() == list(range(1, 41))
    counts = cat["patient_id"].value_counts()
    assert counts.max() == 2 and (counts == 2).sum() >= 1  # some patients have 2 records
    assert cat["strat_fold"].between(1, 10).all()
    assert cat.groupby("patient_id")["strat_fold"].nunique().max() == 1
    for row in cat.itertuples():
        x, fs = read_wfdb(row.path, 500, 5000)
        assert x.shape == (12, 5000) and fs == 500
        assert 0.3 < np.abs(x).max() < 6.0
        lab = labels.loc[row.ecg_id]
        assert row.report.startswith(f"{lab['rhythm']}, rate {lab['heart_rate']} bpm.")
        code = {"sinus rhythm": "SR", "sinus bradycardia": "SBRAD",
                "sinus tachycardia": "STACH", "atrial fibrillation": "AFIB"}[lab["rhythm"]]
        assert json.loads(row.scp_codes)[code] == 100.0
        assert ("baseline drift present." in row.report) == (lab["baseline_drift"] != "")


def test_signals_carry_the_labels(synthetic_root: Path) -> None:
    """Heart rate and RR regularity measured from lead II match the labelled rhythm."""
    cat = load_ptbxl_catalog(synthetic_root, 300)
    labels = _labels(synthetic_root)
    checked = 0
    for row in cat.itertuples():
        lab = labels.loc[row.ecg_id]
        if lab["baseline_drift"] or lab["static_noise"] or lab["burst_noise"]:
            continue
        x, fs = read_wfdb(row.path, 500, 5000)
        lead_ii = x[1] - np.median(x[1])
        peaks, _ = find_peaks(lead_ii, height=0.5 * lead_ii.max(), distance=int(0.3 * fs))
        rr = np.diff(peaks) / fs
        assert abs(60.0 / rr.mean() - lab["heart_rate"]) < 0.15 * lab["heart_rate"], row.ecg_id
        cv = rr.std() / rr.mean()
        if lab["rhythm"] == "atrial fibrillation":
            assert cv > 0.08, (row.ecg_id, cv)
            assert lab["pr_interval"] == "" and lab["p_duration"] == ""
        else:
            assert cv < 0.06, (row.ecg_id, cv)
        checked += 1
    assert checked >= 10


def _abnormal(lab: pd.Series, feature: str) -> bool | None:
    value = lab[feature.replace(" ", "_")]
    if value == "":
        return None
    lo, hi = NORMAL_RANGES_MS[feature]
    return not lo <= int(value) <= hi


def test_questions_are_answerable_from_labels(synthetic_root: Path) -> None:
    labels = _labels(synthetic_root)
    items = load_ecgqa_items(synthetic_root, "template", set(range(1, 41)))
    classes = load_template_classes(synthetic_root)
    raw = json.loads((synthetic_root / "ecgqa/ptbxl/template_ecgid_le300.json").read_text())
    assert len(items) == len(raw) > 80
    kinds = {it.question_type for it in items}
    assert {"single-verify", "single-query", "comparison_irrelevant-query"} <= kinds
    noise_cols = {"baseline drift": "baseline_drift", "static noise": "static_noise",
                  "burst noise": "burst_noise"}
    want = {68: (True, False), 69: (False, True), 70: (True, True)}
    for it, r in zip(items, raw):
        assert it.template_id in classes
        assert set(it.answer) <= set(it.options)
        lab = labels.loc[it.ecg_ids[0]]
        if it.template_id == 27:
            (noise,) = r["attribute"]
            assert it.question == f"Does this ECG show {noise}?"
            assert it.answer == (["yes"] if lab[noise_cols[noise]] else ["no"])
        elif it.template_id == 101:
            (rhythm,) = r["attribute"]
            assert it.answer == (["yes"] if lab["rhythm"] == rhythm else ["no"])
        elif it.template_id == 102:
            assert it.answer == [lab["rhythm"]]
            assert it.options == classes[102] + ["none"]
        else:
            first, second = (labels.loc[e] for e in it.ecg_ids)
            assert first["patient_id"] != second["patient_id"]
            expected = {f for f in NORMAL_RANGES_MS
                        if (_abnormal(first, f), _abnormal(second, f)) == want[it.template_id]}
            assert set(it.answer) == (expected or {"none"})


def test_paraphrased_file(synthetic_root: Path) -> None:
    ids = set(range(1, 41))
    tmpl = load_ecgqa_items(synthetic_root, "template", ids)
    para = load_ecgqa_items(synthetic_root, "paraphrased", ids)
    assert [t.sample_id for t in tmpl] == [p.sample_id for p in para]
    assert all(t.answer == p.answer and t.options == p.options for t, p in zip(tmpl, para))
    assert all(t.question != p.question for t, p in zip(tmpl, para))
