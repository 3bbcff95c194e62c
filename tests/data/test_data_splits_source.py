"""Patient-level splits, official split lists, and data-source resolution."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecglm.config.schema import DataConfig
from ecglm.data import (DataSourceError, assign_splits, load_official_splits,
                        load_ptbxl_catalog, resolve_source)
from ecglm.data.splits import record_splits
from ecglm.data.synthetic import MARKER_FILE


def test_assign_splits_patient_level_and_seeded() -> None:
    patients = [7, 3, 3, 11, 5, 5, 5, 20, 1, 9, 8, 2, 4, 6, 10, 12, 13, 14, 15, 16]
    a = assign_splits(patients, 0.1, 0.2, seed=0)
    assert set(a) == set(patients)  # one entry per patient
    unique = len(set(patients))
    counts = {s: sum(v == s for v in a.values()) for s in ("train", "valid", "test")}
    assert counts == {"test": round(0.2 * unique), "valid": round(0.1 * unique),
                      "train": unique - round(0.2 * unique) - round(0.1 * unique)}
    assert assign_splits(list(reversed(patients)), 0.1, 0.2, seed=0) == a  # order-free
    assert any(assign_splits(patients, 0.1, 0.2, seed=s) != a for s in (1, 2, 3))
    tiny = assign_splits([1, 2, 3], 0.1, 0.2, seed=0)
    assert sorted(tiny.values()) == ["test", "train", "valid"]
    with pytest.raises(ValueError, match="valid_fraction"):
        assign_splits(patients, 0.5, 0.5, seed=0)


def test_record_splits_keep_patients_together(shared_data: Path) -> None:
    cat = load_ptbxl_catalog(shared_data, 300)
    splits = record_splits(cat["ecg_id"].tolist(), cat["patient_id"].tolist(),
                           cat["strat_fold"].tolist(), "seeded", 0.1, 0.2, 0, shared_data)
    per_patient: dict[int, set[str]] = {}
    for e, p in zip(cat["ecg_id"], cat["patient_id"]):
        per_patient.setdefault(p, set()).add(splits[e])
    assert all(len(s) == 1 for s in per_patient.values())
    assert cat["patient_id"].duplicated().any()  # the check above is not vacuous
    assert set(splits.values()) == {"train", "valid", "test"}


def test_official_splits(shared_data: Path, tmp_path: Path) -> None:
    official = load_official_splits(shared_data)
    n_lines = sum(len((shared_data / "ecgqa" / "ptbxl" / f"{s}_ecgs.tsv").read_text()
                      .splitlines()) for s in ("train", "valid", "test"))
    assert len(official) == n_lines
    assert (official[1], official[2], official[3]) == ("test", "valid", "train")
    cat = load_ptbxl_catalog(shared_data, 300)
    splits = record_splits(cat["ecg_id"].tolist(), cat["patient_id"].tolist(),
                           cat["strat_fold"].tolist(), "official", 0.1, 0.2, 0, shared_data)
    assert splits[1] == "test" and splits[2] == "valid"
    assert 137 not in official and splits[137] in {"train", "valid", "test"}  # fold fallback
    bad = tmp_path / "ecgqa" / "ptbxl"
    bad.mkdir(parents=True)
    for s in ("train", "valid", "test"):
        (bad / f"{s}_ecgs.tsv").write_text("0\t1\n")
    with pytest.raises(ValueError, match="valid_ecgs.tsv:1: ecg_id 1 already in split"):
        load_official_splits(tmp_path)
    (bad / "train_ecgs.tsv").write_text("0\t1\n1 2\n")
    with pytest.raises(ValueError, match="train_ecgs.tsv:2"):
        load_official_splits(tmp_path)


def test_resolve_shared(shared_data: Path) -> None:
    src = resolve_source(DataConfig(source="shared", shared_root=str(shared_data)), seed=0)
    assert src.kind == "shared" and src.root == shared_data.resolve()
    src = resolve_source(DataConfig(source="auto", shared_root=str(shared_data)), seed=0)
    assert src.kind == "shared"


def test_resolve_missing_shared_and_synthetic_fallback(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # relative paths are relative to the working directory
    with pytest.raises(DataSourceError, match="data.shared_root: .*ptbxl_database.csv"):
        resolve_source(DataConfig(source="shared", shared_root="nowhere"), seed=0)
    cfg = DataConfig(source="auto", shared_root="nowhere", synthetic_records=10,
                     synthetic_root="syn")
    src = resolve_source(cfg, seed=5)
    assert src.kind == "synthetic" and src.root == tmp_path / "syn"
    marker = src.root / MARKER_FILE
    first = marker.stat().st_mtime_ns
    hea = src.root / "ptbxl" / "records500" / "00000" / "00001_hr.hea"
    hea_time = hea.stat().st_mtime_ns
    assert resolve_source(cfg, seed=5).root == src.root
    assert marker.stat().st_mtime_ns == first and hea.stat().st_mtime_ns == hea_time  # reused
    assert len(load_ptbxl_catalog(src.root, 300)) == 10
    resolve_source(cfg, seed=6)  # another seed rewrites it
    assert '"seed": 6' in marker.read_text()
    marker.unlink()  # an incomplete dataset (no marker) is rewritten
    resolve_source(cfg, seed=6)
    assert marker.is_file()
