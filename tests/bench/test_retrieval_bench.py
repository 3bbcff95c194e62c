"""The retrieval benchmark (``jobs/bench/retrieval.py``) end to end at a tiny size: every
headline key present and sane (no timing assertions), the results file written, and the
embedding width read from the presets' retrieval encoders."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from tests.helpers import REPO, load_script

SCRIPT = REPO / "jobs" / "bench" / "retrieval.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """The benchmark script imported as a module (its ``main`` does not run)."""
    return load_script(SCRIPT, "retrieval_bench")


def test_tiny_run_prints_a_complete_headline_last(bench: ModuleType, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.json"
    assert bench.main(["--sizes", "2000,5000", "--dim", "32", "--queries", "30",
                       "--tune-queries", "30", "--flat-queries", "10", "--centres", "40",
                       "--latent-dims", "8", "--hnsw-m", "8", "--ef-construction", "32",
                       "--out", str(out)]) == 0
    head = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert head == json.loads(out.read_text())
    for key in ("speedup_vs_flat", "speedup_vs_flat_cpu", "recall_at_3", "best_index", "operating_point", "goal_met",
                "results", "sizes", "largest_size", "dim", "wall_s", "machine"):
        assert key in head, key
    assert head["largest_size"] == 5000 and head["sizes"] == [2000, 5000]
    assert head["best_index"] in ("ivf", "hnsw")
    assert head["recall_at_3"] >= 0.95 and head["speedup_vs_flat"] > 0
    assert isinstance(head["goal_met"], bool)
    for size in ("2000", "5000"):
        res = head["results"][size]
        assert set(res) == {"flat", "ivf", "hnsw", "wall_s"}
        for kind in ("flat", "ivf", "hnsw"):
            r = res[kind]
            assert r["build_s"] >= 0 and r["single_qps"] > 0 and r["batched_qps"] > 0
            assert 0.0 <= r["recall_at_3"] <= 1.0
        assert res["flat"]["recall_at_3"] == 1.0
        assert "nprobe" in res["ivf"]["params"] and "ef_search" in res["hnsw"]["params"]
    best = head["results"]["5000"][head["best_index"]]
    assert head["operating_point"] == best["params"]


def test_mixture_is_seeded_unit_norm_and_clustered(bench: ModuleType) -> None:
    mix = bench.Mixture(dim=32, centres=10, latent_dims=8, noise=0.3, iso_noise=0.1, seed=0)
    a = mix.draw(500, np.random.default_rng(1))
    b = bench.Mixture(32, 10, 8, 0.3, 0.1, seed=0).draw(500, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    sim = a @ a.T
    np.fill_diagonal(sim, -np.inf)
    nearest = sim.max(axis=1).mean()
    assert nearest > bench.random_pair_cosine(a, 0) + 0.3  # clustered, not uniform


def test_default_width_is_the_presets_retrieval_encoder(bench: ModuleType) -> None:
    assert bench.embedding_width(REPO / "jobs/configs/qheart_ecgqa.yaml") == 768
    assert bench.embedding_width(REPO / "jobs/configs/quickstart.yaml") == 256
