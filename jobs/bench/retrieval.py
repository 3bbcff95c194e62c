"""Benchmark the report retriever at scale: flat (exact) against ivf and hnsw
(:class:`ecglm.retrieval.index.ReportIndex`) on 200k and 1M synthetic embeddings.

Embeddings: ``--dim`` wide, by default the width of the retrieval encoder of ``--config``
(``jobs/configs/qheart_ecgqa.yaml``: C-MELT ``d_model`` 768; ``quickstart.yaml`` is 256). They
are clustered like learned embeddings (:class:`Mixture`): ``--centres`` Gaussian clusters with
uneven (log-normal) weights, overlapping, scattered around ``--groups`` groups in a
``--latent-dims``-dimensional latent space, mapped into ``dim`` dims with decaying scales, a
shared direction and a little isotropic noise, L2-normalised; seeded. Queries are held-out
draws of the same mixture (never indexed) perturbed by small isotropic noise: a new ECG of a
known kind. The headline records the exact top-1/top-3 cosine and a random pair's cosine.

For each size and kind: build seconds (ivf: k-means training included), then the operating
point: the smallest ivf ``nprobe`` / hnsw ``ef_search`` of a grid whose recall@3 on
``--tune-queries`` tuning queries reaches ``--target-recall`` + ``--tune-margin`` (else the
best of the grid), then on ``--queries`` separate evaluation queries: the single-query rate
(queries sent one at a time through ``ReportIndex.search``, queries/s), the batched rate (all
evaluation queries in one call, an extra) and recall@3 against flat's exact top-3 of the same
run. Flat's single-query rate is taken on ``--flat-queries`` queries (each costs a full scan;
its time per query hardly varies). Single queries are timed with ``--single-threads`` (default
1) FAISS threads for every kind: one query is a one-core job (a serving replica), and an
OpenMP region waiting for a second, busy core made flat 3.5x slower on a shared 2-core machine;
builds and batched searches use ``OMP_NUM_THREADS``.

Flat stays loaded and its single-query rate is timed again right after each other kind's, so a
speedup compares two rates taken under the same load (the machine may be shared); the rate per
CPU second of the searching thread is reported too (``single_qps_cpu``, load-independent).

Prints one line per step, then the JSON headline LAST: ``speedup_vs_flat`` (single-query rate
of the fastest non-flat index whose recall@3 reaches ``--target-recall``, over flat's timed just
after it, at the largest size; ``speedup_vs_flat_cpu`` the same per CPU second),
``recall_at_3`` (that index's), ``best_index``, ``operating_point``,
``goal_met`` (speedup >= 100 and recall >= 0.95), per-size per-index details and the machine.
Written to ``jobs/bench/results/retrieval.json`` (``--quick``: 200k only,
``retrieval_quick.json``). Run with ``OMP_NUM_THREADS`` set to the cores to use.

hnsw is built with ``ef_construction`` 64 by default, not ``retrieval.ef_construction``'s 200:
on the shared 2-core bench machine 50k x 768 vectors took 73 s at 200 against 23 s at 64
(M 32), which extrapolated to about 30 minutes for 1M at 200. The 1M build at 64 then took
280 s, so 200 would be nearer 15 minutes (not run). At 64, hnsw recall@3 levels off near
0.95-0.96 at 1M (``ef_search`` 96-192); a larger ``--ef-construction`` lifts that ceiling.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "platform"))

K = 3
GOAL_SPEEDUP = 100.0
GOAL_RECALL = 0.95
NPROBE_GRID = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256)
EF_SEARCH_GRID = (8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
RESULTS = REPO / "jobs" / "bench" / "results"


def log(msg: str) -> None:
    print(f"[retrieval-bench] {msg}", flush=True)


def embedding_width(config: Path) -> int:
    """Width of the retrieval encoder's pooled embedding for an experiment config (what the
    index holds), from the encoder built on the meta device (no weights allocated)."""
    import torch

    from ecglm.config import load_config
    from ecglm.retrieval.build import retrieval_encoder

    cfg = load_config(config, [])
    with torch.device("meta"):
        return int(retrieval_encoder(cfg).out_dim)


class Mixture:
    """The seeded clustered distribution, shaped like learned embeddings: low intrinsic
    dimension, overlapping clusters, a shared direction.

    ``groups`` group centres (norm about 1) in a ``latent_dims``-dimensional latent space;
    ``centres`` cluster centres scattered around them (offset norm about ``spread``) with
    log-normal weights; a point is its cluster centre plus latent noise (norm about ``noise``),
    mapped to ``dim`` dims by a random orthonormal map with decaying scales
    ``1/sqrt(1 + j/8)`` (normalised to keep norms), plus a shared direction of norm ``offset``
    (embeddings sit in a cone) and isotropic noise of norm about ``iso_noise``; then
    L2-normalised.
    """

    def __init__(self, dim: int, centres: int, latent_dims: int, noise: float,
                 iso_noise: float, seed: int, *, groups: int = 50, spread: float = 0.5,
                 offset: float = 0.7) -> None:
        rng = np.random.default_rng(seed)
        lat = min(latent_dims, dim)
        g = rng.normal(size=(groups, lat)) / np.sqrt(lat)
        c = g[rng.integers(0, groups, size=centres)] + spread * rng.normal(
            size=(centres, lat)) / np.sqrt(lat)
        self.centres = c.astype(np.float32)
        w = rng.lognormal(0.0, 1.0, size=centres)
        self.weights = w / w.sum()
        scale = 1.0 / np.sqrt(1.0 + np.arange(lat) / 8.0)
        scale /= np.sqrt(np.mean(scale ** 2))
        basis = np.linalg.qr(rng.normal(size=(dim, lat)))[0].T  # (lat, dim) orthonormal rows
        self.map = (basis * scale[:, None]).astype(np.float32)
        u = rng.normal(size=dim)
        self.shift = (offset * u / np.linalg.norm(u)).astype(np.float32)
        self.dim, self.lat, self.noise, self.iso = dim, lat, noise, iso_noise

    def draw(self, n: int, rng: np.random.Generator, chunk: int = 100_000) -> np.ndarray:
        """``(n, dim)`` float32 unit vectors."""
        out = np.empty((n, self.dim), np.float32)
        for s in range(0, n, chunk):
            m = min(chunk, n - s)
            lab = rng.choice(len(self.weights), size=m, p=self.weights)
            z = self.centres[lab] + (self.noise / np.sqrt(self.lat)) * rng.standard_normal(
                (m, self.lat), dtype=np.float32)
            x = z @ self.map + self.shift
            x += (self.iso / np.sqrt(self.dim)) * rng.standard_normal((m, self.dim),
                                                                      dtype=np.float32)
            out[s:s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
        return out


def make_data(n: int, n_queries: int, args: argparse.Namespace
              ) -> tuple[np.ndarray, np.ndarray]:
    """``(n, dim)`` indexed vectors and ``(n_queries, dim)`` held-out perturbed queries."""
    mix = Mixture(args.dim, args.centres, args.latent_dims, args.noise, args.iso_noise,
                  args.seed, groups=args.groups, spread=args.spread, offset=args.offset)
    rng = np.random.default_rng(args.seed + 1)
    data = mix.draw(n, rng)
    q = mix.draw(n_queries, rng)
    q += (args.query_noise / np.sqrt(args.dim)) * rng.standard_normal(q.shape, dtype=np.float32)
    return data, q / np.linalg.norm(q, axis=1, keepdims=True)


def random_pair_cosine(data: np.ndarray, seed: int, pairs: int = 5000) -> float:
    """Mean cosine of ``pairs`` random pairs of (unit) rows of ``data``."""
    rng = np.random.default_rng(seed + 2)
    i, j = rng.integers(0, len(data), size=(2, pairs))
    return round(float(np.mean(np.sum(data[i] * data[j], axis=1))), 4)


def top_ids(hits: list[list[Any]]) -> list[list[int]]:
    return [[h.ecg_id for h in row] for row in hits]


def recall_at_k(approx: list[list[int]], exact: list[list[int]]) -> float:
    """Mean over queries of ``|approx top-k ∩ exact top-k| / k``."""
    return float(np.mean([len(set(a) & set(e)) / max(len(e), 1)
                          for a, e in zip(approx, exact)]))


def single_rate(index: Any, queries: np.ndarray,
                threads: int) -> tuple[float, float, list[list[int]]]:
    """Send the queries one at a time with ``threads`` FAISS (OpenMP) threads.

    Returns:
        ``(queries per wall-clock second, queries per CPU second of this thread, top-k ids)``;
        with one thread the CPU rate does not depend on what else the machine runs.
    """
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads)
    try:
        out = []
        t0, c0 = time.perf_counter(), time.thread_time()
        for i in range(len(queries)):
            out.append(top_ids(index.search(queries[i:i + 1], K))[0])
        wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
        return len(queries) / wall, len(queries) / max(cpu, 1e-9), out
    finally:
        faiss.omp_set_num_threads(before)


def batched_rate(index: Any, queries: np.ndarray) -> tuple[float, list[list[int]]]:
    """Queries/s searching all queries in one call, and their top-k ids."""
    t0 = time.perf_counter()
    ids = top_ids(index.search(queries, K))
    return len(queries) / (time.perf_counter() - t0), ids


def build(kind: str, data: np.ndarray, args: argparse.Namespace) -> tuple[Any, float]:
    """A :class:`ReportIndex` of ``kind`` over ``data`` (ids ``0..n-1``, two records per
    patient) and its build seconds."""
    from ecglm.config.schema import RetrievalConfig
    from ecglm.retrieval.index import ReportIndex

    spec = RetrievalConfig(index=kind, nlist=args.nlist, hnsw_m=args.hnsw_m,
                           ef_construction=args.ef_construction, use_gpu=False)
    n = len(data)
    ids = np.arange(n)
    t0 = time.perf_counter()
    index = ReportIndex.build(data.shape[1], spec, data, ids, [f"report {i}" for i in ids],
                              (ids // 2).tolist())
    return index, time.perf_counter() - t0


def tune(index: Any, kind: str, queries: np.ndarray, exact: list[list[int]],
         target: float) -> tuple[dict[str, int], list[dict[str, float]]]:
    """The smallest ``nprobe`` / ``ef_search`` of the grid reaching ``target`` recall@3 on the
    tuning queries (else the best one), and the whole curve."""
    name, grid = ("nprobe", NPROBE_GRID) if kind == "ivf" else ("ef_search", EF_SEARCH_GRID)
    nlist = index.describe().get("nlist")
    if nlist is not None:
        grid = tuple(sorted({min(g, nlist) for g in grid}))
    curve = []
    for value in grid:
        index.set_query_params(**{name: value})
        rec = recall_at_k(top_ids(index.search(queries, K)), exact)
        curve.append({name: value, "recall_at_3": round(rec, 4)})
        if rec >= target:
            break
    best = next((c for c in curve if c["recall_at_3"] >= target),
                max(curve, key=lambda c: c["recall_at_3"]))
    point = {name: int(best[name])}
    index.set_query_params(**point)
    return point, curve


def bench_size(n: int, args: argparse.Namespace) -> dict[str, Any]:
    """Every kind of ``args.kinds`` at ``n`` vectors. Flat gives the exact top-3 and stays
    loaded: its single-query rate is timed again right after each other kind's, so that each
    speedup compares rates taken under the same machine load (the build seconds are not)."""
    t0 = time.perf_counter()
    n_tune, n_eval = args.tune_queries, args.queries
    data, queries = make_data(n, n_tune + n_eval, args)
    q_tune, q_eval = queries[:n_tune], queries[n_tune:]
    log(f"n={n}: {n} x {args.dim} vectors + {len(queries)} queries generated in "
        f"{time.perf_counter() - t0:.1f} s")
    out: dict[str, Any] = {}
    flat, b_s = build("flat", data, args)
    _, exact_tune = batched_rate(flat, q_tune)
    t1 = time.perf_counter()
    exact_hits = flat.search(q_eval, K)
    batch_qps = n_eval / (time.perf_counter() - t1)
    exact = top_ids(exact_hits)
    q_flat = q_eval[:min(args.flat_queries, n_eval)]
    single_qps, cpu_qps, single_ids = single_rate(flat, q_flat, args.single_threads)
    assert single_ids == exact[:len(q_flat)]
    cos = np.array([[h.score for h in row] for row in exact_hits])
    out["flat"] = {"build_s": round(b_s, 2), "single_qps": round(single_qps, 2),
                   "single_qps_cpu": round(cpu_qps, 2), "single_queries": len(q_flat),
                   "batched_qps": round(batch_qps, 2), "recall_at_3": 1.0, "params": {},
                   "cosine_mean": {"exact_top1": round(float(cos[:, 0].mean()), 4),
                                   "exact_top3": round(float(cos[:, -1].mean()), 4),
                                   "random_pair": random_pair_cosine(data, args.seed)}}
    log(f"n={n} flat: build {b_s:.1f} s, {single_qps:.2f} q/s single ({cpu_qps:.2f} per CPU "
        f"s), {batch_qps:.1f} q/s batched; cosine {out['flat']['cosine_mean']}")
    for kind in [k for k in args.kinds if k != "flat"]:
        index, b_s = build(kind, data, args)
        log(f"n={n} {kind}: built in {b_s:.1f} s ({index.describe()})")
        point, curve = tune(index, kind, q_tune, exact_tune, args.target_recall + args.tune_margin)
        single_qps, cpu_qps, ids = single_rate(index, q_eval, args.single_threads)
        flat_qps, flat_cpu, _ = single_rate(flat, q_flat, args.single_threads)
        batch_qps, _ = batched_rate(index, q_eval)
        rec = recall_at_k(ids, exact)
        desc = index.describe()
        params = {k: desc[k] for k in ("nlist", "nprobe", "hnsw_m", "ef_construction",
                                       "ef_search") if k in desc}
        out[kind] = {"build_s": round(b_s, 2), "single_qps": round(single_qps, 2),
                     "single_qps_cpu": round(cpu_qps, 2), "single_queries": n_eval,
                     "batched_qps": round(batch_qps, 2), "recall_at_3": round(rec, 4),
                     "params": params,
                     "flat_single_qps_adjacent": round(flat_qps, 2),
                     "speedup_vs_flat": round(single_qps / flat_qps, 1),
                     "speedup_vs_flat_cpu": round(cpu_qps / flat_cpu, 1),
                     "tuning_curve": curve}
        log(f"n={n} {kind}: {point} -> recall@3 {rec:.4f}, {single_qps:.1f} q/s single vs "
            f"flat {flat_qps:.2f} just after ({out[kind]['speedup_vs_flat']}x; per CPU s "
            f"{out[kind]['speedup_vs_flat_cpu']}x), {batch_qps:.1f} q/s batched")
        del index
    del flat
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    return out


def headline(results: dict[int, dict[str, Any]], args: argparse.Namespace,
             wall_s: float) -> dict[str, Any]:
    """The JSON headline from the per-size results."""
    import faiss

    largest = max(results)
    res = results[largest]
    ok = [(k, v) for k, v in res.items() if k not in ("flat", "wall_s")
          and v["recall_at_3"] >= args.target_recall]
    best = max(ok, key=lambda kv: kv[1]["speedup_vs_flat"], default=None)
    speedup = recall = None
    if best is not None:
        speedup, recall = best[1]["speedup_vs_flat"], best[1]["recall_at_3"]
    return {
        "bench": "retrieval", "quick": args.quick,
        "speedup_vs_flat": speedup, "recall_at_3": recall,
        "speedup_vs_flat_cpu": best[1]["speedup_vs_flat_cpu"] if best else None,
        "best_index": best[0] if best else None,
        "operating_point": best[1]["params"] if best else None,
        "goal_met": bool(speedup is not None and speedup >= GOAL_SPEEDUP
                         and recall is not None and recall >= GOAL_RECALL),
        "goal": f"single-query speedup >= {GOAL_SPEEDUP:g}x flat at recall@3 >= {GOAL_RECALL}",
        "largest_size": largest, "sizes": sorted(results), "k": K,
        "dim": args.dim, "dim_source": args.dim_source,
        "data": {"centres": args.centres, "groups": args.groups,
                 "latent_dims": args.latent_dims, "spread": args.spread, "noise": args.noise,
                 "offset": args.offset, "iso_noise": args.iso_noise,
                 "query_noise": args.query_noise, "seed": args.seed},
        "queries": args.queries, "tune_queries": args.tune_queries,
        "flat_queries": args.flat_queries, "single_query_threads": args.single_threads,
        "target_recall": args.target_recall,
        "tune_margin": args.tune_margin,
        "build_params": {"nlist": args.nlist or "auto", "hnsw_m": args.hnsw_m,
                         "ef_construction": args.ef_construction},
        "results": {str(n): r for n, r in sorted(results.items())},
        "wall_s": round(wall_s, 1),
        "machine": {"cpus": os.cpu_count(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                    "faiss": faiss.__version__, "loadavg_1min_end": round(os.getloadavg()[0], 2),
                    "loadavg_1min_start": args.loadavg_start},
    }


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="200k vectors only")
    ap.add_argument("--sizes", default=None,
                    help="comma-separated vector counts (default 200000,1000000; quick 200000)")
    ap.add_argument("--kinds", default="flat,ivf,hnsw")
    ap.add_argument("--config", type=Path, default=REPO / "jobs/configs/qheart_ecgqa.yaml",
                    help="experiment config whose retrieval encoder width is used")
    ap.add_argument("--dim", type=int, default=None, help="embedding width (overrides --config)")
    ap.add_argument("--queries", type=int, default=500, help="evaluation queries")
    ap.add_argument("--tune-queries", type=int, default=200)
    ap.add_argument("--flat-queries", type=int, default=200,
                    help="queries timed one at a time on flat")
    ap.add_argument("--single-threads", type=int, default=1,
                    help="FAISS threads while timing single queries (every kind)")
    ap.add_argument("--centres", type=int, default=3000)
    ap.add_argument("--groups", type=int, default=50, help="groups the centres scatter around")
    ap.add_argument("--latent-dims", type=int, default=64, help="intrinsic dimension")
    ap.add_argument("--spread", type=float, default=0.5, help="centre offset norm (group: 1)")
    ap.add_argument("--noise", type=float, default=0.6,
                    help="point noise norm in latent space (clusters overlap)")
    ap.add_argument("--offset", type=float, default=0.7, help="shared direction norm")
    ap.add_argument("--iso-noise", type=float, default=0.1, help="isotropic noise norm")
    ap.add_argument("--query-noise", type=float, default=0.1, help="query perturbation norm")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--nlist", type=int, default=0, help="ivf cells (0: auto 4 sqrt(N))")
    ap.add_argument("--hnsw-m", type=int, default=32)
    ap.add_argument("--ef-construction", type=int, default=64,
                    help="hnsw build candidates (64, not the config's 200: see the docstring)")
    ap.add_argument("--target-recall", type=float, default=GOAL_RECALL)
    ap.add_argument("--tune-margin", type=float, default=0.01,
                    help="tuning aims at target + margin (the evaluation queries differ)")
    ap.add_argument("--out", type=Path, default=None,
                    help="headline JSON (default jobs/bench/results/retrieval[_quick].json)")
    args = ap.parse_args(argv)
    args.sizes = ([int(s) for s in args.sizes.split(",")] if args.sizes else
                  [200_000] if args.quick else [200_000, 1_000_000])
    args.kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    bad = set(args.kinds) - {"flat", "ivf", "hnsw"}
    if bad:
        ap.error(f"--kinds: unknown {sorted(bad)}; use flat, ivf, hnsw")
    if args.out is None:
        args.out = RESULTS / ("retrieval_quick.json" if args.quick else "retrieval.json")
    args.loadavg_start = round(os.getloadavg()[0], 2)
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    if args.dim is None:
        args.dim = embedding_width(args.config)
        args.dim_source = f"retrieval encoder of {args.config.relative_to(REPO)}" \
            if args.config.is_relative_to(REPO) else f"retrieval encoder of {args.config}"
    else:
        args.dim_source = "--dim"
    log(f"sizes {args.sizes}, kinds {args.kinds}, dim {args.dim} ({args.dim_source}), "
        f"{args.queries} queries (+{args.tune_queries} tuning), OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS')}")
    results = {n: bench_size(n, args) for n in args.sizes}
    head = headline(results, args, time.perf_counter() - t0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(head, indent=1) + "\n")
    log(f"wrote {args.out}")
    print(json.dumps(head), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
