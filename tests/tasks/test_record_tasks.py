"""Per-record task rows (report / grounding / classify) built from record shards."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ecglm.config import ExperimentConfig
from ecglm.config.schema import NormalizeConfig
from ecglm.data.ptbxl import load_scp_statements
from ecglm.data.readers import read_record
from ecglm.data.sharding import RECORD_SCHEMA, encode_signals
from ecglm.config import ConfigError
from ecglm.data.reference import reference_text, statement_texts
from ecglm.tasks import TASKS, get_task
from ecglm.tasks.classify import parse_labels, record_labels
from ecglm.utils.cache_dirs import read_marker


@dataclass
class _Shards:
    root: Path
    records: Path
    manifest: dict


def _records(shared_data: Path, root: Path) -> _Shards:
    """Six real PTB-XL records, one flat-line ECG and one whose report is too short."""
    db = pd.read_csv(shared_data / "ptbxl" / "ptbxl_database.csv", index_col="ecg_id")
    rows = []
    for i, ecg_id in enumerate([1, 2, 3, 4, 5, 6, 7, 8]):
        rec = read_record(shared_data / "ptbxl" / "records500" / "00000" / f"{ecg_id:05d}_hr",
                          NormalizeConfig(), 500, 5000)
        signal = rec.signal if ecg_id != 7 else np.zeros_like(rec.signal)
        report = str(db.loc[ecg_id, "report"]) if ecg_id != 8 else "ok"
        codes = db.loc[ecg_id, "scp_codes"].replace("'", '"') if ecg_id != 8 else "{}"
        rows.append({"ecg_id": ecg_id, "patient_id": ecg_id, "split": ["train", "valid",
                                                                       "test"][i % 3],
                     "fs": 500, "n_samples": 5000, "signal": encode_signals(signal[None]),
                     "report": report, "scp_codes": codes, "labels": "{}",
                     "lead_mask": [True] * 12, "flags": [], "source_fp": "x"})
    folder = root / "records"
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=RECORD_SCHEMA), str(folder / "r.parquet"))
    return _Shards(root, folder, {"config_hash": "test"})


def _cfg(shared_data: Path, task: str, source: str = "statements") -> ExperimentConfig:
    from ecglm.config.loader import apply_overrides

    return apply_overrides(ExperimentConfig(), {"task": task, "targets.source": source,
                                                "data.shared_root": str(shared_data)})


def test_statement_texts_are_english_descriptions_most_likely_first(shared_data: Path) -> None:
    table = load_scp_statements(shared_data)
    texts = statement_texts('{"SR": 0.0, "NORM": 100.0, "LVOLT": 0.0, "XXX": 50}', table)
    assert texts[0] == str(table.loc["NORM", "description"])
    assert len(texts) == 3  # unknown code XXX left out
    assert statement_texts("{}", table) == [] and statement_texts('{"NORM": 1}', None) == []


def test_reference_text_sources_and_cleaning(shared_data: Path) -> None:
    table = load_scp_statements(shared_data)
    codes = '{"NORM": 100.0, "SR": 0.0}'
    report = "sinusrhythmus normales ekg. 120/80. nan"
    assert "nan" not in reference_text(report, codes, "report", table, 0)
    assert "120/80" not in reference_text(report, codes, "report", table, 0)
    stm = reference_text(report, codes, "statements", table, 0)
    assert "sinusrhythmus" not in stm and str(table.loc["NORM", "description"]) in stm
    both = reference_text(report, codes, "both", table, 0)
    assert "sinusrhythmus" in both and str(table.loc["NORM", "description"]) in both
    # no statement table: statements fall back to the report
    assert "sinusrhythmus" in reference_text(report, codes, "statements", None, 0)
    assert reference_text("too short", "{}", "report", table, 5) == ""
    # curated statements are short by nature: the minimum applies to free text only
    assert reference_text("x", codes, "statements", table, 5) != ""
    assert reference_text("x", "{}", "statements", table, 5) == ""  # falls back to the report


@pytest.mark.parametrize("task", ["report", "grounding"])
def test_build_task_rows_counts_quarantine_and_reuse(shared_data: Path, tmp_path: Path,
                                                    task: str) -> None:
    shards = _records(shared_data, tmp_path)
    cfg = _cfg(shared_data, task, source="report")
    built = get_task(task).build_data(cfg, shards)
    counts = built.manifest.to_json()["counts"]
    assert counts["in"] == 8 and counts["ok"] + counts["quarantined"] == 8
    quarantined = [json.loads(line) for line in
                   Path(built.manifest.quarantine).read_text().splitlines()]
    ids = {q["id"] for q in quarantined}
    assert ("ecg:8" in ids) == (task == "report")  # report "ok": under 5 tokens
    if task == "grounding":
        assert "ecg:7" in ids and "ecg:8" not in ids  # flat line; short impression is fine
        reasons = {q["id"]: q["reason"] for q in quarantined}
        assert reasons["ecg:7"].startswith("grounding features")
    rows = [r for p in built.paths.values() for r in pq.read_table(str(p)).to_pylist()]
    assert len(rows) == counts["ok"] == sum(counts["per_split"].values())
    for r in rows:
        assert r["ecg_ids"] == [r["sample_id"]] and r["n_ecg"] == 1 and r["target"]
    if task == "grounding":
        by_id = {r["sample_id"]: r["target"] for r in rows}
        assert "heart rate" in by_id[1] and "Impression:" in by_id[1]
        # the numbers in the target are this ECG's own measurements
        from ecglm.evaluation.grounding import ground_text
        from ecglm.features.grounding import grounding_features
        from ecglm.data.sharding import decode_signals

        row = next(r for r in rows if r["sample_id"] == 1)
        feats = grounding_features(decode_signals(row["signals"], 1, 5000)[0], 500)
        result = ground_text(row["target"], feats)
        assert result.count("supported") > 0 and result.count("contradicted") == 0
    again = get_task(task).build_data(cfg, shards)  # cached: same folder, same counts
    assert again.root == built.root and again.manifest == built.manifest
    assert json.loads(built.manifest_path.read_text()) == built.manifest.to_json()
    assert read_marker(built.root)["kind"] == "task_rows"  # written once, with provenance
    assert [p.name for p in built.root.parent.iterdir()] == [built.root.name]  # no temp left


def test_unknown_task_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^task: unknown task 'nope'"):
        get_task("nope")
    assert sorted(TASKS) == ["classify", "grounding", "qa", "report"]


def test_classify_rows_carry_superclass_labels(shared_data: Path, tmp_path: Path) -> None:
    shards = _records(shared_data, tmp_path)
    cfg = _cfg(shared_data, "classify")
    built = get_task("classify").build_data(cfg, shards)
    counts = built.manifest.to_json()["counts"]
    assert counts["in"] == 8 and counts["quarantined"] == 0  # no label is an answer ("none")
    assert built.manifest.details["classes"] == ["NORM", "MI", "STTC", "CD", "HYP"]
    rows = {r["sample_id"]: r for p in built.paths.values()
            for r in pq.read_table(str(p)).to_pylist()}
    table = load_scp_statements(shared_data)
    db = pd.read_csv(shared_data / "ptbxl" / "ptbxl_database.csv", index_col="ecg_id")
    for ecg_id, r in rows.items():
        if ecg_id == 8:
            assert r["labels"] == [] and r["target"] == "none"
            continue
        codes = json.loads(db.loc[ecg_id, "scp_codes"].replace("'", '"'))
        expected = [c for c in ("NORM", "MI", "STTC", "CD", "HYP")
                    if any(code in table.index and table.loc[code, "diagnostic_class"] == c
                           and p >= 50 for code, p in codes.items())]
        assert r["labels"] == expected and r["target"] == (", ".join(expected) or "none")


def test_classify_labels_from_codes_and_parsing() -> None:
    classes = ["NORM", "SR", "1AVB"]
    # no statement table (synthetic data): the codes themselves are the labels
    assert record_labels('{"SR": 0.0, "1AVB": 100.0, "NORM": 15.0}', None, classes, 50) == (
        "SR", "1AVB")
    assert parse_labels("1avb, sr", classes) == ("SR", "1AVB")
    assert parse_labels("none", classes) == () and parse_labels("NORMAL", classes) == ()
    assert parse_labels("NORM; NORM", classes) == ("NORM",)
