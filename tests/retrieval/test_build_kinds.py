"""``build_retrieval`` with each ``retrieval.index`` kind: the artifact holds that kind, loads
with the config's query parameters, and a changed kind is a new cache folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ecglm.config.schema import (
    DataConfig,
    EncoderConfig,
    ExperimentConfig,
    LLMConfig,
    RetrievalConfig,
)
from ecglm.data.sharding import encode_signals
from ecglm.data.shards import ShardSet
from ecglm.retrieval.build import build_retrieval
from ecglm.retrieval.index import ReportIndex

N_TRAIN, N_TEST = 90, 10


def _shards(root: Path) -> ShardSet:
    """``N_TRAIN + N_TEST`` records of 5 s at 100 Hz (noisy sines), two per patient."""
    n = N_TRAIN + N_TEST
    rng = np.random.default_rng(3)
    t = np.arange(500) / 100.0
    sig = (0.5 + rng.random((n, 12, 1))) * np.sin(2 * np.pi * 1.2 * t) \
        + 0.2 * rng.normal(size=(n, 12, 500))
    table = pa.table({
        "ecg_id": list(range(1, n + 1)), "patient_id": [i // 2 for i in range(n)],
        "split": ["train"] * N_TRAIN + ["test"] * N_TEST,
        "report": [f"report {i}" for i in range(1, n + 1)],
        "signal": [encode_signals(sig[i:i + 1]) for i in range(n)]})
    root.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, root / "records.parquet")
    return ShardSet(root=root, records=root / "records.parquet", qa={},
                    manifest={"config_hash": "test"})


def _cfg(tmp: Path, **retrieval: Any) -> ExperimentConfig:
    enc = EncoderConfig(name="cmelt", d_model=16, n_layers=1, n_heads=2, dropout=0.0,
                        conv_channels=[8, 16], conv_kernels=[10, 5], conv_strides=[5, 5])
    return ExperimentConfig(seed=1, encoder=enc, data=DataConfig(fs=100, seconds=5.0),
                            llm=LLMConfig(source="tiny", cache_dir=str(tmp / "models")),
                            retrieval=RetrievalConfig(use_gpu=False, **retrieval))


def test_each_kind_builds_its_own_artifact(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    shards = _shards(tmp_path / "shards")
    folders = {}
    for kind, extra in (("flat", {}), ("ivf", {"nprobe": 4}),
                        ("hnsw", {"hnsw_m": 8, "ef_construction": 32})):
        cfg = _cfg(tmp_path, index=kind, **extra)
        art = build_retrieval(cfg, shards)
        folders[kind] = art.folder
        assert art.index_size == N_TRAIN and len(art.neighbours) == N_TRAIN + N_TEST
        assert all(len(v) == cfg.retrieval.top_k for v in art.neighbours.values())
        for ecg_id, nbrs in art.neighbour_ids.items():  # never itself, never its patient
            assert all(n != ecg_id and (n - 1) // 2 != (ecg_id - 1) // 2 for n in nbrs)
        index = ReportIndex.load(art.folder, cfg.retrieval)
        assert index.kind == kind and len(index) == N_TRAIN
    assert len(set(folders.values())) == 3
    assert "nlist=2 REDUCED" in capsys.readouterr().out  # 90 training vectors: 90 // 39 cells
    # a query-time change reuses the folder and says which value the table was searched with
    art = build_retrieval(_cfg(tmp_path, index="ivf", nprobe=2), shards)
    assert art.folder == folders["ivf"]
    assert "searched with" not in capsys.readouterr().out
    art = build_retrieval(_cfg(tmp_path, index="ivf", nprobe=1), shards)
    out = capsys.readouterr().out
    assert art.folder == folders["ivf"] and "reusing" in out and "nprobe=2 (config: 1)" in out
