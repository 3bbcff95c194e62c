"""Epoch reader of record shards: exact decoding and seeded per-epoch shuffling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ecglm.data import decode_signals, encode_signals, iter_record_batches
from ecglm.data.loader import decode_signal_column
from ecglm.data.sharding import RECORD_SCHEMA


def _write_shards(folder: Path, n: int, n_samples: int = 50, per_file: int = 7) -> np.ndarray:
    """``n`` random ECGs in RECORD_SCHEMA files of ``per_file`` rows; returns (n, 12, T) mV."""
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, size=(n, 12, n_samples)).round(3).astype(np.float32)
    folder.mkdir(parents=True)
    rows = [{"ecg_id": i, "patient_id": 1000 + i, "split": "train", "fs": 500,
             "n_samples": n_samples, "signal": encode_signals(x[i:i + 1]), "report": "",
             "scp_codes": "{}", "labels": "{}", "lead_mask": [True] * 12, "flags": [],
             "source_fp": ""} for i in range(n)]
    for k in range(0, n, per_file):
        pq.write_table(pa.Table.from_pylist(rows[k:k + per_file], schema=RECORD_SCHEMA),
                       folder / f"{k:04d}.parquet", compression="none")
    return x


def test_epochs_decode_exactly_and_shuffle_per_epoch(tmp_path: Path) -> None:
    x = _write_shards(tmp_path / "records", 30)
    epochs = []
    for epoch in (0, 1, 0):
        ids, seen = [], {}
        for b in iter_record_batches(tmp_path / "records", 4, seed=5, epoch=epoch):
            assert b["signal"].dtype.is_floating_point and b["signal"].shape[1:] == (12, 50)
            assert len(b["ecg_id"]) <= 4
            for i, sig in zip(b["ecg_id"].tolist(), b["signal"].numpy()):
                seen[i] = sig
            ids += b["ecg_id"].tolist()
            assert (b["patient_id"] - b["ecg_id"]).eq(1000).all()
        assert sorted(ids) == list(range(30))  # every ECG exactly once per epoch
        for i, sig in seen.items():
            np.testing.assert_allclose(sig, x[i], atol=1e-6)
        epochs.append(ids)
    assert epochs[0] == epochs[2] and epochs[0] != epochs[1]  # seeded, new order per epoch
    plain = [i for b in iter_record_batches(tmp_path / "records", 4, shuffle=False)
             for i in b["ecg_id"].tolist()]
    assert plain == list(range(30))


def test_decode_column_matches_decode_signals(tmp_path: Path) -> None:
    x = _write_shards(tmp_path / "records", 9, per_file=9)
    table = pq.read_table(tmp_path / "records")
    view = decode_signal_column(table.column("signal"), 50)
    for i, b in enumerate(table.column("signal").to_pylist()):
        np.testing.assert_array_equal(view[i] / np.float32(1000), decode_signals(b, 1, 50)[0])
    np.testing.assert_allclose(view / 1000.0, x, atol=1e-6)
    with pytest.raises(ValueError, match="expected 1440 bytes per row .* got sizes \\[1200\\]"):
        decode_signal_column(table.column("signal"), 60)
    with pytest.raises(FileNotFoundError, match="no \\*.parquet"):
        next(iter_record_batches(tmp_path / "none", 4))
