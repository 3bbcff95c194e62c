"""Driver memory of a shard build stays flat: building N and 4N records in this process, the
driver's peak RSS grows far less than the signal bytes the extra records hold (Ray Data
workers read and write the signals; only small per-block results reach the driver)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ecglm.config import from_dict
from ecglm.data.shards import build_shards
from ecglm.data.synthetic import write_synthetic_dataset
from tests.helpers import truncate_dat

N = 64
SIGNAL_BYTES = 12 * 5000 * 2  # one 10 s, 500 Hz, 12-lead record as int16
PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE


def _build_peak(root: Path, shard_dir: Path, n: int) -> tuple[int, dict]:
    """(peak RSS growth of this process during the build in bytes, manifest)."""
    cfg = from_dict({"seed": 0, "train": {"ray_num_cpus": 4},
                     "data": {"source": "shared", "shared_root": str(root), "max_ecg_id": n,
                              "max_items": 40, "shard_dir": str(shard_dir),
                              "records_per_shard": 16}})
    before = peak = _rss()
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _rss())
            stop.wait(0.01)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        manifest = build_shards(cfg).manifest
    finally:
        stop.set()
        thread.join()
    return max(peak, _rss()) - before, manifest


@pytest.mark.slow
def test_driver_rss_flat_from_n_to_4n(ray_session, tmp_path: Path) -> None:
    root = write_synthetic_dataset(tmp_path / "syn", 4 * N, seed=0)
    truncate_dat(root / "ptbxl" / "records500" / "00000" / "00007_hr", 1000)  # quarantined
    _build_peak(root, tmp_path / "warm", 16)  # Ray Data operators and imports warmed up
    growth_n, m_n = _build_peak(root, tmp_path / "small", N)
    growth_4n, m_4n = _build_peak(root, tmp_path / "large", 4 * N)
    for m, n in ((m_n, N), (m_4n, 4 * N)):
        c = m["counts"]
        assert c["records_in"] == n == c["records_ok"] + c["records_quarantined"]
        assert c["records_quarantined"] == 1 and c["qa_in"] == c["qa_ok"] + c["qa_quarantined"]
        q = [json.loads(line) for line in Path(m["quarantine"]).read_text().splitlines()]
        assert [e["id"] for e in q if e["id"].startswith("ecg:")] == ["ecg:7"]
        records = Path(m["quarantine"]).parent / "records"
        assert pq.read_table(records, columns=["ecg_id"]).num_rows == c["records_ok"]
    # The 3N extra records hold 3N * 120 kB = 23 MB of signals; a driver that gathered them
    # (as builds did before: Arrow table, pandas frame, Python lists) grew by more than that.
    extra = 3 * N * SIGNAL_BYTES
    print(f"driver peak RSS growth during the build: N={N}: {growth_n / 2**20:.1f} MiB, "
          f"4N: {growth_4n / 2**20:.1f} MiB (extra signal bytes {extra / 2**20:.1f} MiB)")
    assert growth_4n - growth_n < extra / 3
