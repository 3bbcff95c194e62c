"""Serving a report-generation preset (MEIT at tiny size: temporal_conv + kv_prefix): the
served report equals offline evaluation's generation for the same record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest
import requests

from ecglm.config import load_config
from tests.helpers import MAX_BODY_BYTES, Served, free_port, write_checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]  # the module's first test starts the app
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def served_report(ray_session, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    from ecglm.serving.launch import start, stop
    from ecglm.train.run import prepare

    root = tmp_path_factory.mktemp("serving-report")
    cfg = load_config(REPO / "jobs/configs/meit_reports.yaml", [
        f"data.synthetic_root={root}/synthetic", f"data.shard_dir={root}/shards",
        f"llm.cache_dir={root}/models", f"tracking.tracking_uri=sqlite:///{root}/mlflow.db",
        f"tracking.artifact_root={root}/artifacts", f"output_dir={root}/runs",
        f"serve.port={free_port()}", f"serve.max_body_bytes={MAX_BODY_BYTES}"], tiny=True)
    assert not cfg.retrieval.enabled  # MEIT prompts carry no retrieved reports
    prep = prepare(cfg)
    cfg = prep.cfg
    checkpoint = write_checkpoint(cfg, root / "runs" / "meit" / "run0" / "checkpoint")
    url = start(cfg, checkpoint, prep.retrieval.folder, timeout_s=120)
    try:
        yield Served(url, cfg, prep, checkpoint, 0.0)
    finally:
        stop()


def test_served_report_equals_offline_generation(served_report: Served) -> None:
    from ecglm.models.from_checkpoint import load_model
    from ecglm.tasks import get_task
    from ecglm.tasks.encode import generate_texts
    from ecglm.train.run import split_rows

    rows = split_rows(served_report.prep, "test")[:2]
    offline = generate_texts(get_task("report"), load_model(served_report.cfg,
                             served_report.checkpoint), rows, served_report.cfg)
    for row, expected in zip(rows, offline):
        ecg = row.ecgs()[0]
        resp = requests.post(served_report.url, data=json.dumps(
            {"ecg": ecg.tolist(), "fs": served_report.cfg.data.fs}), timeout=60)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["task"] == "report" and body["report"] == expected
        assert body["retrieved_reports"] == []  # retrieval off: the retriever is not asked
        assert set(body["timings_ms"]) >= {"encode", "generate", "total"}


def test_report_endpoint_rejects_question_fields(served_report: Served) -> None:
    ecg = [[0.0] * 1000 for _ in range(12)]
    resp = requests.post(served_report.url, data=json.dumps(
        {"ecg": ecg, "fs": 100, "question": "Is it normal?"}), timeout=60)
    assert resp.status_code == 422 and resp.json()["field"] == "question"
