"""ECG-QA from the official release layout (PTB-XL in ../shared/data, MIMIC-IV-ECG on a fixture),
the layout choice, official splits, counted unavailable items, and PTB-XL at any size/rate."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from ecglm.config import from_dict
from ecglm.config.schema import ConfigError, DataConfig
from ecglm.data.ecgqa import load_ecgqa_items
from ecglm.data.errors import CatalogError
from ecglm.data.ptbxl import load_ptbxl_catalog, missing_ptbxl_records
from ecglm.data.qa_source import (QASourceError, load_qa_items, qa_input_files,
                                  release_record_splits, resolve_qa_layout)
from ecglm.data.shard_inputs import qa_rows
from ecglm.data.splits import load_split_lists
from tests.data.mimic_qa_fixture import MISSING_STUDY, write_mimic_qa_fixture

RELEASE_COUNTS = {"train": 268 + 74, "valid": 4, "test": 5}
"""../shared/data/README.md: 268/74/4/5 items per variant (train shards 120000 and 260000,
valid 60000, test 80000)."""
RELEASE_FILES = {"train": ["120000.json", "260000.json"], "valid": ["60000.json"],
                 "test": ["80000.json"]}


def _data(**kw: object) -> DataConfig:
    return from_dict({"data": kw}).data


@pytest.mark.parametrize("variant", ["template", "paraphrased"])
def test_shared_release_every_file_counts_and_official_split(shared_data: Path,
                                                             variant: str) -> None:
    cfg = _data(shared_root=str(shared_data), qa_layout="release", qa_variant=variant)
    layout = resolve_qa_layout(cfg, shared_data)
    assert layout is not None and layout.kind == "release"
    assert layout.folder == shared_data / "ecgqa" / "release" / "ptbxl"
    assert {s: [f.name for f in fs] for s, fs in layout.files.items()} == RELEASE_FILES
    sel = load_qa_items(cfg, shared_data, set(range(1, 301)))
    assert {s: c["in"] for s, c in sel.counts.items()} == RELEASE_COUNTS
    assert {s: c["files"] for s, c in sel.counts.items()} == {"train": 2, "valid": 1, "test": 1}
    assert len(sel.items) == sum(RELEASE_COUNTS.values()) and not sel.unavailable
    # each item keeps the split of the folder it was read from, and that split's JSON holds it
    for split, files in layout.files.items():
        ids = {raw["sample_id"] for f in files for raw in json.loads(f.read_text())}
        assert {it.sample_id for it in sel.items if it.split == split} == ids
    # the release's split lists agree with the item splits (no item crosses splits)
    lists = load_split_lists(layout.folder)
    assert all(lists[e] == it.split for it in sel.items for e in it.ecg_ids)
    assert sel.summary()["layout"] == "release"
    assert set(qa_input_files(cfg, shared_data)) >= {
        layout.folder / "answers_for_each_template.csv", layout.folder / "test_ecgs.tsv",
        *(f for fs in layout.files.values() for f in fs)}


def test_shared_release_missing_ecgs_counted_per_split(shared_data: Path) -> None:
    cfg = _data(shared_root=str(shared_data), qa_layout="release")
    available = set(range(1, 151))
    sel = load_qa_items(cfg, shared_data, available)
    layout = resolve_qa_layout(cfg, shared_data)
    for split, files in layout.files.items():
        raws = [raw for f in files for raw in json.loads(f.read_text())]
        n_ok = sum(all(e in available for e in raw["ecg_id"]) for raw in raws)
        assert sel.counts[split] == {"files": len(files), "in": len(raws), "available": n_ok,
                                     "unavailable": len(raws) - n_ok}
    assert sum(c["unavailable"] for c in sel.counts.values()) == len(sel.unavailable) > 0
    for entry in sel.unavailable:
        assert entry["missing_ecg_ids"] and all(e > 150 for e in entry["missing_ecg_ids"])
    assert all(all(e in available for e in it.ecg_ids) for it in sel.items)


def test_auto_layout_choice(shared_data: Path, tmp_path: Path) -> None:
    # the shared root holds both: auto keeps the curated subset (seeded/fold splits as before)
    auto = resolve_qa_layout(_data(shared_root=str(shared_data)), shared_data)
    assert auto is not None and auto.kind == "curated"
    curated = load_qa_items(_data(shared_root=str(shared_data)), shared_data,
                            set(range(1, 301)))
    assert [it.sample_id for it in curated.items] == [
        it.sample_id for it in load_ecgqa_items(shared_data, "template", set(range(1, 301)))]
    assert all(it.split is None for it in curated.items)
    # an unpacked release (ecgqa/ptbxl/<variant>/<split>/*.json, no curated file): auto reads it
    release = shared_data / "ecgqa" / "release" / "ptbxl"
    root = tmp_path / "data"
    shutil.copytree(release, root / "ecgqa" / "ptbxl")
    layout = resolve_qa_layout(_data(), root)
    assert layout is not None and layout.kind == "release"
    assert layout.folder == root / "ecgqa" / "ptbxl"
    # data.qa_root points elsewhere
    qa_root = _data(qa_root=str(root / "ecgqa"), qa_layout="release")
    assert resolve_qa_layout(qa_root, tmp_path / "nothing").folder == root / "ecgqa" / "ptbxl"
    with pytest.raises(QASourceError, match=r"data\.qa_layout.*'release'.*nothing"):
        resolve_qa_layout(_data(qa_layout="release"), tmp_path / "nothing")
    with pytest.raises(QASourceError, match=r"data\.qa_layout.*'curated'"):
        resolve_qa_layout(_data(qa_layout="curated"), root)
    with pytest.raises(ConfigError, match=r"data\.qa_layout"):
        _data(dataset="mimic", mimic_root="x", qa_layout="curated")


def test_bad_item_names_file_sample_and_field(shared_data: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(shared_data / "ecgqa" / "release" / "ptbxl", root / "ecgqa" / "ptbxl")
    shard = root / "ecgqa" / "ptbxl" / "template" / "test" / "80000.json"
    items = json.loads(shard.read_text())
    sid = items[2]["sample_id"]
    items[2]["answer"] = "none"
    shard.write_text(json.dumps(items))
    with pytest.raises(ValueError, match=rf"80000\.json: sample_id {sid}: answer"):
        load_qa_items(_data(qa_layout="release"), root, set(range(1, 301)))
    items[2]["answer"] = ["none"]
    items[2]["ecg_id"] = [items[2]["ecg_id"][0]]  # a comparison with one ECG
    shard.write_text(json.dumps(items))
    with pytest.raises(CatalogError, match=rf"80000\.json: sample_id {sid}: ecg_id"):
        load_qa_items(_data(qa_layout="release"), root, set(range(1, 301)))
    shard.write_text(json.dumps({"not": "a list"}))
    with pytest.raises(CatalogError, match=r"80000\.json: <root>: expected a JSON list"):
        load_qa_items(_data(qa_layout="release"), root, set(range(1, 301)))
    # one sample_id in two shard files
    items[2]["ecg_id"] = items[2]["ecg_id"] * 2
    valid = json.loads((shard.parents[1] / "valid" / "60000.json").read_text())
    shard.write_text(json.dumps(items + valid[:1]))
    with pytest.raises(CatalogError, match=rf"sample_id {valid[0]['sample_id']}.*already read"):
        load_qa_items(_data(qa_layout="release"), root, set(range(1, 301)))


def test_release_record_splits_ptbxl_lists(shared_data: Path) -> None:
    cfg = _data(shared_root=str(shared_data), qa_layout="release")
    lists = load_split_lists(shared_data / "ecgqa" / "release" / "ptbxl")
    ids = list(range(1, 301))
    got = release_record_splits(cfg, shared_data, ids, {e: "train" for e in ids})
    assert got == {e: lists.get(e, "train") for e in ids}
    assert {"train", "valid", "test"} == set(got.values())
    # a curated layout leaves the fallback as it is
    assert release_record_splits(_data(shared_root=str(shared_data)), shared_data, ids,
                                 {e: "valid" for e in ids}) == {e: "valid" for e in ids}


def test_mimic_release_fixture_join_splits_and_conflict(tmp_path: Path) -> None:
    fx = write_mimic_qa_fixture(tmp_path)
    cfg = _data(dataset="mimic", mimic_root=str(fx.mimic_root), qa_root=str(fx.qa_root))
    sel = load_qa_items(cfg, fx.mimic_root, set(fx.study_ids))
    assert {s: c["in"] for s, c in sel.counts.items()} == fx.items_per_split
    assert {s: c["unavailable"] for s, c in sel.counts.items()} == fx.unavailable
    assert sel.unavailable[0]["missing_ecg_ids"] == [MISSING_STUDY]
    assert sel.counts["train"]["files"] == 2
    splits = release_record_splits(cfg, fx.mimic_root, fx.study_ids,
                                   {e: "train" for e in fx.study_ids})
    assert splits == fx.split_of_study
    # the train items of the ECG that a test item also uses are quarantined, not leaked
    quarantine: list[dict] = []
    rows = qa_rows(sel.items, splits, set(), {e: b"" for e in fx.study_ids},
                   {e: 1 for e in fx.study_ids}, 0, quarantine)
    assert sorted(int(q["id"][3:]) for q in quarantine) == fx.conflict_train_items
    assert all("official split 'train'" in q["reason"] for q in quarantine)
    for split, part in rows.items():
        assert all(r["split"] == split for r in part)
    assert sum(map(len, rows.values())) + len(quarantine) == len(sel.items)


def test_ptbxl_any_size_and_rate(shared_data: Path) -> None:
    n_csv = 21837
    everything = load_ptbxl_catalog(shared_data, None)
    assert everything["ecg_id"].tolist() == list(range(1, 301))
    missing = missing_ptbxl_records(shared_data, None)
    assert len(missing) == n_csv - 300 and missing["ecg_id"].min() == 301
    assert missing["path"].iloc[0].endswith("records500/00000/00301_hr")
    assert missing_ptbxl_records(shared_data, 300).empty
    low = load_ptbxl_catalog(shared_data, 300, rate=100)
    assert low["ecg_id"].tolist() == list(range(1, 21))
    assert all(p.endswith("_lr") and "/records100/" in p for p in low["path"])
    assert len(missing_ptbxl_records(shared_data, 300, rate=100)) == 280
    with pytest.raises(ValueError, match=r"data\.ptbxl_rate"):
        load_ptbxl_catalog(shared_data, 300, rate=250)


def test_config_keys() -> None:
    assert _data(max_ecg_id=None).max_ecg_id is None
    with pytest.raises(ConfigError, match=r"data\.max_ecg_id"):
        _data(max_ecg_id=0)
    with pytest.raises(ConfigError, match=r"data\.ptbxl_rate"):
        _data(ptbxl_rate=250)
    with pytest.raises(ConfigError, match=r"data\.qa_layout"):
        _data(qa_layout="zip")
    cfg = _data(ptbxl_rate=100, qa_layout="release", qa_root="/x")
    assert (cfg.ptbxl_rate, cfg.qa_layout, cfg.qa_root) == (100, "release", "/x")
    assert replace(cfg, qa_root=None).qa_root is None
