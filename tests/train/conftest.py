"""Fixtures of the training tests (the tiny config itself is :func:`tests.helpers.tiny_config`)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One session folder shared by the tiny runs (synthetic data, shards and LLM built once)."""
    return tmp_path_factory.mktemp("tiny")
