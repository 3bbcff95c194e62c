"""Shared fixtures: environment for Ray/HF offline, repo paths, one local Ray per session.

Marks are checked: a test that uses a Ray-starting fixture (:data:`RAY_FIXTURES`) must be
marked ``slow`` (collection fails otherwise), and a test not marked ``slow`` fails if Ray was
started while it ran. Fixtures that may skip (data, WordNet, Java) come before the Ray
fixtures in a test's signature, so a skipped test starts nothing.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Iterator

import pytest

from ecglm.utils.ray_env import init_ray, set_process_env
from tests.helpers import REPO, SHARED_DATA

set_process_env()
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))

RAY_FIXTURES = frozenset({"ray_session", "tiny_eval", "served", "served_report"})
"""Fixtures that start Ray (directly or through ``ray_session``)."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse a test that starts Ray through a fixture but is not marked ``slow``."""
    unmarked = [item.nodeid for item in items
                if RAY_FIXTURES & set(getattr(item, "fixturenames", ()))
                and item.get_closest_marker("slow") is None]
    if unmarked:
        raise pytest.UsageError("tests that start Ray must be marked slow: "
                                + ", ".join(unmarked))


def _ray_running() -> bool:
    ray = sys.modules.get("ray")
    return bool(ray is not None and ray.is_initialized())


@pytest.fixture(autouse=True)
def _fast_tests_start_no_ray(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test not marked ``slow`` must not start Ray (checked after it ran)."""
    if request.node.get_closest_marker("slow") is not None:
        yield
        return
    before = _ray_running()
    yield
    if not before and _ray_running():
        pytest.fail(f"{request.node.nodeid} started Ray: mark it slow")


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
def ray_session() -> Iterator[ModuleType]:
    """One local Ray instance for the whole session (4 logical CPUs, 1 GiB object store),
    started by the first test that asks for it."""
    # deferred on purpose: only the slow tests that request this fixture pay for importing Ray
    import ray

    init_ray(num_cpus=4, object_store_bytes=1 << 30)
    yield ray
    ray.shutdown()
