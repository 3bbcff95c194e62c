"""Per-block pieces of the streaming shard build, without Ray: the record block writer (one
Parquet file + one small result per block), the manifest merge of block results, the QA join
that reads only the needed row groups, and the batch-wise split rows of evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ecglm.config.schema import DataConfig
from ecglm.data.shard_writer import (lookup_signals, merge_block_results, sha256_file,
                                     write_qa_chunk, write_record_block)
from ecglm.data.sharding import RECORD_SCHEMA, decode_signals
from ecglm.data.shards import QA_SCHEMA
from ecglm.data.synthetic import write_wfdb_fmt16
from ecglm.evaluation.stream import ParquetRows

DATA = DataConfig(fs=100, seconds=2.0)


def _block(file: str, n_in: int, n_ok: int, bad: list[int], lo: int = 1, hi: int = 2) -> dict:
    return {"file": file, "n_in": n_in, "n_ok": n_ok, "n_flagged": 1 if n_ok else 0,
            "min_id": lo, "max_id": hi, "sha256": f"h-{file}",
            "quarantine": json.dumps([{"id": f"ecg:{e}", "reason": "bad", "fp": "x"}
                                      for e in bad])}


def test_merge_block_results_adds_up_and_sorts() -> None:
    merged = merge_block_results([_block("0000000011.parquet", 3, 2, [13], 11, 12),
                                  _block("", 2, 0, [9, 4]),
                                  _block("0000000001.parquet", 4, 4, [], 1, 5)])
    assert (merged.n_in, merged.n_ok, merged.n_flagged) == (9, 6, 2)
    assert merged.n_in == merged.n_ok + len(merged.quarantine)
    assert [q["id"] for q in merged.quarantine] == ["ecg:4", "ecg:9", "ecg:13"]
    assert merged.files == [("0000000001.parquet", 1, 5), ("0000000011.parquet", 11, 12)]
    assert merged.checksums == {"0000000001.parquet": "h-0000000001.parquet",
                                "0000000011.parquet": "h-0000000011.parquet"}
    assert merge_block_results([]).n_in == 0


def test_merge_block_results_rejects_inconsistent_blocks() -> None:
    with pytest.raises(ValueError, match=r"0000000001.parquet: n_in 5 != n_ok 4 \+ 0"):
        merge_block_results([_block("0000000001.parquet", 5, 4, [])])
    with pytest.raises(ValueError, match="written by two blocks"):
        merge_block_results([_block("a.parquet", 1, 1, []), _block("a.parquet", 1, 1, [])])
    with pytest.raises(ValueError, match=r"missing field\(s\) \['sha256'"):
        merge_block_results([{k: v for k, v in _block("a", 1, 1, []).items() if k != "sha256"}])


def _catalog(tmp_path: Path, ids: list[int], broken: set[int]) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for e in ids:
        base = tmp_path / "src" / f"{e:05d}_hr"
        write_wfdb_fmt16(base, rng.normal(0, 0.3, (12, 250)), 125)
        if e in broken:
            base.with_suffix(".dat").write_bytes(b"\x00" * 10)  # truncated signal file
        rows.append({"ecg_id": e, "patient_id": 100 + e, "split": "train", "path": str(base),
                     "report": f"report {e}", "scp_codes": "{}", "labels": "{}",
                     "source_fp": f"fp{e}", "source_bytes": 1})
    return pd.DataFrame(rows)


def test_record_block_writes_its_file_and_reports_quarantine(tmp_path: Path) -> None:
    out = tmp_path / "records"
    out.mkdir()
    batch = _catalog(tmp_path, [3, 4, 5], broken={4})
    res = write_record_block(batch, str(out), DATA.fs, DATA.n_samples, DATA.normalize,
                             RECORD_SCHEMA, "none")
    assert len(res) == 1
    r = res.iloc[0].to_dict()
    assert (r["file"], r["n_in"], r["n_ok"], r["min_id"], r["max_id"]) == \
        ("0000000003.parquet", 3, 2, 3, 5)
    q = json.loads(r["quarantine"])
    assert [e["id"] for e in q] == ["ecg:4"] and e_fp(q) == ["fp4"]
    assert "00004_hr" in q[0]["reason"]
    path = out / r["file"]
    assert sha256_file(path) == r["sha256"]
    pf = pq.ParquetFile(path)
    assert pf.schema_arrow.names == RECORD_SCHEMA.names
    assert pf.num_row_groups == 2  # one ECG per row group: the QA join reads single ECGs
    assert merge_block_results([r]).n_in == 3

    qa = [{"sample_id": 7, "template_id": 1, "question_type": "single-verify",
           "attribute_type": "a", "question": "q?", "answer": ["yes"], "options": ["yes", "no"],
           "ecg_ids": [5, 3], "patient_ids": [105, 103], "n_ecg": 2,
           "n_samples": DATA.n_samples, "split": "train"}]
    files = [(r["file"], r["min_id"], r["max_id"])]
    got = lookup_signals(out, files, [5, 3])
    table = pq.read_table(path)
    want = dict(zip(table.column("ecg_id").to_pylist(), table.column("signal").to_pylist()))
    assert got == {3: want[3], 5: want[5]}
    with pytest.raises(KeyError, match=r"ecg_id\(s\) \[4\]"):
        lookup_signals(out, files, [4])
    done = write_qa_chunk(qa, tmp_path / "000000.parquet", out, files, QA_SCHEMA, "none")
    row = pq.read_table(tmp_path / "000000.parquet").to_pylist()[0]
    assert done["n"] == 1 and row["signals"] == want[5] + want[3]
    assert decode_signals(row["signals"], 2, DATA.n_samples).shape == (2, 12, DATA.n_samples)


def e_fp(entries: list[dict]) -> list[str]:
    return [e["fp"] for e in entries]


def test_parquet_rows_streams_in_sample_id_order(tmp_path: Path) -> None:
    schema = pa.schema([("sample_id", pa.int64()), ("signals", pa.binary())])
    folder = tmp_path / "split"
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist([{"sample_id": 5, "signals": b"e"},
                                         {"sample_id": 1, "signals": b"a"}], schema=schema),
                   folder / "a.parquet")
    pq.write_table(pa.Table.from_pylist([{"sample_id": 3, "signals": b"c"}], schema=schema),
                   folder / "b.parquet")
    pq.write_table(schema.empty_table(), folder / "c.parquet")
    calls: list[int] = []

    def to_rows(records: list[dict]) -> list[tuple]:
        calls.append(len(records))
        return [(r["sample_id"], r["signals"]) for r in records]

    rows = ParquetRows(folder, to_rows, batch_rows=2)
    assert len(rows) == 3 and bool(rows)
    assert list(rows) == [(1, b"a"), (3, b"c"), (5, b"e")]
    assert max(calls) <= 2  # never more than one batch converted at a time
    assert rows[0] == (1, b"a") and rows[-1] == (5, b"e") and rows[1:] == [(3, b"c"), (5, b"e")]
    with pytest.raises(IndexError):
        rows[3]
    bare = ParquetRows(folder, lambda rs: [(r["sample_id"], r.get("signals")) for r in rs],
                       columns=["sample_id"])
    assert list(bare) == [(1, None), (3, None), (5, None)]
    # already sorted files are read file by file, in batches
    sorted_dir = tmp_path / "sorted"
    sorted_dir.mkdir()
    for k in range(3):
        pq.write_table(pa.Table.from_pylist([{"sample_id": 2 * k + j, "signals": b"x"}
                                             for j in range(2)], schema=schema),
                       sorted_dir / f"{k:06d}.parquet")
    assert [r[0] for r in ParquetRows(sorted_dir, to_rows, batch_rows=1)] == list(range(6))


def test_record_set_signals_read_in_slices(tmp_path: Path) -> None:
    from ecglm.data.sharding import encode_signals
    from ecglm.evaluation.classify import embed_signals, read_records

    rng = np.random.default_rng(1)
    x = rng.normal(0, 0.5, (5, 12, 64)).astype(np.float32)
    rows = [{"ecg_id": e, "patient_id": e, "split": "train" if e != 2 else "test", "fs": 2,
             "n_samples": 64, "signal": encode_signals(x[e][None]), "report": f"r{e}",
             "scp_codes": "{}", "labels": "{}", "lead_mask": [True] * 12, "flags": [],
             "source_fp": ""} for e in range(5)]
    folder = tmp_path / "records"
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist(rows[:3], schema=RECORD_SCHEMA), folder / "a.parquet")
    pq.write_table(pa.Table.from_pylist(rows[3:], schema=RECORD_SCHEMA), folder / "b.parquet")
    train = read_records(folder, "train")
    assert train.ecg_ids == [0, 1, 3, 4] and train.reports == ["r0", "r1", "r3", "r4"]
    assert len(train.signals) == 4 and train.signals.shape == (4, 12, 64)
    got = train.signals[1:4]  # spans both files
    assert np.abs(got - x[[1, 3, 4]]).max() <= 0.0005 + 1e-6

    import torch

    from ecglm.models.encoders import build_encoder
    from tests.helpers import tiny_config

    torch.manual_seed(0)
    encoder = build_encoder(tiny_config(tmp_path).encoder).eval()
    lazy = embed_signals(encoder, train.signals, batch=3)  # slices of the lazy signals
    eager = embed_signals(encoder, train.signals[0:4], batch=4)
    assert lazy.shape == eager.shape and np.allclose(lazy, eager, atol=1e-5)
    assert read_records(folder, "valid").ecg_ids == []
    assert len(embed_signals(None, read_records(folder, "valid").signals)) == 0
