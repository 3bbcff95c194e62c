"""One preprocessing path: an ECG sent to serving at another sampling rate, with the
``data.normalize`` filters and ``crop: center`` on, equals the signal the shard holds for the
same record (shards store int16 microvolts: equal after that quantisation, within 0.5 uV
before it)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from ecglm.config import from_dict
from ecglm.config.schema import DataConfig, NormalizeConfig, ServeConfig
from ecglm.data.canonical import LEADS
from ecglm.data.preprocess import preprocess
from ecglm.data.readers import read_raw
from ecglm.data.sharding import decode_signals, encode_signals, read_records_batch
from ecglm.data.shards import build_shards
from ecglm.data.synthetic import write_synthetic_dataset, write_wfdb_fmt16
from ecglm.serving.validation import parse_request, to_model_signal

SOURCE_FS = 500
POLICY = {"baseline_filter": True, "bandpass": [0.5, 40.0], "powerline_hz": 50, "crop": "center",
          "pad": "edge"}
DATA = DataConfig(fs=100, seconds=10.0, normalize=NormalizeConfig(**POLICY))
SERVE = ServeConfig(max_body_bytes=10_000_000, max_seconds=60.0)
QUANTUM_MV = 0.5e-3
"""Largest difference int16-microvolt storage makes (half a microvolt)."""


def _record_mv(seconds: float = 12.5) -> np.ndarray:
    """(12, T) mV at 500 Hz, quantised to 1 uV like the WFDB file: 1.1 Hz beats, a baseline
    drift (0.2 Hz), 50 Hz mains and a late-only feature so that ``crop: center`` matters."""
    t = np.arange(int(seconds * SOURCE_FS)) / SOURCE_FS
    rows = [np.sin(2 * np.pi * 1.1 * t + k) ** 7 + 0.4 * np.sin(2 * np.pi * 0.2 * t)
            + 0.05 * np.sin(2 * np.pi * 50 * t) + 0.3 * (t > 11.0) * np.sin(2 * np.pi * 3 * t)
            for k in range(12)]
    return np.rint(np.stack(rows) * 1000.0) / 1000.0


def _request(x: np.ndarray) -> bytes:
    return json.dumps({"ecg": x.tolist(), "fs": SOURCE_FS, "question": "Is the rhythm regular?"}
                      ).encode()


def test_served_signal_equals_the_shard_record(tmp_path: Path) -> None:
    x = _record_mv()
    base = tmp_path / "rec" / "00001_hr"
    write_wfdb_fmt16(base, x, SOURCE_FS)
    batch = pd.DataFrame({"ecg_id": [1], "path": [str(base)], "source_bytes": [0]})
    row = read_records_batch(batch, DATA.fs, DATA.n_samples, DATA.normalize)  # the shard UDF
    assert row["error"][0] == "", row["error"][0]
    shard = decode_signals(row["signal"][0], 1, DATA.n_samples)[0]

    served = parse_request(_request(x), None, SERVE, DATA).signal
    assert served.shape == (12, DATA.n_samples) and served.dtype == np.float32
    assert encode_signals(served[None]) == row["signal"][0], "bit-equal after int16 storage"
    assert np.abs(served - shard).max() <= QUANTUM_MV + 1e-6
    # the policies really acted: the plain path (no filters, start crop) differs a lot
    plain = preprocess(x, SOURCE_FS, NormalizeConfig(), DATA.fs, DATA.n_samples)
    assert np.abs(plain - served).max() > 0.2


def test_center_crop_and_filters_change_what_serving_sees() -> None:
    x = _record_mv()
    start = preprocess(x, SOURCE_FS, NormalizeConfig(**{**POLICY, "crop": "start"}),
                       DATA.fs, DATA.n_samples)
    center = to_model_signal(x, SOURCE_FS, DATA)
    # 12.5 s at 100 Hz = 1250 samples, centre crop keeps 125..1125: shifted by 125 samples
    np.testing.assert_allclose(center[:, :800], start[:, 125:925], atol=1e-3)
    # baseline filter: the 0.2 Hz drift (0.4 mV) is gone; notch + band-pass: no 50 Hz left
    unfiltered = to_model_signal(x, SOURCE_FS, DataConfig(fs=100, seconds=10.0))
    assert abs(float(np.median(center[0]))) < 0.1 < float(np.ptp(unfiltered[0] - center[0]))


def test_missing_lead_rows_come_out_as_zeros() -> None:
    x = _record_mv()
    mask = np.ones(len(LEADS), dtype=bool)
    mask[[2, 9]] = False
    y = preprocess(np.where(mask[:, None], x, 123.0), SOURCE_FS, DATA.normalize, DATA.fs,
                   DATA.n_samples, mask)
    assert not y[[2, 9]].any()
    np.testing.assert_array_equal(y[mask], to_model_signal(x, SOURCE_FS, DATA)[mask])


@pytest.mark.slow
def test_served_signal_equals_shards_built_with_ray(ray_session, tmp_path: Path) -> None:
    """The same through :func:`build_shards` (Ray Data) on a 500 Hz, 12 s synthetic PTB-XL."""
    root = write_synthetic_dataset(tmp_path / "data", 6, seed=0, fs=SOURCE_FS, seconds=12.0)
    cfg = from_dict({"seed": 0, "train": {"ray_num_cpus": 4},
                     "data": {"source": "shared", "shared_root": str(root), "fs": 100,
                              "shard_dir": str(tmp_path / "shards"), "normalize": POLICY}})
    shards = build_shards(cfg)
    table = pq.read_table(shards.records, columns=["ecg_id", "signal", "n_samples"]).to_pylist()
    assert len(table) == 6
    for rec in table:
        raw = root / "ptbxl" / f"records{SOURCE_FS}" / "00000" / f"{rec['ecg_id']:05d}_hr"
        x = read_raw(raw).signal
        served = parse_request(_request(x), None, SERVE, cfg.data).signal
        assert encode_signals(served[None]) == rec["signal"]
        held = decode_signals(rec["signal"], 1, rec["n_samples"])[0]
        assert np.abs(served - held).max() <= QUANTUM_MV + 1e-6
