"""Benchmark ingestion: sharding throughput, and one training epoch read from the shards
against the per-item ``wfdb.rdsamp`` torch Dataset that published ECG code uses.

Records: the real PTB-XL records in ../shared/data (``ecg_id <= --records``; the synthetic set
when absent). Each phase runs in its own process:

1. shard: ``build_shards`` (Ray Data: read, normalise, int16 Parquet), timed without Ray start:
   ``cold`` (first build, Ray workers start and import) and ``warm`` (a second folder with the
   workers up: the steady-state rate); ``read_stage_*`` is the Ray Data read/normalise stage
   alone (the rest of a build, QA items and writes, is a fixed ~seconds cost);
2. compare: one epoch of each reader, alternating, ``--rounds`` times (both see the same machine
   load), after one untimed warm-up epoch each (page cache warm for both):

   * wfdb: ``DataLoader(WfdbDataset, batch_size=32, shuffle=True, num_workers=0)`` with
     ``wfdb.rdsamp`` per item -> float32 ``(12, T)`` mV tensors in the canonical lead order;
   * shards: :func:`ecglm.data.loader.iter_record_batches` -> the same float32 ``(B, 12, T)``
     tensors, seeded per-epoch shuffle;

   speedup = median over rounds of ``t_wfdb / t_shards``;
3. memory: one epoch of each reader alone in a fresh process (peak RSS per reader).

Every phase runs with ``OMP_NUM_THREADS=1`` (the setting of ecglm's Ray workers), the same for
both readers.

``MB/s`` counts the bytes of the files each reader consumes. The last line is the JSON
headline with ``speedup_vs_wfdb_dataset`` (target >= 20), ``max_abs_diff_mv`` (shards vs wfdb
for one record: int16 microvolt quantisation) and peak RSS per phase.

Usage: ``python jobs/bench/ingest.py [--quick] [--records N] [--rounds R] [--keep DIR]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[2]
SHARED = (REPO.parent / "shared" / "data").resolve()
TARGET_SPEEDUP = 20.0
BATCH = 32


def _peak_rss_mb() -> float:
    """Peak resident memory of this process, MiB (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


def _config(shard_dir: Path, n_records: int) -> Any:
    from ecglm.config import from_dict

    source = "shared" if (SHARED / "ptbxl" / "ptbxl_database.csv").is_file() else "synthetic"
    data: dict[str, Any] = {"source": source, "shared_root": str(SHARED),
                            "max_ecg_id": n_records, "shard_dir": str(shard_dir),
                            "synthetic_root": str(shard_dir.parent / "synthetic"),
                            "synthetic_records": max(n_records, 10), "records_per_shard": 64}
    return from_dict({"seed": 0, "data": data, "train": {"ray_num_cpus": 4}})


def phase_shard(work: Path, n_records: int) -> dict[str, Any]:
    """Build the shards from scratch twice (cold, warm); returns rates and record paths."""
    from ecglm.data.ptbxl import load_ptbxl_catalog
    from ecglm.data.shards import build_shards
    from ecglm.utils.ray_env import init_ray

    cfg = _config(work / "shards", n_records)
    t0 = time.perf_counter()
    init_ray(cfg.train.ray_num_cpus, 1 << 30)
    ray_s = time.perf_counter() - t0
    secs, stages = [], []
    for folder in ("shards", "shards-warm"):
        t1 = time.perf_counter()
        shards = build_shards(_config(work / folder, n_records))
        secs.append(time.perf_counter() - t1)
        stages.append(shards.manifest["throughput"])
        if folder == "shards":
            first = shards
    c = first.manifest["counts"]
    catalog = load_ptbxl_catalog(Path(first.manifest["source"]), cfg.data.max_ecg_id,
                                 cfg.data.ptbxl_rate)
    src_bytes = sum(os.path.getsize(p + ext) for p in catalog["path"] for ext in (".hea", ".dat"))
    shard_bytes = sum(f.stat().st_size for f in first.records.glob("*.parquet"))

    def rate(s: float) -> dict[str, float]:
        return {"seconds": round(s, 3), "records_per_s": round(c["records_in"] / s, 1),
                "mb_per_s": round(src_bytes / s / 1e6, 2)}

    return {"records": c["records_in"], "ok": c["records_ok"],
            "quarantined": c["records_quarantined"], "cold": rate(secs[0]),
            "warm": rate(secs[1]), "read_stage_cold": stages[0], "read_stage_warm": stages[1],
            "ray_start_seconds": round(ray_s, 2),
            "source_mb": round(src_bytes / 1e6, 2), "shard_mb": round(shard_bytes / 1e6, 2),
            "peak_rss_mb": _peak_rss_mb(), "records_dir": str(first.records),
            "paths": catalog["path"].tolist(), "ecg_ids": catalog["ecg_id"].tolist()}


def wfdb_epoch(paths: list[str]) -> Callable[[int], int]:
    """One epoch of the per-item ``wfdb.rdsamp`` Dataset (the published-code baseline)."""
    import numpy as np
    import torch
    import wfdb
    from torch.utils.data import DataLoader, Dataset

    from ecglm.data.canonical import LEADS

    class WfdbDataset(Dataset):
        """``wfdb.rdsamp`` per item -> float32 ``(12, T)`` mV, canonical lead order."""

        def __len__(self) -> int:
            return len(paths)

        def __getitem__(self, i: int) -> torch.Tensor:
            x, meta = wfdb.rdsamp(paths[i])
            names = [n.lower() for n in meta["sig_name"]]
            order = [names.index(lead.lower()) for lead in LEADS]
            return torch.from_numpy(np.ascontiguousarray(x[:, order].T, dtype=np.float32))

    def run(epoch: int) -> int:
        loader = DataLoader(WfdbDataset(), batch_size=BATCH, shuffle=True,
                            generator=torch.Generator().manual_seed(epoch), num_workers=0)
        return sum(len(b) for b in loader)

    return run


def shards_epoch(records_dir: str) -> Callable[[int], int]:
    """One epoch of :func:`ecglm.data.loader.iter_record_batches` over the shards."""
    from ecglm.data.loader import iter_record_batches

    def run(epoch: int) -> int:
        return sum(len(b["signal"]) for b in iter_record_batches(Path(records_dir), BATCH,
                                                                 seed=0, epoch=epoch))

    return run


def phase_compare(p: dict[str, Any]) -> dict[str, Any]:
    """Alternate timed epochs of both readers; also check they return the same ECG."""
    import numpy as np
    import wfdb

    from ecglm.data.canonical import LEADS
    from ecglm.data.loader import iter_record_batches

    base, ours = wfdb_epoch(p["paths"]), shards_epoch(p["records_dir"])
    n_base, n_ours = base(0), ours(0)  # warm-up
    t_base, t_ours = [], []
    for r in range(1, p["rounds"] + 1):
        t0 = time.perf_counter()
        base(r)
        t_base.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ours(r)
        t_ours.append(time.perf_counter() - t0)
    x, meta = wfdb.rdsamp(p["paths"][0])
    names = [n.lower() for n in meta["sig_name"]]
    ref = x[:, [names.index(lead.lower()) for lead in LEADS]].T
    got = next(b["signal"][i].numpy() for b in iter_record_batches(Path(p["records_dir"]), 256,
                                                                   shuffle=False)
               for i in range(len(b["ecg_id"])) if int(b["ecg_id"][i]) == p["ecg_ids"][0])
    return {"t_wfdb": t_base, "t_shards": t_ours, "n_wfdb": n_base, "n_shards": n_ours,
            "max_abs_diff_mv": float(np.abs(got - ref).max())}


def phase_memory(p: dict[str, Any]) -> dict[str, Any]:
    """Peak RSS of one reader alone (warm-up epoch + one epoch)."""
    run = wfdb_epoch(p["paths"]) if p["reader"] == "wfdb" else shards_epoch(p["records_dir"])
    run(0)
    run(1)
    return {"peak_rss_mb": _peak_rss_mb()}


def _child(phase: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Run ``phase`` in a fresh interpreter; returns its JSON result."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(payload, fh)
        arg = fh.name
    try:
        # One intra-op thread, as in ecglm's Ray workers (utils.ray_env.WORKER_ENV): otherwise
        # torch's OpenMP threads keep spinning after the wfdb DataLoader's collate and steal a
        # core from whichever reader runs next in the alternating comparison.
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        out = subprocess.run([sys.executable, __file__, "--phase", phase, "--payload", arg],
                             check=True, capture_output=True, text=True, cwd=REPO, env=env)
    except subprocess.CalledProcessError as exc:
        sys.stderr.write(exc.stdout[-4000:] + exc.stderr[-4000:])
        raise
    finally:
        os.unlink(arg)
    for line in out.stdout.splitlines():
        if line.startswith("[ecglm.data]"):
            print(line, flush=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _reader_stats(times: list[float], n: int, n_bytes: int, rss: float) -> dict[str, Any]:
    med = statistics.median(times)
    return {"epochs_timed": len(times), "records": n, "seconds_median": round(med, 4),
            "records_per_s": round(n / med, 1), "mb_per_s": round(n_bytes / med / 1e6, 2),
            "peak_rss_mb": rss}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 rounds (< 2 min)")
    ap.add_argument("--records", type=int, default=300, help="PTB-XL ecg_id <= N (default 300)")
    ap.add_argument("--rounds", type=int, default=None, help="alternating epochs (default 8)")
    ap.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: temp)")
    ap.add_argument("--phase", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--payload", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))

    if args.phase:  # child process
        p = json.loads(Path(args.payload).read_text())
        phases = {"shard": lambda: phase_shard(Path(p["work"]), p["records"]),
                  "compare": lambda: phase_compare(p), "memory": lambda: phase_memory(p)}
        print(json.dumps(phases[args.phase]()))
        return 0

    work = args.keep or Path(tempfile.mkdtemp(prefix="ecglm-bench-ingest-"))
    for sub in ("shards", "shards-warm"):
        shutil.rmtree(work / sub, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    rounds = args.rounds or (3 if args.quick else 8)
    t0 = time.perf_counter()
    try:
        shard = _child("shard", {"work": str(work), "records": args.records})
        common = {"paths": shard["paths"], "records_dir": shard["records_dir"],
                  "ecg_ids": shard["ecg_ids"]}
        cmp = _child("compare", {**common, "rounds": rounds})
        rss = {r: _child("memory", {**common, "reader": r})["peak_rss_mb"]
               for r in ("wfdb", "shards")}
        src_bytes = sum(os.path.getsize(p + ext) for p in shard["paths"]
                        for ext in (".hea", ".dat"))
        shard_bytes = sum(f.stat().st_size for f in Path(shard["records_dir"]).glob("*.parquet"))
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    ratios = [b / o for b, o in zip(cmp["t_wfdb"], cmp["t_shards"])]
    speedup = statistics.median(ratios)
    for key in ("paths", "ecg_ids", "records_dir"):
        shard.pop(key)
    headline = {
        "bench": "ingest", "quick": args.quick, "records": shard["records"],
        "cpus": os.cpu_count(), "batch_size": BATCH, "rounds": rounds, "shard": shard,
        "epoch_wfdb_dataset": _reader_stats(cmp["t_wfdb"], cmp["n_wfdb"], src_bytes,
                                            rss["wfdb"]),
        "epoch_shards": _reader_stats(cmp["t_shards"], cmp["n_shards"], shard_bytes,
                                      rss["shards"]),
        "speedup_vs_wfdb_dataset": round(speedup, 1),
        "speedup_min_max": [round(min(ratios), 1), round(max(ratios), 1)],
        "target": TARGET_SPEEDUP, "meets_target": speedup >= TARGET_SPEEDUP,
        "max_abs_diff_mv": round(cmp["max_abs_diff_mv"], 6),
        "peak_rss_mb": max(shard["peak_rss_mb"], rss["wfdb"], rss["shards"]),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(headline))
    return 0


if __name__ == "__main__":
    sys.exit(main())
