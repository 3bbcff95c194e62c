"""ivf and hnsw report indexes against the exact flat one on a seeded clustered set: recall,
exclusions, save/load with query-time parameters, small-N ivf cells, bad config values, and the
GPU placement path (with a stand-in for faiss's GPU calls: CI has no GPU)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ecglm.config.checks import ConfigError
from ecglm.config.schema import RetrievalConfig
from ecglm.retrieval import faiss_kinds as fk
from ecglm.retrieval.index import ReportIndex

N, D, Q, K = 5000, 64, 200, 3


def clustered(n: int, d: int, n_centres: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(n, d)`` unit vectors from a mixture of ``n_centres`` Gaussians, and ``(Q, d)``
    held-out queries (fresh mixture draws), both float32."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_centres, d))
    draw = centres[rng.integers(0, n_centres, size=n + Q)] + 0.35 * rng.normal(size=(n + Q, d))
    draw /= np.linalg.norm(draw, axis=1, keepdims=True)
    return draw[:n].astype(np.float32), draw[n:].astype(np.float32)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, list[int], list[int]]:
    emb, queries = clustered(N, D, 50, seed=0)
    ids = list(range(10_000, 10_000 + N))
    patients = [i // 3 for i in range(N)]  # three records per patient
    return emb, queries, ids, patients


def _build(kind: str, data: Any, **kw: Any) -> ReportIndex:
    emb, _, ids, pats = data
    spec = RetrievalConfig(index=kind, use_gpu=False, **kw)
    return ReportIndex.build(D, spec, emb, ids, [f"r{i}" for i in ids], pats)


@pytest.fixture(scope="module")
def indexes(data: Any) -> dict[str, ReportIndex]:
    return {"flat": _build("flat", data), "ivf": _build("ivf", data, nprobe=8),
            "hnsw": _build("hnsw", data, hnsw_m=16, ef_construction=64, ef_search=64)}


def recall(approx: list[list[Any]], exact: list[list[Any]]) -> float:
    """Mean fraction of the exact top-k ids found by the approximate search."""
    return float(np.mean([len({h.ecg_id for h in a} & {h.ecg_id for h in e}) / len(e)
                          for a, e in zip(approx, exact)]))


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_top3_recall_vs_flat(kind: str, data: Any,
                                         indexes: dict[str, ReportIndex]) -> None:
    queries = data[1]
    exact = indexes["flat"].search(queries, K)
    approx = indexes[kind].search(queries, K)
    assert indexes[kind].kind == kind and len(indexes[kind]) == N
    assert all(len(h) == K for h in approx)
    assert recall(approx, exact) >= 0.9


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_exclusions_hold_for_every_kind(kind: str, data: Any,
                                        indexes: dict[str, ReportIndex]) -> None:
    emb, _, ids, pats = data
    rows = list(range(0, N, 50))  # indexed records used as queries
    q_ids = [ids[r] for r in rows]
    q_pats = [pats[r] for r in rows]
    own = indexes[kind].search(emb[rows], K, exclude_ids=q_ids)
    assert all(len(h) == K and all(x.ecg_id != i for x in h) for h, i in zip(own, q_ids))
    same = indexes[kind].search(emb[rows], K, exclude_ids=q_ids, exclude_patients=q_pats)
    assert all(len(h) == K and all(x.patient_id != p for x in h)
               for h, p in zip(same, q_pats))
    # without exclusion the record itself comes first (cosine 1)
    top = indexes[kind].search(emb[rows], 1)
    assert np.mean([h[0].ecg_id == i for h, i in zip(top, q_ids)]) >= 0.95


def test_describe_reports_kind_and_parameters(indexes: dict[str, ReportIndex]) -> None:
    ivf = indexes["ivf"].describe()
    assert ivf["kind"] == "ivf" and ivf["device"] == "cpu" and ivf["ntotal"] == N
    assert ivf["nlist"] == N // 39 and ivf["nprobe"] == 8  # 4 sqrt(N) = 283 > N / 39
    hnsw = indexes["hnsw"].describe()
    assert (hnsw["hnsw_m"], hnsw["ef_construction"], hnsw["ef_search"]) == (16, 64, 64)
    assert indexes["flat"].describe()["kind"] == "flat"


def test_save_load_round_trips_kind_and_applies_query_params(
        tmp_path: Path, data: Any, indexes: dict[str, ReportIndex]) -> None:
    queries = data[1]
    exact = indexes["flat"].search(queries, K)
    for kind in ("ivf", "hnsw"):
        indexes[kind].save(tmp_path / kind)
        back = ReportIndex.load(tmp_path / kind)  # no spec: as saved
        assert back.kind == kind and back.describe() == indexes[kind].describe()
        assert back.search(queries[:20], K) == indexes[kind].search(queries[:20], K)
    low = ReportIndex.load(tmp_path / "ivf", RetrievalConfig(index="ivf", nprobe=1,
                                                              use_gpu=False))
    high = ReportIndex.load(tmp_path / "ivf", RetrievalConfig(index="ivf", nprobe=64,
                                                               use_gpu=False))
    assert (low.describe()["nprobe"], high.describe()["nprobe"]) == (1, 64)
    assert recall(low.search(queries, K), exact) < recall(high.search(queries, K), exact)
    assert recall(high.search(queries, K), exact) >= 0.99
    ef = ReportIndex.load(tmp_path / "hnsw", RetrievalConfig(index="hnsw", ef_search=200,
                                                             use_gpu=False))
    assert ef.describe()["ef_search"] == 200 and ef.describe()["hnsw_m"] == 16
    with pytest.raises(ConfigError, match="retrieval.index: .* holds a ivf index"):
        ReportIndex.load(tmp_path / "ivf", RetrievalConfig(index="hnsw", use_gpu=False))


def test_flat_sidecar_without_index_entry_still_loads(tmp_path: Path, data: Any,
                                                      indexes: dict[str, ReportIndex]) -> None:
    import json

    indexes["flat"].save(tmp_path / "f")
    side = tmp_path / "f" / "reports.json"
    doc = json.loads(side.read_text())
    del doc["index"]  # written before index kinds existed
    side.write_text(json.dumps(doc))
    back = ReportIndex.load(tmp_path / "f", RetrievalConfig())  # flat, use_gpu on: no GPU here
    assert back.kind == "flat" and len(back) == N


def test_small_n_ivf_reduces_nlist_and_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    emb, _ = clustered(500, 16, 5, seed=1)
    idx = ReportIndex.build(16, RetrievalConfig(index="ivf", nlist=256, use_gpu=False), emb,
                            list(range(500)), ["r"] * 500, list(range(500)))
    assert idx.kind == "ivf" and idx.describe()["nlist"] == 500 // 39
    out = capsys.readouterr().out
    assert "REDUCED from 256" in out and "nlist=12" in out
    assert fk.ivf_nlist(0, 40_000) == (800, "nlist=800 (auto 4*sqrt(N)=800 for N=40000)")
    assert fk.ivf_nlist(0, 20)[0] == 1  # never below one cell, never another kind
    tiny = ReportIndex(16, RetrievalConfig(index="ivf", use_gpu=False))
    tiny.add(emb[:10], list(range(10)), ["r"] * 10, [0] * 10)  # trains on the first add
    assert tiny.kind == "ivf" and tiny.describe()["nlist"] == 1
    assert [h[0].ecg_id for h in tiny.search(emb[:10], 1)] == list(range(10))


def test_empty_ivf_saves_and_trains_after_load(tmp_path: Path) -> None:
    spec = RetrievalConfig(index="ivf", use_gpu=False)
    ReportIndex(8, spec).save(tmp_path / "e")
    back = ReportIndex.load(tmp_path / "e", spec)
    assert back.kind == "ivf" and len(back) == 0 and back.search(np.ones((1, 8)), 3) == [[]]
    emb = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    back.add(emb, list(range(50)), ["r"] * 50, list(range(50)))
    assert len(back) == 50 and back.is_trained


@pytest.mark.parametrize("key,value", [("index", "annoy"), ("nlist", -1), ("nprobe", 0),
                                       ("hnsw_m", 0), ("ef_construction", 0),
                                       ("ef_search", 0)])
def test_bad_retrieval_values_name_the_key(key: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=f"^retrieval.{key}:"):
        RetrievalConfig(**{key: value})


class _FakeGpu:
    """Stands in for faiss's GPU calls: records the moves, keeps the CPU index."""

    def __init__(self) -> None:
        self.to_gpu: list[str] = []
        self.to_cpu = 0


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch) -> _FakeGpu:
    rec = _FakeGpu()

    class Placement:
        def __init__(self, device: int = 0) -> None:
            pass

        def to_gpu(self, index: Any) -> Any:
            rec.to_gpu.append(fk.detect_kind(index))
            return index

    def to_cpu(index: Any) -> Any:
        rec.to_cpu += 1
        return index

    monkeypatch.setattr(fk, "gpu_available", lambda: True)
    monkeypatch.setattr(fk, "GpuPlacement", Placement)
    monkeypatch.setattr(fk, "to_cpu", to_cpu)
    monkeypatch.setattr(fk.faiss_module(), "GpuParameterSpace", fk.faiss_module().ParameterSpace,
                        raising=False)
    return rec


def test_gpu_placement_for_flat_and_ivf_never_hnsw(fake_gpu: _FakeGpu, tmp_path: Path,
                                                   data: Any) -> None:
    emb, queries, ids, pats = data
    for kind in ("flat", "ivf", "hnsw"):
        idx = ReportIndex.build(D, RetrievalConfig(index=kind, hnsw_m=8, ef_construction=16),
                                emb[:1000], ids[:1000], ["r"] * 1000, pats[:1000])
        assert idx.describe()["device"] == ("cpu" if kind == "hnsw" else "gpu")
        idx.save(tmp_path / kind)
        back = ReportIndex.load(tmp_path / kind, RetrievalConfig(index=kind))
        assert back.describe()["device"] == idx.describe()["device"]
        assert len(back.search(queries[:2], K)[0]) == K
        no_gpu = ReportIndex.load(tmp_path / kind, RetrievalConfig(index=kind, use_gpu=False))
        assert no_gpu.describe()["device"] == "cpu"
    assert fake_gpu.to_gpu == ["flat", "flat", "ivf", "ivf"] and fake_gpu.to_cpu == 2
