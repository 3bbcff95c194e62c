"""No hang from resources, on a real ``ray start --head --num-cpus 2`` (exactly as many CPUs as
the tiny config's 2 training workers): ``ecglm train jobs/configs/tiny.yaml`` joined to it via
``RAY_ADDRESS`` used to wait forever (Ray Data got no CPU); now it exits 2 within a bound with
the preflight's message, and the setting that message recommends trains to the end on the same
head."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.cluster_helpers import RayHead, ray_head
from tests.helpers import REPO

pytestmark = pytest.mark.slow

BOUND_S = 120
"""The refusal must come within this many seconds (it hung forever before)."""


@pytest.fixture(scope="module")
def head() -> Iterator[RayHead]:
    with ray_head(num_cpus=2) as h:
        yield h


def _train(head: RayHead, root: Path, *overrides: str, timeout: float
           ) -> tuple[subprocess.CompletedProcess, float]:
    """``ecglm train jobs/configs/tiny.yaml`` (absolute outputs under ``root``) as a driver
    joined to ``head``; its completed process and wall time."""
    cmd = [sys.executable, "-m", "ecglm.cli", "train", "jobs/configs/tiny.yaml", "--no-eval",
           f"data.synthetic_root={root}/synthetic", f"data.shard_dir={root}/shards",
           f"llm.cache_dir={root}/models", f"tracking.tracking_uri=sqlite:///{root}/mlflow.db",
           f"tracking.artifact_root={root}/artifacts", f"output_dir={root}/runs",
           f"train.storage_path={root}/ray", *overrides]
    env = {**os.environ, "RAY_ADDRESS": head.gcs_address,
           "PYTHONPATH": os.pathsep.join([str(REPO / "platform"), str(REPO),
                                          os.environ.get("PYTHONPATH", "")])}
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)
    return proc, time.monotonic() - t0


@pytest.mark.timeout(600)
def test_two_cpu_head_refuses_fast_then_trains_with_the_recommended_setting(
        head: RayHead, tmp_path: Path) -> None:
    refused, took = _train(head, tmp_path, timeout=BOUND_S + 30)
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert took < BOUND_S
    err = refused.stderr
    assert "train.resource_check: this cluster cannot run the job without waiting forever" in err
    assert "2 Train worker(s) x {CPU: 1}" in err and "= 3 CPU" in err
    assert "2 CPU on 1 node(s)" in err and "no autoscaler" in err
    assert "the Ray Data ingest needs 1 CPU" in err
    assert "train.cpus_per_worker=0.5" in err
    assert not (tmp_path / "ray").exists()  # refused before any worker started

    ok, _ = _train(head, tmp_path, "train.cpus_per_worker=0.5", "train.max_steps=2",
                   "train.eval_every=2", timeout=420)
    assert ok.returncode == 0, ok.stderr[-3000:]
    out = json.loads(ok.stdout[ok.stdout.index("{"):])
    assert math.isfinite(out["val_loss"])
    assert (Path(out["checkpoint"]) / "trainable.safetensors").is_file()
