"""``ecglm data shard CONFIG``: write (or reuse) the Parquet shards with Ray Data."""

from __future__ import annotations

from typing import Any

from ecglm.config import ExperimentConfig
from ecglm.config.paths import resolve_paths
from ecglm.data.shards import build_shards
from ecglm.recipes.common import ray_lifecycle


def run(cfg: ExperimentConfig) -> dict[str, Any]:
    """Build the shards of ``cfg``; their folder and manifest."""
    cfg = resolve_paths(cfg)
    with ray_lifecycle(cfg):
        shards = build_shards(cfg)
    return {"root": str(shards.root), **shards.manifest}
