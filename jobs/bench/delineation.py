"""Benchmark the grounding-feature delineator against LUDB's expert annotations, and time
the 12-lead image renderer.

Data: ``../shared/data/ludb/data`` records 1-100 (12 leads, 500 Hz, 10 s), each with expert
P/QRS/T onsets, peaks and offsets annotated separately per lead (``wfdb.rdann(rec, 'ii')``,
``'i'``, ``'v1'``, ...: ``(`` onset, ``p``/``N``/``t`` peak, ``)`` offset).

Per record: ``ecglm.features.grounding_features`` on ``read_wfdb(rec, 500, 5000)``. Per lead
and expert beat (a QRS with its preceding P and following T in that lead's annotation):
expert QRS duration, PR interval (P onset -> QRS onset) and QT interval (QRS onset -> T end),
plus P, T and ST durations; our beat is the one whose R peak is nearest the expert QRS peak
(within 100 ms). Reported: median absolute error (ms) per interval for lead II (the headline,
``median_abs_error_ms``), pooled over all leads, and per lead; median signed error (bias);
coverage (share of expert intervals we also measured); beat detection sensitivity/PPV
inside the annotated span; records/s. Thresholds of the delineator were chosen on LUDB
records 1-50, so ``held_out`` repeats the headline on records 51-100.

Render timing: ``render_12lead`` at 512x512 (and 224x224), mean ms over ``--renders`` images.

The last line is the JSON headline. ``--quick`` uses every fifth record (20 records).

Usage: ``python jobs/bench/delineation.py [--quick] [--records N] [--renders N]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
LUDB = (REPO.parent / "shared" / "data" / "ludb" / "data").resolve()
FS = 500
N_SAMPLES = 5000
MATCH_MS = 100.0
TUNED_ON = range(1, 51)
TARGETS_MS = {"qrs_duration": 15.0, "pr_interval": 20.0, "qt_interval": 30.0}
INTERVALS = ("qrs_duration", "pr_interval", "qt_interval", "p_duration", "t_duration",
             "st_duration")
ANN_EXT = ("i", "ii", "iii", "avr", "avl", "avf", "v1", "v2", "v3", "v4", "v5", "v6")


def expert_beats(record: Path, ext: str) -> tuple[list[dict[str, float]], tuple[int, int]]:
    """Expert beats of one lead: dicts of fiducial samples (NaN where not annotated), and the
    annotated span ``(first, last)`` in samples."""
    import wfdb

    ann = wfdb.rdann(str(record), ext)
    samples, symbols = np.asarray(ann.sample), list(ann.symbol)
    waves = []
    for k, sym in enumerate(symbols):
        if sym in ("p", "N", "t"):
            on = samples[k - 1] if k > 0 and symbols[k - 1] == "(" else np.nan
            off = samples[k + 1] if k + 1 < len(symbols) and symbols[k + 1] == ")" else np.nan
            waves.append((sym, float(on), float(samples[k]), float(off)))
    beats = []
    for j, (sym, on, peak, off) in enumerate(waves):
        if sym != "N":
            continue
        b = {"r": peak, "qrs_on": on, "qrs_off": off, "p_on": np.nan, "p_off": np.nan,
             "t_on": np.nan, "t_off": np.nan}
        if j > 0 and waves[j - 1][0] == "p":
            b["p_on"], b["p_off"] = waves[j - 1][1], waves[j - 1][3]
        if j + 1 < len(waves) and waves[j + 1][0] == "t":
            b["t_on"], b["t_off"] = waves[j + 1][1], waves[j + 1][3]
        beats.append(b)
    return beats, (int(samples.min()), int(samples.max()))


def expert_intervals(b: dict[str, float]) -> dict[str, float]:
    """Expert intervals of one beat in ms (NaN where a boundary is missing)."""
    ms = 1000.0 / FS
    return {"qrs_duration": (b["qrs_off"] - b["qrs_on"]) * ms,
            "pr_interval": (b["qrs_on"] - b["p_on"]) * ms,
            "qt_interval": (b["t_off"] - b["qrs_on"]) * ms,
            "p_duration": (b["p_off"] - b["p_on"]) * ms,
            "t_duration": (b["t_off"] - b["t_on"]) * ms,
            "st_duration": (b["t_on"] - b["qrs_off"]) * ms}


def evaluate_record(rec: int) -> dict[str, Any]:
    """Signed errors ``{interval: [12 lists]}``, coverage counts and beat matching."""
    from ecglm.data.records import read_wfdb
    from ecglm.features import grounding_features

    path = LUDB / str(rec)
    signal, fs = read_wfdb(path, FS, N_SAMPLES)
    t0 = time.perf_counter()
    feats = grounding_features(signal, fs)
    seconds = time.perf_counter() - t0
    r = feats.r_peaks.astype(np.float64)
    errors: dict[str, list[list[float]]] = {k: [[] for _ in ANN_EXT] for k in INTERVALS}
    expected: dict[str, list[int]] = {k: [0] * len(ANN_EXT) for k in INTERVALS}
    beats = {"tp": 0, "fn": 0, "fp": 0, "count_diff_ii": 0}
    for lead, ext in enumerate(ANN_EXT):
        ex, (lo, hi) = expert_beats(path, ext)
        matched: set[int] = set()
        for b in ex:
            j = int(np.argmin(np.abs(r - b["r"]))) if r.size else -1
            ok = j >= 0 and abs(r[j] - b["r"]) * 1000.0 / FS <= MATCH_MS
            if lead == 1:
                beats["tp" if ok else "fn"] += 1
            if not ok:
                continue
            matched.add(j)
            for name, value in expert_intervals(b).items():
                if not np.isfinite(value):
                    continue
                expected[name][lead] += 1
                mine = float(getattr(feats, name)[j, lead])
                if np.isfinite(mine):
                    errors[name][lead].append(mine - value)
        if lead == 1:
            inside = {int(i) for i in np.flatnonzero((r >= lo) & (r <= hi))}
            beats["fp"] += len(inside - matched)
            beats["count_diff_ii"] = len(inside) - len(ex)
    return {"record": rec, "errors": errors, "expected": expected, "beats": beats,
            "seconds": seconds}


def _median_abs(values: list[float]) -> float | None:
    return round(float(np.median(np.abs(values))), 1) if values else None


def aggregate(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Median |error| (ms) for lead II, pooled, per lead; bias; coverage; beat detection."""
    leads = [name for name in ("I", "II", "III", "aVR", "aVL", "aVF",
                               "V1", "V2", "V3", "V4", "V5", "V6")]
    out: dict[str, Any] = {"lead_ii": {}, "all_leads": {}, "bias_ms_lead_ii": {},
                           "coverage_lead_ii": {}, "coverage_all_leads": {}, "per_lead": {}}
    for name in INTERVALS:
        per = [[e for res in results for e in res["errors"][name][lead]]
               for lead in range(12)]
        exp = [sum(res["expected"][name][lead] for res in results) for lead in range(12)]
        pooled = [e for lead_errs in per for e in lead_errs]
        out["lead_ii"][name] = _median_abs(per[1])
        out["all_leads"][name] = _median_abs(pooled)
        out["bias_ms_lead_ii"][name] = round(float(np.median(per[1])), 1) if per[1] else None
        out["coverage_lead_ii"][name] = round(len(per[1]) / exp[1], 3) if exp[1] else None
        out["coverage_all_leads"][name] = round(len(pooled) / sum(exp), 3) if sum(exp) else None
        out["per_lead"][name] = {leads[i]: _median_abs(per[i]) for i in range(12)}
    tp = sum(res["beats"]["tp"] for res in results)
    fn = sum(res["beats"]["fn"] for res in results)
    fp = sum(res["beats"]["fp"] for res in results)
    diffs = [res["beats"]["count_diff_ii"] for res in results]
    out["beats"] = {"expert_beats_ii": tp + fn, "sensitivity": round(tp / max(1, tp + fn), 4),
                    "ppv": round(tp / max(1, tp + fp), 4),
                    "records_count_within_1": round(float(np.mean(np.abs(diffs) <= 1)), 3)}
    return out


def render_timing(n: int) -> dict[str, float]:
    """Mean ms per ``render_12lead`` image at 512x512 and 224x224 (after one warm-up)."""
    from ecglm.data.records import read_wfdb
    from ecglm.render import render_12lead

    signal, fs = read_wfdb(LUDB / "1", FS, N_SAMPLES)
    out = {}
    for size in (512, 224):
        render_12lead(signal, fs, size=size)
        t0 = time.perf_counter()
        for _ in range(n):
            render_12lead(signal, fs, size=size)
        out[f"{size}"] = round((time.perf_counter() - t0) / n * 1000.0, 2)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="every fifth record (20)")
    parser.add_argument("--records", type=int, default=100, help="LUDB records 1..N (max 100)")
    parser.add_argument("--renders", type=int, default=50, help="images timed per size")
    args = parser.parse_args(argv)
    if not (LUDB / "1.hea").is_file():
        print(json.dumps({"bench": "delineation", "error": f"LUDB not found at {LUDB}"}))
        return 2
    n = max(1, min(args.records, 100))
    records = list(range(1, n + 1, 5 if args.quick else 1))
    t0 = time.perf_counter()
    results = [evaluate_record(rec) for rec in records]
    wall = time.perf_counter() - t0
    overall = aggregate(results)
    held = [res for res in results if res["record"] not in TUNED_ON]
    held_out = aggregate(held)["lead_ii"] if held else None
    renders = render_timing(args.renders)
    for name in INTERVALS:
        print(f"{name:13s} lead II {overall['lead_ii'][name]!s:>6} ms   all leads "
              f"{overall['all_leads'][name]!s:>6} ms   coverage II "
              f"{overall['coverage_lead_ii'][name]}   per lead {overall['per_lead'][name]}")
    print(f"beats: {overall['beats']}; render ms/image: {renders}")
    headline_err = {k: overall["lead_ii"][k] for k in TARGETS_MS}
    meets = all(v is not None and v <= TARGETS_MS[k] for k, v in headline_err.items())
    feature_s = sum(res["seconds"] for res in results)
    print(json.dumps({
        "bench": "delineation", "quick": args.quick, "records": len(records),
        "cpus": os.cpu_count(),
        "median_abs_error_ms": headline_err, "targets_ms": TARGETS_MS, "meets_targets": meets,
        "reference": "LUDB lead II expert annotations (per-lead detail below)",
        "all_leads_median_abs_error_ms": {k: overall["all_leads"][k] for k in TARGETS_MS},
        "held_out_51_100_median_abs_error_ms": held_out,
        "secondary_median_abs_error_ms": {k: overall["lead_ii"][k] for k in INTERVALS
                                          if k not in TARGETS_MS},
        "bias_ms_lead_ii": overall["bias_ms_lead_ii"],
        "coverage_lead_ii": overall["coverage_lead_ii"],
        "coverage_all_leads": overall["coverage_all_leads"],
        "per_lead_median_abs_error_ms": overall["per_lead"],
        "beats": overall["beats"],
        "records_per_s": round(len(records) / feature_s, 1),
        "records_per_s_with_io": round(len(records) / wall, 1),
        "render_ms_per_image": renders["512"], "render_ms_per_image_224": renders["224"],
        "seconds": round(time.perf_counter() - t0, 1),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
