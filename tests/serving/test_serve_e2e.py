"""Ray Serve end to end: real HTTP requests against the deployed graph on the tiny config,
started from the registered ``models:/tiny-served@champion``.

The key property: the served answer for an ECG + question + options is exactly what offline
evaluation (:func:`ecglm.evaluation.qa.predict`) generates for the same QA row, including the
retrieved reports.
"""

from __future__ import annotations

import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
import requests

from ecglm.data.records import LEADS
from ecglm.data.rows import QARow
from ecglm.models.from_checkpoint import load_model
from ecglm.retrieval.index import ReportIndex
from ecglm.tasks import get_task
from ecglm.tasks.qa import predict
from ecglm.tracking.registry import resolve
from ecglm.train.run import split_rows
from tests.helpers import MAX_BODY_BYTES, Served
from tests.serving.conftest import SERVED_MODEL, SERVED_REF

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]  # the module's first test starts the app

TIMEOUT_S = 60


def _body(row: QARow, fs: int) -> dict[str, Any]:
    return {"ecg": row.ecgs()[0].tolist(), "fs": fs, "question": row.question,
            "options": list(row.options)}


def _post(url: str, body: Any) -> requests.Response:
    """POST JSON written by :func:`json.dumps` (``requests`` refuses NaN)."""
    return requests.post(url, data=json.dumps(body), timeout=TIMEOUT_S,
                         headers={"Content-Type": "application/json"})


def _single_ecg_rows(served: Served, split: str, n: int) -> list[QARow]:
    rows = [r for r in split_rows(served.prep, split) if r.n_ecg == 1]
    assert len(rows) >= n, f"tiny data set: fewer than {n} single-ECG {split} rows"
    return rows[:n]


@pytest.fixture(scope="module")
def offline(served: Served) -> Iterator[Any]:
    """The same checkpoint loaded in this process, as evaluation loads it."""
    yield load_model(served.cfg, served.checkpoint)


def test_health_and_routes(served: Served) -> None:
    assert served.url.startswith("http://127.0.0.1:")
    resp = requests.get(served.url + "healthz", timeout=TIMEOUT_S)
    assert resp.status_code == 200 and resp.json() == {"status": "ok"}
    assert requests.get(served.url, timeout=TIMEOUT_S).status_code == 405
    missing = requests.post(served.url + "nope", data=b"{}", timeout=TIMEOUT_S)
    assert missing.status_code == 404 and missing.json()["field"] == "path"


def test_answer_equals_offline_evaluation(served: Served, offline: Any) -> None:
    rows = _single_ecg_rows(served, "test", 3)
    latencies = []
    for row in rows:
        t0 = time.perf_counter()
        resp = _post(served.url, _body(row, served.cfg.data.fs))
        latencies.append(time.perf_counter() - t0)
        assert resp.status_code == 200, resp.text
        got = resp.json()
        expected = predict(get_task("qa"), offline, [row], served.cfg)[0]
        assert got["generated"] == expected.generated
        assert got["answer"] == expected.parsed
        assert got["options"] == list(row.options)
        # retrieval: the same reports the offline neighbours give, best first
        reports = [h["report"] for h in got["retrieved_reports"]]
        assert reports == list(row.retrieved_reports)
        assert len(reports) == served.cfg.retrieval.top_k
        scores = [h["score"] for h in got["retrieved_reports"]]
        assert scores == sorted(scores, reverse=True)
        assert row.ecg_ids[0] not in {h["ecg_id"] for h in got["retrieved_reports"]}
        assert set(got["timings_ms"]) >= {"validate", "encode", "retrieve", "generate", "total"}
    print(f"\n[serve] ready in {served.ready_s:.1f} s; request latency median "
          f"{statistics.median(latencies) * 1000:.0f} ms over {len(latencies)} requests")


def test_training_record_never_retrieves_itself(served: Served) -> None:
    index = ReportIndex.load(served.prep.retrieval.folder)
    row = _single_ecg_rows(served, "train", 1)[0]
    own = row.ecg_ids[0]
    own_patient = row.patient_ids[0]
    resp = _post(served.url, _body(row, served.cfg.data.fs))
    assert resp.status_code == 200, resp.text
    hits = resp.json()["retrieved_reports"]
    ids = [h["ecg_id"] for h in hits]
    assert own not in ids
    # same exclusion rule as the offline neighbours (own record and, here, own patient)
    assert served.cfg.retrieval.exclude_same_patient
    assert not set(ids) & _patient_records(index, own_patient)
    assert [h["report"] for h in hits] == list(row.retrieved_reports)


def _patient_records(index: ReportIndex, patient: int) -> set[int]:
    """ECG ids of ``patient`` in the index (via a full search, public API only)."""
    hits = index.search(np.ones((1, index.dim), np.float32), len(index))[0]
    return {h.ecg_id for h in hits if h.patient_id == patient}


def test_concurrent_requests_are_batched_with_identical_answers(served: Served) -> None:
    rows = _single_ecg_rows(served, "test", 4)
    bodies = [_body(r, served.cfg.data.fs) for r in rows]
    sequential = [_post(served.url, b).json()["generated"] for b in bodies]
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(lambda b: _post(served.url, b), bodies))
    assert [r.status_code for r in parallel] == [200] * 4
    assert [r.json()["generated"] for r in parallel] == sequential


def test_yes_no_question_gets_default_options(served: Served) -> None:
    row = _single_ecg_rows(served, "test", 1)[0]
    body = _body(row, served.cfg.data.fs)
    body.pop("options")
    body["question"] = "Does this ECG show sinus rhythm?"
    resp = _post(served.url, body)
    assert resp.status_code == 200, resp.text
    assert resp.json()["options"] == ["yes", "no", "not sure"]
    body["question"] = "Which leads show ST elevation?"
    resp = _post(served.url, body)
    assert resp.status_code == 422 and resp.json()["field"] == "options"


def test_invalid_requests(served: Served) -> None:
    row = _single_ecg_rows(served, "test", 1)[0]
    good = _body(row, served.cfg.data.fs)

    eleven = dict(good, ecg=good["ecg"][:11])
    resp = _post(served.url, eleven)
    assert resp.status_code == 422
    assert resp.json()["field"] == "ecg"
    assert "expected 12 leads, got 11" in resp.json()["error"]

    nan = dict(good, ecg=[list(lead) for lead in good["ecg"]])
    nan["ecg"][LEADS.index("V3")][10] = float("nan")
    resp = _post(served.url, nan)
    assert resp.status_code == 422 and "V3" in resp.json()["error"]

    resp = _post(served.url, dict(good, fs=5000))
    assert resp.status_code == 422 and resp.json()["field"] == "fs"

    resp = requests.post(served.url, data=b"{not json", timeout=TIMEOUT_S)
    assert resp.status_code == 400 and resp.json()["field"] == "body"

    # too large: declared by Content-Length, and streamed without one (chunked)
    big = b" " * (MAX_BODY_BYTES + 1)
    resp = requests.post(served.url, data=big, timeout=TIMEOUT_S)
    assert resp.status_code == 413 and resp.json()["field"] == "body"
    resp = requests.post(served.url, data=iter([big[:100_000]] * 4), timeout=TIMEOUT_S)
    assert resp.status_code == 413

    # the server still answers normally afterwards
    assert _post(served.url, good).status_code == 200


# ------------------------------------------------------------------------------------------------
# acceptance (issue 11): models:/tiny-served@champion loaded by Serve (the fixture starts the app
# from that reference) and by mlflow.pyfunc gives identical answers. Lives in this module so it
# shares its Serve start-up.
# ------------------------------------------------------------------------------------------------

def test_served_answers_equal_registered_pyfunc(served: Served,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    uri = served.cfg.tracking.tracking_uri
    version = resolve(uri, SERVED_REF)
    assert version.name == SERVED_MODEL and version.aliases == ("champion",)
    rows = [r for r in split_rows(served.prep, "test") if r.n_ecg == 1][:3]
    assert len(rows) == 3
    bodies = [{"ecg": r.ecgs()[0].tolist(), "fs": served.cfg.data.fs, "question": r.question,
               "options": list(r.options)} for r in rows]
    bodies[2].pop("options")  # a yes/no question may leave the options out
    bodies[2]["question"] = "Does this ECG show sinus rhythm?"
    http = []
    for body in bodies:
        resp = requests.post(served.url, data=json.dumps(body), timeout=60,
                             headers={"Content-Type": "application/json"})
        assert resp.status_code == 200, resp.text
        http.append(resp.json())

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # mlflow.pyfunc resolves models:/ there
    model = mlflow.pyfunc.load_model(SERVED_REF)
    # a request without options: None in that cell (MLflow's schema check refuses NaN)
    frame = pd.DataFrame([{"options": None, **b, "fs": float(b["fs"])} for b in bodies])
    got = model.predict(frame).to_dict("records")
    assert len(got) == len(http)
    for served_body, local in zip(http, got):
        assert local["generated"] == served_body["generated"]
        assert list(local["answer"]) == served_body["answer"]
        assert list(local["options"]) == served_body["options"]
        assert [(h["ecg_id"], h["report"]) for h in local["retrieved_reports"]] == [
            (h["ecg_id"], h["report"]) for h in served_body["retrieved_reports"]]
        assert [h["score"] for h in local["retrieved_reports"]] == pytest.approx(
            [h["score"] for h in served_body["retrieved_reports"]], abs=1e-5)
    assert got[2]["options"] == ["yes", "no", "not sure"]
