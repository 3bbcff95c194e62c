"""``data.dataset``: record shards of LUDB, CinC 2021 and MIMIC-IV-ECG through the same Ray Data
build as PTB-XL (same manifest, quarantine file; no QA items), and the config checks."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from ecglm.cli import main
from ecglm.config import from_dict
from ecglm.config.schema import ConfigError, NormalizeConfig
from ecglm.data import build_shards, decode_signals, read_record
from ecglm.data.datasets import cinc_ecg_id, load_dataset_catalog
from ecglm.data.sharding import NAMED_RECORD_SCHEMA
from ecglm.data.shards import require_qa_dataset, shard_hash
from ecglm.data.splits import SPLITS
from tests.helpers import CINC, RECORDS500, write_mimic_fixture

QUANT_MV = 0.0005 + 1e-6  # int16 microvolt rounding


def _cfg(shard_dir: Path, **data: object):
    return from_dict({"seed": 0, "train": {"ray_num_cpus": 4},
                      "data": {"shard_dir": str(shard_dir), "records_per_shard": 16, **data}})


def _records(root: Path) -> list[dict]:
    return pq.read_table(root / "records").to_pylist()


def _check_common(shards, rows: list[dict], n_in: int, dataset: str) -> None:
    """Manifest counts, empty QA splits, schema, signals vs the reader, disjoint patients."""
    m, c = shards.manifest, shards.manifest["counts"]
    assert m["dataset"] == dataset and shards.root.name == m["config_hash"]
    assert c["records_in"] == n_in == c["records_ok"] + c["records_quarantined"]
    assert c["records_ok"] == len(rows)
    assert (c["qa_in"], c["qa_ok"], c["qa_quarantined"]) == (0, 0, 0)
    for split in SPLITS:
        assert pq.read_table(shards.qa[split]).num_rows == 0
        assert c["per_split"][split] == {"records": sum(r["split"] == split for r in rows),
                                         "qa": 0}
    assert pq.read_schema(next(shards.records.glob("*.parquet"))).names == \
        NAMED_RECORD_SCHEMA.names
    assert set(m["checksums"]) >= {"quarantine.jsonl"}
    assert m["throughput"]["records_per_s"] > 0
    patients = {s: {r["patient_id"] for r in rows if r["split"] == s} for s in SPLITS}
    assert not patients["train"] & patients["test"] and not patients["train"] & patients["valid"]
    assert not patients["valid"] & patients["test"]
    assert len({r["ecg_id"] for r in rows}) == len(rows)
    assert all(r["report"].strip() for r in rows)


def _check_signals(rows: list[dict], path_of: dict[str, str], fs: int, n: int) -> None:
    for r in rows:
        x = decode_signals(r["signal"], 1, r["n_samples"])[0]
        ref = read_record(path_of[r["record"]], NormalizeConfig(), fs, n).signal
        assert np.abs(x - np.clip(ref, -32.768, 32.767)).max() <= QUANT_MV, r["record"]


def test_config_combinations_and_hash() -> None:
    for bad, key in ([{"dataset": "ludb", "source": "synthetic"}, "data.dataset"],
                     [{"dataset": "cinc2021", "qa_split": "strat_fold"}, "data.dataset"],
                     [{"dataset": "mimic"}, "data.mimic_root"],
                     [{"max_records": 5}, "data.max_records"],
                     [{"dataset": "ludb", "max_records": 0}, "data.max_records"],
                     [{"dataset": "chapman"}, "data.dataset"]):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            from_dict({"data": bad})
    with pytest.raises(ConfigError, match=r"data\.dataset: QA training"):
        require_qa_dataset(from_dict({"data": {"dataset": "ludb"}}))
    require_qa_dataset(from_dict({}))
    # PTB-XL hashes as before data.dataset existed (values of the previous commit)
    for data, digest in (({}, "9346119e5bf6728a"),
                         ({"max_ecg_id": 40, "source": "shared"}, "11db53638eceb4e6"),
                         ({"fs": 100, "normalize": {"missing_leads": "mask"}},
                          "8069aa1ebff49da3")):
        assert shard_hash(from_dict({"seed": 0, "data": data}), "shared") == digest
    assert shard_hash(from_dict({"data": {"dataset": "ludb"}}), "shared") != \
        shard_hash(from_dict({"data": {"dataset": "cinc2021"}}), "shared")


def test_cinc_ecg_id() -> None:
    assert cinc_ecg_id("E07500") == 5 * 10**8 + 7500
    assert cinc_ecg_id("HR06000") == (8 * 27 + 18) * 10**8 + 6000
    assert cinc_ecg_id("JS20011") != cinc_ecg_id("S20011") != cinc_ecg_id("Q20011")
    with pytest.raises(ValueError, match="record: CinC record name"):
        cinc_ecg_id("E07500_x")


@pytest.mark.slow
def test_shard_ludb(shared_data: Path, ray_session, tmp_path: Path, capsys) -> None:
    cfg = _cfg(tmp_path, dataset="ludb", source="shared", shared_root=str(shared_data),
               max_records=12)
    shards = build_shards(cfg)
    assert "12 ok, 0 quarantined" in capsys.readouterr().out
    rows = _records(shards.root)
    _check_common(shards, rows, 12, "ludb")
    assert sorted(r["ecg_id"] for r in rows) == list(range(1, 13))
    assert all(r["record"] == str(r["ecg_id"]) == str(r["patient_id"]) for r in rows)
    first = next(r for r in rows if r["ecg_id"] == 1)
    assert first["report"].startswith("Sinus bradycardia. Electric axis")
    assert "Left ventricular hypertrophy" in json.loads(first["labels"])["diagnoses"]
    _check_signals(rows, {str(i): str(shared_data / "ludb" / "data" / str(i))
                          for i in range(1, 13)}, 500, 5000)
    assert build_shards(cfg).root == shards.root  # reused as is
    assert "reusing shards" in capsys.readouterr().out


@pytest.mark.slow
def test_shard_cinc2021(shared_data: Path, ray_session, tmp_path: Path) -> None:
    cfg = _cfg(tmp_path / "shards", dataset="cinc2021", source="shared",
               shared_root=str(shared_data))
    shards = build_shards(cfg)
    rows = _records(shards.root)
    _check_common(shards, rows, 50, "cinc2021")
    c = shards.manifest["counts"]
    assert (c["records_ok"], c["records_quarantined"], c["records_flagged"]) == (50, 0, 2)
    by_name = {r["record"]: r for r in rows}
    assert by_name["JS20004"]["flags"] == ["flat leads: V2, V4, V6"]  # known odd record
    e0 = by_name["E07500"]
    assert e0["ecg_id"] == cinc_ecg_id("E07500") == e0["patient_id"]
    assert e0["report"] == "left atrial enlargement, sinus bradycardia"
    assert json.loads(e0["labels"])["dx"] == ["67741000119109", "426177001"]
    _check_signals(rows, {n: str(CINC / n) for n in by_name}, 500, 5000)

    # a corrupt record next to good ones: quarantined with its name and reason
    root = tmp_path / "data" / "cinc2021"
    root.mkdir(parents=True)
    for name in ("E07500", "JS20004", "HR06000"):
        for ext in ("hea", "mat"):
            shutil.copyfile(CINC / f"{name}.{ext}", root / f"{name}.{ext}")
    shutil.copyfile(CINC / "dx_mapping_from_ecgbench.csv", root / "dx_mapping_from_ecgbench.csv")
    (root / "E09999.hea").write_text((CINC / "E07501.hea").read_text().replace("E07501",
                                                                               "E09999"))
    (root / "E09999.mat").write_bytes((CINC / "E07501.mat").read_bytes()[:300])
    bad = build_shards(_cfg(tmp_path / "shards", dataset="cinc2021",
                            shared_root=str(tmp_path / "data")))
    c = bad.manifest["counts"]
    assert (c["records_in"], c["records_ok"], c["records_quarantined"]) == (4, 3, 1)
    q = [json.loads(ln) for ln in (bad.root / "quarantine.jsonl").read_text().splitlines()]
    assert len(q) == 1 and q[0]["id"] == f"ecg:{cinc_ecg_id('E09999')}"
    assert q[0]["record"] == "E09999" and "E09999" in q[0]["reason"]
    assert {r["record"] for r in _records(bad.root)} == {"E07500", "JS20004", "HR06000"}


def _share_subject(root: Path, keep: int, other: int) -> None:
    """Give study ``other`` the subject of study ``keep`` in both MIMIC CSVs."""
    for name in ("record_list.csv", "machine_measurements.csv"):
        with (root / name).open(newline="") as fh:
            rows = list(csv.reader(fh))
        subject = next(r[0] for r in rows[1:] if r[1] == str(keep))
        for r in rows[1:]:
            if r[1] == str(other):
                r[0] = subject
        with (root / name).open("w", newline="") as fh:
            csv.writer(fh).writerows(rows)


@pytest.mark.slow
def test_shard_mimic_fixture(shared_data: Path, ray_session, tmp_path: Path) -> None:
    mimic = tmp_path / "mimic"
    recs = write_mimic_fixture(mimic, [RECORDS500 / f"0000{k}_hr" for k in (1, 2, 3, 4)])
    kept = [r for r in recs if r["report"]]  # the 3rd report is too short: not in the catalog
    assert len(kept) == 3
    _share_subject(mimic, kept[0]["study_id"], kept[2]["study_id"])
    cfg = _cfg(tmp_path / "shards", dataset="mimic", mimic_root=str(mimic), valid_fraction=0.0,
               test_fraction=0.5)
    cat = load_dataset_catalog(cfg.data, mimic, cfg.seed)
    assert cat["ecg_id"].tolist() == sorted(r["study_id"] for r in kept)
    shards = build_shards(cfg)
    rows = _records(shards.root)
    _check_common(shards, rows, 3, "mimic")
    by_study = {r["ecg_id"]: r for r in rows}
    for r in kept:
        row = by_study[r["study_id"]]
        assert row["record"] == r["path"] and row["report"] == r["report"]
    same = [by_study[kept[0]["study_id"]], by_study[kept[2]["study_id"]]]
    assert same[0]["patient_id"] == same[1]["patient_id"] and same[0]["split"] == same[1]["split"]
    assert {r["split"] for r in rows} == {"train", "test"}  # 2 patients: one each
    _check_signals(rows, {r["path"]: str(mimic / r["path"]) for r in kept}, 500, 5000)
    with pytest.raises(FileNotFoundError, match=r"data\.mimic_root"):
        build_shards(_cfg(tmp_path / "shards", dataset="mimic",
                          mimic_root=str(tmp_path / "nothere")))


@pytest.mark.slow
def test_cli_shard_ludb(shared_data: Path, ray_session, repo_root: Path, tmp_path: Path,
                        capsys) -> None:
    code = main(["data", "shard", str(repo_root / "jobs/configs/tiny.yaml"), "data.dataset=ludb",
                 "data.source=shared", f"data.shared_root={shared_data}",
                 f"data.shard_dir={tmp_path}", "data.max_records=12"])
    assert code == 0
    out = capsys.readouterr().out
    manifest = json.loads(out[out.index("{\n"):])
    c = manifest["counts"]
    assert manifest["dataset"] == "ludb" and manifest["fs"] == 100
    assert c["records_in"] == 12 == c["records_ok"] + c["records_quarantined"]
    assert c["qa_in"] == 0 and Path(manifest["root"]).is_dir()
    assert main(["data", "shard", str(repo_root / "jobs/configs/tiny.yaml"),
                 "data.dataset=ludb"]) == 2  # tiny.yaml's synthetic source: bad combination
    assert "data.dataset" in capsys.readouterr().err
