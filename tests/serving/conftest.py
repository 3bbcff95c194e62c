"""Fixtures for the serving tests: a tiny trained-looking checkpoint, registered in the MLflow
Model Registry and served from ``models:/tiny-served@champion`` on a free port."""

from __future__ import annotations

import time
from typing import Iterator

import pytest

from ecglm.checkpoint import ARTIFACT_PATH
from ecglm.recipes.serve import start_prepared
from ecglm.serving.launch import stop
from ecglm.serving.pyfunc import log_model
from ecglm.tracking import mlflow_run
from ecglm.tracking.registry import register_version
from ecglm.train.run import prepare
from tests.helpers import MAX_BODY_BYTES, Served, free_port, tiny_config, write_checkpoint

SERVED_MODEL = "tiny-served"
"""Registered model name of the served checkpoint (alias ``champion``)."""
SERVED_REF = f"models:/{SERVED_MODEL}@champion"


@pytest.fixture(scope="module")
def served(ray_session, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """Shards + retrieval (tiny synthetic config) and a checkpoint logged to an MLflow run of
    the fixture's tracking store with its pyfunc model, registered as ``tiny-served``
    (alias ``champion``); the app is started from ``models:/tiny-served@champion`` the way
    ``ecglm serve`` does (:func:`ecglm.recipes.serve.start_prepared`); stopped after the
    module. ``Served.checkpoint`` is the folder the reference resolved to."""
    root = tmp_path_factory.mktemp("serving")
    cfg = tiny_config(root, f"serve.port={free_port()}", f"serve.max_body_bytes={MAX_BODY_BYTES}")
    prep = prepare(cfg)
    cfg = prep.cfg
    written = write_checkpoint(cfg, root / "runs" / "tiny" / "run0" / "checkpoint")
    uri = cfg.tracking.tracking_uri
    run_id = mlflow_run.start_run(cfg, "served")
    mlflow_run.log_artifacts(uri, run_id, written, ARTIFACT_PATH)
    log_model(uri, run_id, written, cfg, prep.retrieval.folder)
    register_version(uri, run_id, SERVED_MODEL, "champion")
    mlflow_run.end_run(uri, run_id)
    t0 = time.perf_counter()
    url, checkpoint = start_prepared(prep, SERVED_REF, timeout_s=120)
    ready = time.perf_counter() - t0
    try:
        yield Served(url, cfg, prep, checkpoint, ready)
    finally:
        stop()
