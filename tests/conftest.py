"""Shared fixtures: environment for Ray/HF offline, repo paths, one local Ray per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ecglm.utils.ray_env import set_process_env

set_process_env()
os.environ.setdefault("TORCH_EXTENSIONS_DIR",
                      str(Path(__file__).resolve().parents[1] / ".cache" / "torch_extensions"))

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO.parent / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; tests that need it skip with a clear message when it is absent."""
    if not (SHARED_DATA / "ptbxl" / "ptbxl_database.csv").exists():
        pytest.skip(f"real data not found at {SHARED_DATA} (../shared/data)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for the whole session (4 logical CPUs, 1 GiB object store)."""
    import ray

    from ecglm.utils.ray_env import init_ray

    init_ray(num_cpus=4, object_store_bytes=1 << 30)
    yield ray
    ray.shutdown()
