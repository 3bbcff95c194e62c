"""Fixtures of the data-layer tests (``shared_data`` comes from tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecglm.data.synthetic import write_synthetic_dataset


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 40-record synthetic dataset (seed 0), written once per session."""
    return write_synthetic_dataset(tmp_path_factory.mktemp("synthetic") / "data", 40, seed=0)


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray instance (4 logical CPUs, 1 GiB object store) for one test module.

    Reuses a running instance (then leaves it running); shuts down one it started.
    """
    import ray

    from ecglm.utils.ray_env import init_ray

    started = not ray.is_initialized()
    init_ray(num_cpus=4, object_store_bytes=1 << 30)
    yield ray
    if started:
        ray.shutdown()
