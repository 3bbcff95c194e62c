"""FAISS report index: cosine ranking, self- and same-patient exclusion, save/load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ecglm.retrieval.index import ReportIndex


def _index(n: int = 20, d: int = 8, seed: int = 0) -> tuple[ReportIndex, np.ndarray]:
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, d)).astype(np.float32)
    idx = ReportIndex(d)
    idx.add(emb, list(range(100, 100 + n)), [f"report {i}" for i in range(n)],
            [i // 2 for i in range(n)])  # two records per patient
    return idx, emb


def test_query_never_gets_its_own_record() -> None:
    idx, emb = _index()
    hits = idx.search(emb, k=3, exclude_ids=list(range(100, 120)))
    for q, hs in enumerate(hits):
        assert len(hs) == 3
        assert all(h.ecg_id != 100 + q for h in hs)
    # without exclusion the record itself is the best hit (cosine 1)
    top = idx.search(emb, k=1)
    assert [h[0].ecg_id for h in top] == list(range(100, 120))
    assert top[0][0].score == pytest.approx(1.0, abs=1e-5)


def test_same_patient_exclusion_and_order() -> None:
    idx, emb = _index()
    pats = [i // 2 for i in range(20)]
    hits = idx.search(emb, k=5, exclude_ids=list(range(100, 120)), exclude_patients=pats)
    for q, hs in enumerate(hits):
        assert all(h.patient_id != pats[q] for h in hs)
        scores = [h.score for h in hs]
        assert scores == sorted(scores, reverse=True)
    # matches a brute-force cosine ranking
    n = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sim = n @ n.T
    for q in range(20):
        order = [j for j in np.argsort(-sim[q]) if pats[j] != pats[q]][:5]
        assert [h.ecg_id - 100 for h in hits[q]] == order


def test_more_exclusions_than_fetch_still_fills_k() -> None:
    d = 4
    idx = ReportIndex(d)
    emb = np.ones((10, d), np.float32) + np.arange(10)[:, None] * 1e-3
    idx.add(emb, list(range(10)), [str(i) for i in range(10)], [0] * 9 + [1])
    (hs,) = idx.search(emb[:1], k=1, exclude_ids=[0], exclude_patients=[0])
    assert [h.ecg_id for h in hs] == [9]


def test_save_load_round_trip(tmp_path: Path) -> None:
    idx, emb = _index()
    idx.save(tmp_path / "r")
    back = ReportIndex.load(tmp_path / "r")
    a = idx.search(emb[:4], 3, exclude_ids=[100, 101, 102, 103])
    b = back.search(emb[:4], 3, exclude_ids=[100, 101, 102, 103])
    assert a == b


def test_bad_input_is_named() -> None:
    idx, emb = _index()
    with pytest.raises(ValueError, match="ecg_ids: duplicate"):
        idx.add(emb[:1], [100], ["x"], [0])
    with pytest.raises(ValueError, match="embeddings: expected dim"):
        idx.add(np.zeros((1, 3), np.float32), [999], ["x"], [0])
