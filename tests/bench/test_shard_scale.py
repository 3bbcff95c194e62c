"""The shard-scale benchmark (``jobs/bench/shard_scale.py``): the headline arithmetic, the RSS
sampler, and (slow) a tiny end-to-end run at two sizes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.helpers import REPO, load_script

SCRIPT = REPO / "jobs" / "bench" / "shard_scale.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """The benchmark script imported as a module (its ``main`` does not run)."""
    return load_script(SCRIPT, "shard_scale")


def _build(n: int, rate: float, rss: float) -> dict:
    return {"n": n, "records_per_s": rate, "read_stage_records_per_s": rate * 1.5,
            "driver_rss_peak_mib": rss, "driver_rss_before_mib": rss - 5.0}


def test_headline_keys_and_ratios(bench: ModuleType) -> None:
    head = bench.headline([_build(2000, 1200.0, 400.0), _build(20000, 1100.0, 420.0)],
                          [{"records_per_s": 300.0}, {"records_per_s": 275.0}], quick=False)
    assert head["records_per_s"] == {"2000": 1200.0, "20000": 1100.0}
    assert head["speedup_vs_loop"] == {"2000": 4.0, "20000": 4.0}
    assert head["driver_rss_mib"] == {"2000": 400.0, "20000": 420.0}
    assert head["driver_rss_growth"] == pytest.approx(0.05)
    assert head["rss_goal_met"] and head["rate_goal_met"]
    slow = bench.headline([_build(2000, 900.0, 400.0), _build(8000, 990.0, 480.0)],
                          [{"records_per_s": 300.0}, {"records_per_s": 300.0}], quick=True)
    assert slow["driver_rss_growth"] == pytest.approx(0.2)
    assert not slow["rss_goal_met"] and not slow["rate_goal_met"]
    json.dumps(head)


def test_rss_sampler_sees_a_transient_peak(bench: ModuleType) -> None:
    with bench.RssSampler(every_s=0.005) as sampler:
        before = bench.rss_mib()
        block = bytearray(64 * 2**20)  # touched: resident
        for i in range(0, len(block), 4096):
            block[i] = 1
        import time
        time.sleep(0.05)
        del block
    assert sampler.peak >= before + 60


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_tiny_run_end_to_end(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'platform'}:{REPO}",
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--sizes", "32,64", "--loop-records", "16",
         "--max-items", "8", "--cache", str(tmp_path / "cache")],
        capture_output=True, text=True, env=env, timeout=380)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    head = json.loads(proc.stdout.strip().splitlines()[-1])
    assert head["sizes"] == [32, 64]
    for key in ("records_per_s", "speedup_vs_loop", "driver_rss_mib", "loop_records_per_s"):
        assert set(head[key]) == {"32", "64"} and all(v > 0 for v in head[key].values()), key
    assert isinstance(head["driver_rss_growth"], float)
    assert "[shard_scale] n=64" in proc.stdout
    assert (tmp_path / "cache" / "synthetic-64" / "synthetic_manifest.json").is_file()
    assert not list((tmp_path / "cache").glob("shard-scale-*"))  # work folders removed
