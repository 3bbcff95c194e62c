"""Benchmark: shard build throughput and driver memory at 2k, 8k and 20k records.

A synthetic PTB-XL-layout WFDB set (500 Hz, 10 s, 12 leads, fmt 16; ECG-QA files too) is
written once under ``.cache/bench/shard_scale/synthetic-<N>`` (N = the largest size; reused
afterwards: the marker file says it is complete). Each size then runs in its own fresh process:

1. build: the real :func:`ecglm.data.shards.build_shards` over the first ``n`` records
   (``data.max_ecg_id = n``, ``data.max_items`` QA items, 64 records per file, 4 logical
   CPUs), after an untimed warm-up build of 64 records (Ray workers started and imported).
   A thread samples the driver's RSS (``/proc/self/statm``) every 20 ms; Ray workers are
   other processes and are not counted. ``records_per_s`` = records / build seconds (the
   whole build: records, QA joins, manifest); ``read_stage_records_per_s`` is the records
   stage alone (from the manifest).
2. loop: a one-process loop over the same files (the product's read + normalise UDF, then
   ``pyarrow.parquet.write_table`` per 64 records), over the first ``--loop-records``
   records of the size (a rate; the loop is linear in records).

``speedup_vs_loop`` = build rate / loop rate for the same size. Goals (issue 14): driver peak
RSS grows < 10% from 2k to 20k, >= 1,000 records/s on 2 cores. The last line is the JSON
headline: ``records_per_s``, ``speedup_vs_loop``, ``driver_rss_mib`` (per size),
``driver_rss_growth`` (fraction, smallest -> largest size).

Usage: ``python jobs/bench/shard_scale.py [--quick] [--sizes 2000,8000,20000]
[--loop-records 1000] [--max-items 1000] [--cache DIR]`` (``--quick``: 2k and 8k).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
FULL_SIZES = (2000, 8000, 20000)
QUICK_SIZES = (2000, 8000)
GOAL_RSS_GROWTH = 0.10
GOAL_RECORDS_PER_S = 1000.0
WARMUP_RECORDS = 64
PAGE_MIB = os.sysconf("SC_PAGE_SIZE") / 1024**2


def rss_mib() -> float:
    """Resident memory of this process now, MiB (``/proc/self/statm``)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE_MIB


class RssSampler:
    """Samples this process's RSS every ``every_s`` seconds in a thread; ``peak`` in MiB."""

    def __init__(self, every_s: float = 0.02) -> None:
        self.every_s = every_s
        self.peak = rss_mib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mib())
            self._stop.wait(self.every_s)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mib())


def config(root: Path, shard_dir: Path, n: int, max_items: int) -> Any:
    """The experiment config of a build over the first ``n`` records of ``root``."""
    from ecglm.config import from_dict

    return from_dict({"seed": 0, "train": {"ray_num_cpus": 4},
                      "data": {"source": "shared", "shared_root": str(root), "max_ecg_id": n,
                               "max_items": max_items, "shard_dir": str(shard_dir),
                               "records_per_shard": 64}})


def ensure_dataset(cache: Path, n: int) -> Path:
    """The synthetic PTB-XL-layout set of ``n`` records under ``cache`` (written once)."""
    from ecglm.data.source import ensure_synthetic
    from ecglm.data.synthetic import marker_for, read_marker

    root = cache / f"synthetic-{n}"
    if read_marker(root) != marker_for(n, 0, 500, 10.0):
        print(f"[shard_scale] writing {n} synthetic WFDB records to {root} (once; ~15 ms "
              f"per record)", flush=True)
        t0 = time.perf_counter()
        ensure_synthetic(root, n, 0, 500, 10.0)
        print(f"[shard_scale] written in {time.perf_counter() - t0:.0f}s", flush=True)
    return root


def phase_build(p: dict[str, Any]) -> dict[str, Any]:
    """Warm-up build, then the measured build with the driver's RSS sampled."""
    from ecglm.data.shards import OBJECT_STORE_BYTES, build_shards
    from ecglm.utils.ray_env import init_ray

    root, work, n = Path(p["root"]), Path(p["work"]), int(p["n"])
    init_ray(4, OBJECT_STORE_BYTES)
    build_shards(config(root, work / "warm", WARMUP_RECORDS, min(p["max_items"], 64)))
    base = rss_mib()
    with RssSampler() as sampler:
        t0 = time.perf_counter()
        shards = build_shards(config(root, work / "shards", n, p["max_items"]))
        secs = time.perf_counter() - t0
    m = shards.manifest
    c = m["counts"]
    if c["records_in"] != c["records_ok"] + c["records_quarantined"] or c["records_in"] != n:
        raise RuntimeError(f"counts do not add up for n={n}: {c}")
    return {"n": n, "seconds": round(secs, 2), "records_per_s": round(n / secs, 1),
            "read_stage_records_per_s": m["throughput"]["records_per_s"],
            "records_ok": c["records_ok"], "records_quarantined": c["records_quarantined"],
            "qa_ok": c["qa_ok"], "driver_rss_before_mib": round(base, 1),
            "driver_rss_peak_mib": round(sampler.peak, 1),
            "driver_ru_maxrss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                          / 1024, 1)}


def phase_loop(p: dict[str, Any]) -> dict[str, Any]:
    """One process: the product's read + normalise UDF per 64 records, then one Parquet file
    per 64 records, over the first ``loop_records`` records."""
    import pyarrow.parquet as pq

    from ecglm.data.shard_inputs import shard_catalog
    from ecglm.data.shard_writer import write_table
    from ecglm.data.sharding import RECORD_SCHEMA, ok_rows, read_records_batch
    from ecglm.data.source import resolve_source

    root, work = Path(p["root"]), Path(p["work"]) / "loop"
    n = min(int(p["n"]), int(p["loop_records"]))
    cfg = config(root, work, n, 0)
    catalog = shard_catalog(cfg, resolve_source(cfg.data, cfg.seed)).head(n)
    cols = ["ecg_id", "patient_id", "split", "path", "report", "scp_codes", "labels",
            "source_fp", "source_bytes"]
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    n_ok = 0
    for start in range(0, len(catalog), 64):
        batch = catalog.iloc[start:start + 64][cols].reset_index(drop=True)
        ok = ok_rows(read_records_batch(batch, cfg.data.fs, cfg.data.n_samples,
                                        cfg.data.normalize), RECORD_SCHEMA)
        write_table(ok, work / f"{start:010d}.parquet", "none", None)
        n_ok += ok.num_rows
    secs = time.perf_counter() - t0
    assert sum(pq.ParquetFile(f).metadata.num_rows for f in work.glob("*.parquet")) == n_ok
    return {"n": n, "seconds": round(secs, 2), "records_per_s": round(n / secs, 1)}


PHASES = {"build": phase_build, "loop": phase_loop}


def child(phase: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Run ``phase`` in a fresh interpreter (its last stdout line is its JSON result);
    ``[ecglm.data]`` progress lines are passed through."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(payload, fh)
        arg = fh.name
    try:
        proc = subprocess.Popen([sys.executable, __file__, "--phase", phase, "--payload", arg],
                                stdout=subprocess.PIPE, text=True, cwd=REPO)
        last = ""
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("[ecglm.data]"):
                print(f"  {line.rstrip()}", flush=True)
            last = line if line.strip() else last
        if proc.wait() != 0:
            raise RuntimeError(f"phase {phase} failed (exit {proc.returncode})")
    finally:
        os.unlink(arg)
    return json.loads(last)


def headline(builds: list[dict[str, Any]], loops: list[dict[str, Any]],
             quick: bool) -> dict[str, Any]:
    """The JSON headline from per-size build and loop results (same order of sizes)."""
    key = [str(b["n"]) for b in builds]
    rss = {k: b["driver_rss_peak_mib"] for k, b in zip(key, builds)}
    rate = {k: b["records_per_s"] for k, b in zip(key, builds)}
    loop = {k: lp["records_per_s"] for k, lp in zip(key, loops)}
    growth = rss[key[-1]] / rss[key[0]] - 1.0
    return {
        "bench": "shard_scale", "quick": quick, "sizes": [b["n"] for b in builds],
        "records_per_s": rate,
        "read_stage_records_per_s": {k: b["read_stage_records_per_s"]
                                     for k, b in zip(key, builds)},
        "loop_records_per_s": loop,
        "speedup_vs_loop": {k: round(rate[k] / loop[k], 2) for k in key},
        "driver_rss_mib": rss,
        "driver_rss_before_build_mib": {k: b["driver_rss_before_mib"]
                                        for k, b in zip(key, builds)},
        "driver_rss_growth": round(growth, 4),
        "driver_rss_growth_sizes": [int(key[0]), int(key[-1])],
        "goal_driver_rss_growth": GOAL_RSS_GROWTH,
        "goal_records_per_s": GOAL_RECORDS_PER_S,
        "rss_goal_met": growth < GOAL_RSS_GROWTH,
        "rate_goal_met": min(rate.values()) >= GOAL_RECORDS_PER_S,
        "cpu_count": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="sizes 2000 and 8000")
    ap.add_argument("--sizes", default=None, help="comma-separated record counts")
    ap.add_argument("--loop-records", type=int, default=1000)
    ap.add_argument("--max-items", type=int, default=1000, help="data.max_items of each build")
    ap.add_argument("--cache", default=str(REPO / ".cache" / "bench" / "shard_scale"))
    ap.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    ap.add_argument("--payload", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.phase:
        print(json.dumps(PHASES[args.phase](json.loads(Path(args.payload).read_text()))))
        return 0
    sizes = ([int(s) for s in args.sizes.split(",")] if args.sizes
             else list(QUICK_SIZES if args.quick else FULL_SIZES))
    if len(sizes) < 2 or sizes != sorted(sizes):
        raise SystemExit(f"--sizes: expected at least two ascending counts, got {sizes}")
    cache = Path(args.cache).resolve()
    root = ensure_dataset(cache, max(sizes))
    builds, loops = [], []
    for n in sizes:
        work = Path(tempfile.mkdtemp(prefix=f"shard-scale-{n}-", dir=cache))
        try:
            payload = {"root": str(root), "work": str(work), "n": n,
                       "max_items": args.max_items, "loop_records": args.loop_records}
            b = child("build", payload)
            lp = child("loop", payload)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        builds.append(b)
        loops.append(lp)
        print(f"[shard_scale] n={n}: build {b['records_per_s']} records/s (records stage "
              f"{b['read_stage_records_per_s']}), loop {lp['records_per_s']} records/s, "
              f"driver peak RSS {b['driver_rss_peak_mib']} MiB "
              f"(before build {b['driver_rss_before_mib']} MiB)", flush=True)
    print(json.dumps(headline(builds, loops, args.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
