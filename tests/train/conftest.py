"""Fixtures of the training tests (the tiny config itself is :func:`tests.helpers.tiny_config`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecglm.train.run import TrainResult, run_training
from tests.helpers import tiny_config

STRAIGHT_BASE = ["train.max_steps=4", "train.eval_every=2", "train.log_every=1"]
"""The uninterrupted tiny run shared by the training and resume tests."""
STRATEGIES = {"ddp": [], "zero2": ["train.strategy=deepspeed", "train.zero_stage=2"],
              "zero3": ["train.strategy=deepspeed", "train.zero_stage=3"]}


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One session folder shared by the tiny runs (synthetic data, shards and LLM built once)."""
    return tmp_path_factory.mktemp("tiny")


@pytest.fixture(scope="session")
def straight_runs(ray_session, tiny_root: Path) -> dict[str, TrainResult]:
    """Uninterrupted 4-step runs (:data:`STRAIGHT_BASE`), one per strategy, made on first use
    by :func:`straight_run` and shared by the training and resume tests (each costs ~30 s)."""
    return {}


def straight_run(cache: dict[str, TrainResult], tiny_root: Path, strategy: str) -> TrainResult:
    """The uninterrupted run of ``strategy`` (a key of :data:`STRATEGIES`), trained once."""
    if strategy not in cache:
        cfg = tiny_config(tiny_root, *STRAIGHT_BASE, *STRATEGIES[strategy])
        cache[strategy] = run_training(cfg, run_name=f"straight-{strategy}")
    return cache[strategy]
