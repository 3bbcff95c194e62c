"""A release-layout root trains and evaluates at tiny size: the ECG-QA PTB-XL release cut in
../shared/data, and a synthetic MIMIC-IV-ECG + ECG-QA (MIMIC-IV-ECG) release fixture.

Each test is one ``ecglm train`` run (2 steps) followed by the evaluation of the test split;
the shard manifest carries the official per-split counts, the unavailable items and the
missing-record report.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ecglm.recipes import train
from ecglm.train.run import Prepared, prepare, split_rows
from tests.data.mimic_qa_fixture import write_mimic_qa_fixture
from tests.helpers import tiny_config

pytestmark = pytest.mark.slow


def _lines(path: str) -> list[dict]:
    return [json.loads(ln) for ln in Path(path).read_text().splitlines()]


def _check_run(out: dict, cfg, expected_test_ids: set[int]) -> Prepared:
    """The run evaluated exactly the test split's items; returns the run's prepared data."""
    metrics = out["eval"]["metrics"]
    assert metrics["n/overall"] == len(expected_test_ids)
    assert 0.0 <= metrics["em/overall"] <= 1.0
    preds = json.loads((Path(out["eval"]["summary"]).parent / "predictions.json").read_text())
    assert {p["sample_id"] for p in preds} == expected_test_ids
    return prepare(cfg)  # same config: shards and retrieval are reused


@pytest.mark.timeout(300)
def test_shared_release_root_trains_and_evaluates(shared_data: Path, ray_session,
                                                  tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, "data.source=shared", f"data.shared_root={shared_data}",
                      "data.qa_layout=release", "data.max_ecg_id=150", "train.max_steps=2",
                      "train.eval_every=0")
    release = shared_data / "ecgqa" / "release" / "ptbxl" / "template"
    official = {s: [r for f in sorted((release / s).glob("*.json"))
                    for r in json.loads(f.read_text())] for s in ("train", "valid", "test")}
    usable = {s: {r["sample_id"] for r in rows if max(r["ecg_id"]) <= 150}
              for s, rows in official.items()}
    out = train.run(cfg)
    prep = _check_run(out, cfg, usable["test"])
    manifest = prep.shards.manifest
    qa = manifest["inputs"]["qa"]
    assert qa["layout"] == "release" and qa["folder"] == str(release.parent)
    for split, rows in official.items():
        assert qa["per_split"][split]["in"] == len(rows)
        assert qa["per_split"][split]["available"] == len(usable[split])
        assert manifest["counts"]["per_split"][split]["qa"] == len(usable[split])
    unavailable = _lines(qa["unavailable_report"])
    assert len(unavailable) == qa["items_unavailable"] == sum(
        len(rows) - len(usable[s]) for s, rows in official.items())
    assert manifest["inputs"]["records_missing"] == 0  # ecg_id 1-150 are all on disk
    assert manifest["counts"]["qa_quarantined"] == 0  # official splits never cross
    for split in ("train", "valid", "test"):  # items keep their official split
        assert {r.sample_id for r in split_rows(prep, split)} == usable[split]


@pytest.mark.timeout(300)
def test_mimic_release_fixture_trains_and_evaluates(ray_session, tmp_path: Path) -> None:
    fx = write_mimic_qa_fixture(tmp_path / "release")
    cfg = tiny_config(tmp_path, "data.dataset=mimic", "data.source=auto",
                      f"data.mimic_root={fx.mimic_root}", f"data.qa_root={fx.qa_root}",
                      "train.max_steps=2", "train.eval_every=0")
    folder = fx.qa_root / "mimic-iv-ecg" / "template"
    items = {s: [r for f in sorted((folder / s).glob("*.json")) for r in json.loads(f.read_text())]
             for s in ("train", "valid", "test")}
    test_ids = {r["sample_id"] for r in items["test"]}
    out = train.run(cfg)
    prep = _check_run(out, cfg, test_ids)
    manifest = prep.shards.manifest
    c, qa = manifest["counts"], manifest["inputs"]["qa"]
    assert manifest["dataset"] == "mimic" and qa["dataset"] == "mimic-iv-ecg"
    assert {s: v["in"] for s, v in qa["per_split"].items()} == fx.items_per_split
    assert {s: v["unavailable"] for s, v in qa["per_split"].items()} == fx.unavailable
    assert _lines(qa["unavailable_report"])[0]["split"] == "valid"
    # the train items of the study a test item also uses are quarantined (reported)
    quarantine = _lines(manifest["quarantine"])
    assert sorted(int(q["id"][3:]) for q in quarantine if q["id"].startswith("qa:")) == \
        fx.conflict_train_items
    assert c["qa_in"] == c["qa_ok"] + c["qa_quarantined"] == sum(fx.items_per_split.values()) - 1
    assert c["per_split"]["train"]["qa"] == fx.items_per_split["train"] - 2
    rows = {s: split_rows(prep, s) for s in ("train", "valid", "test")}
    assert {r.sample_id for r in rows["test"]} == test_ids
    records = pq.read_table(Path(manifest["quarantine"]).parent / "records",
                            columns=["ecg_id", "split"]).to_pylist()
    split_of = {r["ecg_id"]: r["split"] for r in records}
    assert {e: split_of[e] for e in fx.study_ids} == fx.split_of_study
