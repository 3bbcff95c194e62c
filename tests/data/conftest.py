"""Fixtures of the data-layer tests (``shared_data`` comes from tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecglm.data.synthetic import write_synthetic_dataset


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 40-record synthetic dataset (seed 0), written once per session."""
    return write_synthetic_dataset(tmp_path_factory.mktemp("synthetic") / "data", 40, seed=0)
