"""Fixtures for the serving tests: a tiny trained-looking checkpoint served on a free port."""

from __future__ import annotations

import time
from typing import Iterator

import pytest

from ecglm.serving.launch import start, stop
from ecglm.train.run import prepare
from tests.helpers import MAX_BODY_BYTES, Served, free_port, tiny_config, write_checkpoint


@pytest.fixture(scope="module")
def served(ray_session, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """Shards + retrieval (tiny synthetic config), a checkpoint, and the app started with
    :func:`ecglm.serving.launch.start`; stopped after the module."""
    root = tmp_path_factory.mktemp("serving")
    cfg = tiny_config(root, f"serve.port={free_port()}", f"serve.max_body_bytes={MAX_BODY_BYTES}")
    prep = prepare(cfg)
    cfg = prep.cfg
    checkpoint = write_checkpoint(cfg, root / "runs" / "tiny" / "run0" / "checkpoint")
    t0 = time.perf_counter()
    url = start(cfg, checkpoint, prep.retrieval.folder, timeout_s=120)
    ready = time.perf_counter() - t0
    try:
        yield Served(url, cfg, prep, checkpoint, ready)
    finally:
        stop()
