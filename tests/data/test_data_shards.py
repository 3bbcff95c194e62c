"""Shard encoding and Ray Data shard builds (real PTB-XL, a corrupt mix, synthetic)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from ecglm.config import from_dict, to_dict
from ecglm.data import build_shards, decode_signals, encode_signals, load_ptbxl_catalog, read_wfdb
from ecglm.data.splits import SPLITS
from tests.helpers import RECORDS500, copy_record, put_nan, rename_lead, truncate_dat

QUANT_MV = 0.0005 + 1e-6  # int16 microvolt rounding


def test_encode_decode_round_trip() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1.0, size=(2, 12, 50)).astype(np.float32)
    x[0, 0, 0], x[1, 5, 7] = 40.0, -40.0  # beyond int16 microvolts: clipped
    b = encode_signals(x)
    assert len(b) == 2 * 12 * 50 * 2
    y = decode_signals(b, 2, 50)
    assert y.dtype == np.float32 and y.shape == (2, 12, 50)
    assert y[0, 0, 0] == pytest.approx(32.767) and y[1, 5, 7] == pytest.approx(-32.768)
    mask = np.abs(x) < 32
    assert np.abs(y - x)[mask].max() <= QUANT_MV
    with pytest.raises(ValueError, match="expected 2400 bytes"):
        decode_signals(b[:-2], 2, 50)
    with pytest.raises(ValueError, match=r"shape \(n_ecg, 12, T\)"):
        encode_signals(x[:, :6])


def _cfg(shard_dir: Path, **data: object):
    return from_dict({"seed": 0, "train": {"ray_num_cpus": 4},
                      "data": {"shard_dir": str(shard_dir), "records_per_shard": 16, **data}})


def _quarantine(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_round_trip_real_ptbxl(shared_data: Path, ray_session, tmp_path: Path, capsys) -> None:
    cfg = _cfg(tmp_path / "shards", source="shared", shared_root=str(shared_data), max_ecg_id=40)
    shards = build_shards(cfg)
    out = capsys.readouterr().out
    assert "records/s" in out and "40 ok, 0 quarantined" in out
    m = shards.manifest
    c = m["counts"]
    assert m["kind"] == "shared" and shards.root.name == m["config_hash"]
    assert (c["records_in"], c["records_ok"], c["records_quarantined"]) == (40, 40, 0)
    assert c["qa_in"] == c["qa_ok"] + c["qa_quarantined"] > 0
    assert json.loads((shards.root / "manifest.json").read_text()) == m

    assert len(list(shards.records.glob("*.parquet"))) >= 3  # 16 rows per file
    rec = pq.read_table(shards.records).to_pylist()
    assert sorted(r["ecg_id"] for r in rec) == list(range(1, 41))
    cat = load_ptbxl_catalog(shared_data, 40).set_index("ecg_id")
    split_of = {}
    for r in rec:
        x = decode_signals(r["signal"], 1, r["n_samples"])[0]
        ref, _ = read_wfdb(cat.loc[r["ecg_id"], "path"], 500, 5000)
        assert np.abs(x - ref).max() <= QUANT_MV
        assert r["patient_id"] == cat.loc[r["ecg_id"], "patient_id"] and r["fs"] == 500
        assert json.loads(r["scp_codes"]) == json.loads(cat.loc[r["ecg_id"], "scp_codes"])
        split_of[r["ecg_id"]] = r["split"]
    patients = {s: {int(cat.loc[e, "patient_id"]) for e, v in split_of.items() if v == s}
                for s in SPLITS}
    assert not patients["train"] & patients["test"]
    assert not patients["train"] & patients["valid"]

    n_qa = 0
    for split in SPLITS:
        rows = pq.read_table(shards.qa[split]).to_pylist()
        assert len(rows) == c["per_split"][split]["qa"]
        for row in rows:
            assert row["split"] == split == split_of[row["ecg_ids"][0]]
            assert row["n_ecg"] == len(row["ecg_ids"]) and set(row["answer"]) <= set(row["options"])
            assert row["patient_ids"] == [cat.loc[e, "patient_id"] for e in row["ecg_ids"]]
            sig = decode_signals(row["signals"], row["n_ecg"], row["n_samples"])
            for k, e in enumerate(row["ecg_ids"]):
                ref, _ = read_wfdb(cat.loc[e, "path"], 500, 5000)
                assert np.abs(sig[k] - ref).max() <= QUANT_MV
        n_qa += len(rows)
    assert n_qa == c["qa_ok"]

    again = build_shards(cfg)
    assert "reusing shards" in capsys.readouterr().out
    assert again.root == shards.root and again.manifest == m


def _mixed_root(tmp_path: Path, shared_data: Path) -> tuple[Path, Path]:
    """PTB-XL layout with ecg_id 1..12 where 7 is truncated, 8 has NaNs, 9 a header gain 1000x
    too large and 11 an unknown lead name."""
    root = tmp_path / "data"
    rec_dir = root / "ptbxl" / "records500" / "00000"
    lines = (shared_data / "ptbxl" / "ptbxl_database.csv").read_text().splitlines(keepends=True)
    rec_dir.mkdir(parents=True)
    (root / "ptbxl" / "ptbxl_database.csv").write_text("".join(lines[:13]))  # ecg_id 1..12
    shutil.copyfile(shared_data / "ptbxl" / "scp_statements.csv",
                    root / "ptbxl" / "scp_statements.csv")
    for ecg_id in range(1, 13):
        copy_record(RECORDS500 / f"{ecg_id:05d}_hr", rec_dir, f"{ecg_id:05d}_hr")
    truncate_dat(rec_dir / "00007_hr", 50_000)
    put_nan(rec_dir / "00008_hr", 2)
    hea = rec_dir / "00009_hr.hea"
    hea.write_text(hea.read_text().replace("1000.0(0)/mV", "1000000.0(0)/mV"))
    rename_lead(rec_dir / "00011_hr", "V4", "V7")
    (root / "ecgqa").symlink_to(shared_data / "ecgqa", target_is_directory=True)
    return root, rec_dir


@pytest.mark.slow
def test_mixed_input_quarantine_and_incremental_rerun(shared_data: Path, ray_session,
                                                      tmp_path: Path, capsys) -> None:
    root, rec_dir = _mixed_root(tmp_path, shared_data)
    cfg = _cfg(tmp_path / "shards", source="shared", shared_root=str(root))
    shards = build_shards(cfg)
    out = capsys.readouterr().out
    assert "records/s" in out and "MB/s" in out and "8 ok, 4 quarantined" in out
    m = shards.manifest
    c = m["counts"]
    assert (c["records_in"], c["records_ok"], c["records_quarantined"]) == (12, 8, 4)
    assert c["qa_in"] == c["qa_ok"] + c["qa_quarantined"] >= 1
    assert m["normalize"] == to_dict(cfg.data.normalize) and m["input_fingerprint"]
    for rel, digest in m["checksums"].items():  # every written file is checksummed
        assert hashlib.sha256((shards.root / rel).read_bytes()).hexdigest() == digest
    assert any(k.startswith("records/") for k in m["checksums"])
    q = {e["id"]: e["reason"] for e in _quarantine(Path(m["quarantine"]))}
    assert f"record {rec_dir / '00007_hr'}: file: " in q["ecg:7"]
    assert "truncated or corrupt" in q["ecg:7"]
    assert q["ecg:8"].endswith("signal: non-finite values (NaN/inf) in lead(s) III (100 samples) "
                               "(data.normalize.nonfinite: reject)")
    assert ": amplitude: implausible amplitude" in q["ecg:9"]
    assert ": leads: missing lead(s) V4" in q["ecg:11"] and "V7" in q["ecg:11"]
    assert q["qa:62198"] == "ECG(s) [7] quarantined"  # ecg_id [10, 7]
    rows = pq.read_table(shards.records).to_pylist()
    assert sorted(r["ecg_id"] for r in rows) == [1, 2, 3, 4, 5, 6, 10, 12]
    first = next(r for r in rows if r["ecg_id"] == 1)
    assert json.loads(first["labels"])["superclass"] == ["NORM"]
    assert first["lead_mask"] == [True] * 12 and first["flags"] == []
    qa_ids = [s for split in SPLITS
              for s in pq.read_table(shards.qa[split], columns=["sample_id"])["sample_id"]
              .to_pylist()]
    assert 62198 not in qa_ids and len(qa_ids) == c["qa_ok"]

    again = build_shards(cfg)  # unchanged input: the folder is reused as is
    assert "input unchanged" in capsys.readouterr().out and again.manifest == m
    copy_record(RECORDS500 / "00007_hr", rec_dir, "00007_hr")  # repair one record
    fixed = build_shards(cfg)
    out = capsys.readouterr().out
    assert "11 unchanged records taken from the previous build" in out
    assert "read 1 records" in out and "1 ok, 0 quarantined" in out
    c2 = fixed.manifest["counts"]
    assert (c2["records_in"], c2["records_ok"], c2["records_quarantined"]) == (12, 9, 3)
    assert (c2["records_read"], c2["records_reused"]) == (1, 11)
    assert fixed.root == shards.root and "ecg:7" not in {
        e["id"] for e in _quarantine(Path(fixed.manifest["quarantine"]))}
    got = {r["ecg_id"]: r for r in pq.read_table(fixed.records).to_pylist()}
    assert sorted(got) == [1, 2, 3, 4, 5, 6, 7, 10, 12]
    ref, _ = read_wfdb(RECORDS500 / "00007_hr", 500, 5000)
    assert np.abs(decode_signals(got[7]["signal"], 1, 5000)[0] - ref).max() <= QUANT_MV
    assert got[1]["signal"] == first["signal"]


@pytest.mark.slow
def test_synthetic_fallback_build(ray_session, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = _cfg(Path(".cache/shards"), source="auto", shared_root="missing",
               synthetic_records=24, qa_split="official", max_items=30)
    shards = build_shards(cfg)
    m = shards.manifest
    assert m["kind"] == "synthetic" and m["source"] == str(tmp_path / ".cache" / "synthetic")
    assert shards.root.parent == tmp_path / ".cache" / "shards"
    c = m["counts"]
    assert (c["records_in"], c["records_ok"], c["qa_in"]) == (24, 24, 30)
    assert c["qa_in"] == c["qa_ok"] + c["qa_quarantined"]
    # comparison items whose two ECGs fall in different splits are left out (no patient leak)
    q = _quarantine(Path(m["quarantine"]))
    assert len(q) == c["qa_quarantined"] and all("different splits" in e["reason"] for e in q)
    labels = (tmp_path / ".cache/synthetic/ptbxl/ptbxl_database.csv").read_text().splitlines()
    fold = {int(ln.split(",")[0]): ln for ln in labels[1:]}
    assert len(fold) == 24
    rows = [r for s in SPLITS for r in pq.read_table(shards.qa[s]).to_pylist()]
    assert len(rows) == c["qa_ok"]
    assert all(len(r["signals"]) == r["n_ecg"] * 12 * 5000 * 2 for r in rows)
    assert all(len({r["split"]}) == 1 for r in rows)
