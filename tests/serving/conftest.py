"""Fixtures for the serving tests: a tiny trained-looking QA checkpoint, registered in the
MLflow Model Registry and served from ``models:/tiny-served@champion`` on a free port, with a
report adapter of the same base (``serve.adapters``), a bearer token, filters on and short
LLM autoscaling delays."""

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
TOKEN = "test-token-7f3a9c"
REPORT_ADAPTER = "report"
SERVE_OVERRIDES = (
    # source records at 500 Hz, shards at 100 Hz: clients send what the source files hold
    "data.synthetic_fs=500",
    # filters on: a served ECG at another rate goes through the shards' exact preprocessing
    "data.normalize.baseline_filter=true", "data.normalize.powerline_hz=50",
    # the LLM scales 1 -> 2 under load within seconds and back when idle
    "serve.llm.min_replicas=1", "serve.llm.max_replicas=2",
    "serve.llm.target_ongoing_requests=1", "serve.llm.upscale_delay_s=0.5",
    "serve.llm.downscale_delay_s=3", "serve.llm.metrics_interval_s=0.5",
    "serve.llm.look_back_period_s=1", "serve.llm.max_batch_size=4",
    "serve.llm.max_ongoing_requests=8",
)


@pytest.fixture(scope="module")
def served(ray_session, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """Shards + retrieval (tiny synthetic config) and a checkpoint logged to an MLflow run of
    the fixture's tracking store with its pyfunc model, registered as ``tiny-served``
    (alias ``champion``); a report adapter checkpoint of the same base (another
    perturbation); the app is started from ``models:/tiny-served@champion`` the way
    ``ecglm serve`` does (:func:`ecglm.recipes.serve.start_prepared`); stopped after the
    module. ``Served.checkpoint`` is the folder the reference resolved to;
    ``Served.adapters["report"]`` the adapter (its own config and data preparation)."""
    root = tmp_path_factory.mktemp("serving")
    (root / "token").write_text(TOKEN + "\n")
    report_cfg = tiny_config(root, "task=report", *SERVE_OVERRIDES)
    report_prep = prepare(report_cfg)
    report_ckpt = write_checkpoint(report_prep.cfg, root / "runs" / "tiny-report" / "checkpoint",
                                   perturb_seed=99)
    cfg = tiny_config(root, f"serve.port={free_port()}", f"serve.max_body_bytes={MAX_BODY_BYTES}",
                      f"serve.token_file={root}/token",
                      f"serve.adapters={{{REPORT_ADAPTER}: {report_ckpt}}}", *SERVE_OVERRIDES)
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
    url, checkpoint = start_prepared(prep, SERVED_REF, timeout_s=180)
    ready = time.perf_counter() - t0
    headers = {"Authorization": f"Bearer {TOKEN}"}
    adapter = Served(url, report_prep.cfg, report_prep, report_ckpt, ready,
                     dict(headers, serve_multiplexed_model_id=REPORT_ADAPTER))
    try:
        yield Served(url, cfg, prep, checkpoint, ready, headers, {REPORT_ADAPTER: adapter})
    finally:
        stop()


@pytest.fixture
def session(served: Served) -> Iterator[object]:
    """A ``requests`` session sending the bearer token."""
    import requests

    with requests.Session() as s:
        s.headers.update(served.headers)
        yield s


