"""Fixtures shared by the feature tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def ludb(shared_data: Path) -> Path:
    """``../shared/data/ludb/data`` (skips when LUDB is absent)."""
    root = shared_data / "ludb" / "data"
    if not (root / "1.hea").is_file():
        pytest.skip(f"LUDB not found at {root}")
    return root
