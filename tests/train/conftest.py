"""A tiny experiment config whose every path lives in one session temp folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecglm.config import ExperimentConfig, load_config

REPO = Path(__file__).resolve().parents[2]


def tiny_config(root: Path, *overrides: str) -> ExperimentConfig:
    """``jobs/configs/tiny.yaml`` with all outputs under ``root``."""
    return load_config(
        REPO / "jobs/configs/tiny.yaml",
        [f"data.synthetic_root={root}/synthetic", f"data.shard_dir={root}/shards",
         f"llm.cache_dir={root}/models", f"tracking.tracking_uri=sqlite:///{root}/mlflow.db",
         f"tracking.artifact_root={root}/artifacts", f"output_dir={root}/runs",
         f"train.storage_path={root}/ray", *overrides],
    )


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny")
