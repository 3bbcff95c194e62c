"""Ray Serve end to end: real HTTP requests against the deployed graph on the tiny config,
started from the registered ``models:/tiny-served@champion`` with a report adapter, a bearer
token, filters on and fast LLM autoscaling (one app for the whole module: it starts once).

The key property: the served answer for an ECG + question + options is exactly what offline
evaluation (:func:`ecglm.tasks.qa.predict`) generates for the same QA row, including the
retrieved reports, whatever form the ECG arrives in (JSON, WFDB upload, raw bytes, another
sampling rate); each adapter answers like its own offline model; streaming gives the same text.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
import requests
import torch
import wfdb

from ecglm.data.records import LEADS
from ecglm.data.synthetic import record_relpath
from ecglm.data.rows import QARow
from ecglm.models.from_checkpoint import load_model
from ecglm.retrieval.index import ReportIndex
from ecglm.tasks import get_task
from ecglm.tasks.encode import generate_texts
from ecglm.tasks.qa import predict
from ecglm.serving.launch import APP_NAME
from ecglm.tracking.registry import resolve
from ecglm.train.run import split_rows
from tests.helpers import MAX_BODY_BYTES, Served
from tests.serving.conftest import SERVED_MODEL, SERVED_REF, TOKEN

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]  # the module's first test starts the app

TIMEOUT_S = 60
SOURCE_FS = 500
"""Rate of the synthetic source records (the tiny config trains at 100 Hz)."""


def _raw_record(served: Served, ecg_id: int) -> Path:
    """The row's source WFDB record as the synthetic PTB-XL layout stores it (500 Hz)."""
    base = Path(served.cfg.data.synthetic_root) / "ptbxl" / record_relpath(ecg_id, SOURCE_FS)
    assert base.with_suffix(".hea").is_file(), base
    return base


def _raw_ecg(served: Served, ecg_id: int) -> list[list[float]]:
    """The record as a client sends it: the source WFDB record (500 Hz, unfiltered) in mV.
    (The shard rows hold it filtered at 100 Hz; the server preprocesses what it gets.)"""
    base = _raw_record(served, ecg_id)
    signal, fields = wfdb.rdsamp(str(base))
    assert fields["fs"] == SOURCE_FS
    return signal.T.tolist()


def _body(served: Served, row: QARow) -> dict[str, Any]:
    return {"ecg": _raw_ecg(served, row.ecg_ids[0]), "fs": SOURCE_FS, "question": row.question,
            "options": list(row.options)}


def _post(served: Served, body: Any, path: str = "v1/answer",
          headers: dict[str, str] | None = None) -> requests.Response:
    """POST JSON written by :func:`json.dumps` (``requests`` refuses NaN), with the token."""
    return requests.post(served.url + path, data=json.dumps(body), timeout=TIMEOUT_S,
                         headers={"Content-Type": "application/json", **served.headers,
                                  **(headers or {})})


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
    resp = requests.get(served.url + "healthz", timeout=TIMEOUT_S)  # no token needed
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok", "models": ["main", "report"]}
    assert requests.get(served.url, timeout=TIMEOUT_S,
                        headers=served.headers).status_code == 405
    missing = requests.post(served.url + "nope", data=b"{}", timeout=TIMEOUT_S,
                            headers=served.headers)
    assert missing.status_code == 404 and missing.json()["field"] == "path"
    # the main model answers questions; reports need the report adapter
    row = _single_ecg_rows(served, "test", 1)[0]
    wrong = _post(served, _body(served, row), "v1/report")
    assert wrong.status_code == 404 and "/v1/answer" in wrong.json()["error"]
    unknown = _post(served, _body(served, row),
                    headers={"serve_multiplexed_model_id": "nope"})
    assert unknown.status_code == 404
    assert unknown.json()["field"] == "serve_multiplexed_model_id"


def test_openapi_schema_and_docs(served: Served) -> None:
    docs = requests.get(served.url + "docs", timeout=TIMEOUT_S)
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    schema = requests.get(served.url + "openapi.json", timeout=TIMEOUT_S).json()
    for route in ("/v1/answer", "/v1/report", "/v1/classify", "/healthz"):
        assert route in schema["paths"], route
    content = schema["paths"]["/v1/answer"]["post"]["requestBody"]["content"]
    assert set(content) == {"application/json", "multipart/form-data",
                            "application/octet-stream"}
    assert "question" in content["application/json"]["schema"]["properties"]


def test_bearer_token_required(served: Served) -> None:
    row = _single_ecg_rows(served, "test", 1)[0]
    data = json.dumps(_body(served, row))
    bare = requests.post(served.url + "v1/answer", data=data, timeout=TIMEOUT_S)
    assert bare.status_code == 401 and bare.json()["field"] == "authorization"
    assert bare.headers["WWW-Authenticate"] == "Bearer"
    for bad in ("Bearer wrong-token", f"Basic {TOKEN}", TOKEN, f"Bearer {TOKEN}x"):
        resp = requests.post(served.url + "v1/answer", data=data, timeout=TIMEOUT_S,
                             headers={"Authorization": bad})
        assert resp.status_code == 401, bad
        assert TOKEN not in resp.text
    good = requests.post(served.url + "v1/answer", data=data, timeout=TIMEOUT_S,
                         headers={"Authorization": f"bearer {TOKEN}"})
    assert good.status_code == 200, good.text


def test_request_id_in_every_response(served: Served) -> None:
    row = _single_ecg_rows(served, "test", 1)[0]
    resp = _post(served, _body(served, row), headers={"X-Request-ID": "abc-123"})
    assert resp.status_code == 200
    assert resp.json()["request_id"] == "abc-123" == resp.headers["X-Request-ID"]
    resp = _post(served, {"fs": 100})
    assert resp.status_code == 422
    assert resp.json()["request_id"] == resp.headers["X-Request-ID"] != ""


def test_answer_equals_offline_evaluation(served: Served, offline: Any) -> None:
    rows = _single_ecg_rows(served, "test", 3)
    latencies = []
    for row in rows:
        t0 = time.perf_counter()
        resp = _post(served, _body(served, row))
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
        assert set(got["timings_ms"]) >= {"preprocess", "encode", "retrieve", "generate",
                                          "total"}
        assert got["model"] == "main"
    print(f"\n[serve] ready in {served.ready_s:.1f} s; request latency median "
          f"{statistics.median(latencies) * 1000:.0f} ms over {len(latencies)} requests")


def test_training_record_never_retrieves_itself(served: Served) -> None:
    index = ReportIndex.load(served.prep.retrieval.folder)
    row = _single_ecg_rows(served, "train", 1)[0]
    own = row.ecg_ids[0]
    own_patient = row.patient_ids[0]
    resp = _post(served, _body(served, row))
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
    bodies = [_body(served, r) for r in rows]
    sequential = [_post(served, b).json()["generated"] for b in bodies]
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(lambda b: _post(served, b), bodies))
    assert [r.status_code for r in parallel] == [200] * 4
    assert [r.json()["generated"] for r in parallel] == sequential


def test_yes_no_question_gets_default_options(served: Served) -> None:
    row = _single_ecg_rows(served, "test", 1)[0]
    body = _body(served, row)
    body.pop("options")
    body["question"] = "Does this ECG show sinus rhythm?"
    resp = _post(served, body)
    assert resp.status_code == 200, resp.text
    assert resp.json()["options"] == ["yes", "no", "not sure"]
    body["question"] = "Which leads show ST elevation?"
    resp = _post(served, body)
    assert resp.status_code == 422 and resp.json()["field"] == "options"


def test_invalid_requests(served: Served) -> None:
    row = _single_ecg_rows(served, "test", 1)[0]
    good = _body(served, row)

    eleven = dict(good, ecg=good["ecg"][:11])
    resp = _post(served, eleven)
    assert resp.status_code == 422
    assert resp.json()["field"] == "ecg"
    assert "expected 12 leads, got 11" in resp.json()["error"]

    nan = dict(good, ecg=[list(lead) for lead in good["ecg"]])
    nan["ecg"][LEADS.index("V3")][10] = float("nan")
    resp = _post(served, nan)
    assert resp.status_code == 422 and "V3" in resp.json()["error"]

    resp = _post(served, dict(good, fs=5000))
    assert resp.status_code == 422 and resp.json()["field"] == "fs"

    resp = requests.post(served.url, data=b"{not json", timeout=TIMEOUT_S,
                         headers=served.headers)
    assert resp.status_code == 400 and resp.json()["field"] == "body"

    # too large: declared by Content-Length, and streamed without one (chunked)
    big = b" " * (MAX_BODY_BYTES + 1)
    resp = requests.post(served.url, data=big, timeout=TIMEOUT_S, headers=served.headers)
    assert resp.status_code == 413 and resp.json()["field"] == "body"
    resp = requests.post(served.url, data=iter([big[:100_000]] * (MAX_BODY_BYTES // 100_000 + 1)), timeout=TIMEOUT_S,
                         headers=served.headers)
    assert resp.status_code == 413

    # the server still answers normally afterwards
    assert _post(served, good).status_code == 200


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
                             headers={"Content-Type": "application/json", **served.headers})
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


# ------------------------------------------------------------------------------------------------
# issue 12: input forms, streaming, adapters, autoscaling, health checks
# ------------------------------------------------------------------------------------------------

def test_wfdb_upload_raw_bytes_and_json_at_500_hz_equal_offline(served: Served,
                                                                offline: Any) -> None:
    """The source record at 500 Hz (the shards hold it at 100 Hz, filtered) sent three ways
    gives the answer offline evaluation gives for the shard row."""
    row = _single_ecg_rows(served, "test", 1)[0]
    base = _raw_record(served, row.ecg_ids[0])
    record = wfdb.rdrecord(str(base), physical=False)
    assert record.fs == 500 and record.fs != served.cfg.data.fs
    fields = {"question": row.question, "options": json.dumps(list(row.options))}
    files = [("files", (p.name, p.read_bytes(), "application/octet-stream"))
             for p in (base.with_suffix(".hea"), base.with_suffix(".dat"))]
    upload = requests.post(served.url + "v1/answer", files=files, data=fields,
                           headers=served.headers, timeout=TIMEOUT_S)
    assert upload.status_code == 200, upload.text

    gain = float(record.adc_gain[0])
    assert all(g == gain for g in record.adc_gain) and not any(record.baseline)
    raw = requests.post(
        served.url + "v1/answer", data=record.d_signal.T.astype("<i2").tobytes(),
        params={"question": row.question, "options": list(row.options)},
        headers={**served.headers, "Content-Type": "application/octet-stream",
                 "X-ECG-Dtype": "int16", "X-ECG-Shape": f"12,{record.sig_len}",
                 "X-ECG-FS": "500", "X-ECG-Units-Per-MV": str(gain)}, timeout=TIMEOUT_S)
    assert raw.status_code == 200, raw.text

    mv = (record.d_signal.T / gain).tolist()
    as_json = _post(served, {"ecg": mv, "fs": 500, "question": row.question,
                             "options": list(row.options)})
    assert as_json.status_code == 200, as_json.text

    expected = predict(get_task("qa"), offline, [row], served.cfg)[0]
    for resp in (upload, raw, as_json):
        got = resp.json()
        assert got["generated"] == expected.generated
        assert got["answer"] == expected.parsed
        assert [h["report"] for h in got["retrieved_reports"]] == list(row.retrieved_reports)

    bad = requests.post(served.url + "v1/answer", files=files[:1], data=fields,
                        headers=served.headers, timeout=TIMEOUT_S)
    assert bad.status_code in (400, 422) and bad.json()["field"] in ("dat", "hea", "files")


def _sse(resp: requests.Response) -> list[tuple[str, dict[str, Any]]]:
    events, event = [], "message"
    for line in resp.iter_lines(decode_unicode=True):
        if line.startswith("event: "):
            event = line[len("event: "):]
        elif line.startswith("data: "):
            events.append((event, json.loads(line[len("data: "):])))
    return events


def test_streamed_report_equals_non_streamed(served: Served) -> None:
    adapter = served.adapters["report"]
    row = split_rows(adapter.prep, "test")[0]
    body = json.dumps({"ecg": _raw_ecg(served, row.ecg_ids[0]), "fs": SOURCE_FS})
    plain = requests.post(served.url + "v1/report", data=body, headers=adapter.headers,
                          timeout=TIMEOUT_S)
    assert plain.status_code == 200, plain.text
    with requests.post(served.url + "v1/report?stream=true", data=body, stream=True,
                       headers=adapter.headers, timeout=TIMEOUT_S) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = _sse(resp)
    tokens = [data["text"] for event, data in events if event == "token"]
    kinds = [event for event, _ in events]
    # the tiny random model's text has no spaces, so the word-level streamer sends it as one
    # piece here; tests/models/test_streaming.py shows several pieces for spaced text
    assert kinds[-1] == "done" and kinds.count("done") == 1 and len(tokens) >= 1
    done = events[-1][1]
    assert "".join(tokens).strip() == done["generated"] == plain.json()["generated"]
    assert done["report"] == plain.json()["report"] and done["model"] == "report"
    assert set(done["timings_ms"]) >= {"preprocess", "encode", "generate", "total"}


def test_adapters_answer_like_their_own_offline_models(served: Served, offline: Any) -> None:
    """One LLM replica base, two LoRA adapters picked per request (interleaved, concurrent):
    the report adapter equals its offline model, the main QA model equals its own."""
    adapter = served.adapters["report"]
    report_rows = split_rows(adapter.prep, "test")[:2]
    expected_reports = generate_texts(get_task("report"), load_model(adapter.cfg,
                                      adapter.checkpoint), report_rows, adapter.cfg)
    qa_rows = _single_ecg_rows(served, "test", 2)
    expected_qa = [p.generated for p in predict(get_task("qa"), offline, qa_rows, served.cfg)]

    def report(row: Any) -> requests.Response:
        return requests.post(served.url + "v1/report", timeout=TIMEOUT_S, headers=adapter.headers,
                             data=json.dumps({"ecg": _raw_ecg(served, row.ecg_ids[0]),
                                              "fs": SOURCE_FS}))

    jobs = [(report, r) for r in report_rows] + [
        (lambda r: _post(served, _body(served, r)), r) for r in qa_rows]
    order = [0, 2, 1, 3]  # interleave the two models in one burst
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {i: pool.submit(jobs[i][0], jobs[i][1]) for i in order}
        got = [futures[i].result() for i in range(4)]
    assert [r.status_code for r in got] == [200] * 4, [r.text for r in got]
    assert [r.json()["report"] for r in got[:2]] == expected_reports
    assert [r.json()["model"] for r in got] == ["report", "report", "main", "main"]
    assert [r.json()["generated"] for r in got[2:]] == expected_qa
    # different LoRA tensors: the same record gets another text from the other adapter
    assert expected_reports[0] != generate_texts(get_task("report"), offline, report_rows[:1],
                                                 adapter.cfg)[0]


def _running_replicas(deployment: str) -> int:
    from ray import serve

    status = serve.status().applications[APP_NAME].deployments[deployment]
    return int(status.replica_states.get("RUNNING", 0))


def test_llm_autoscales_up_under_load_and_down_when_idle(served: Served) -> None:
    rows = _single_ecg_rows(served, "test", 4)
    bodies = [_body(served, r) for r in rows]
    assert _running_replicas("LLM") == 1
    seen = [1]
    stop = threading.Event()

    def load(i: int) -> None:
        while not stop.is_set():
            _post(served, bodies[i % len(bodies)])

    with ThreadPoolExecutor(max_workers=6) as pool:
        workers = [pool.submit(load, i) for i in range(6)]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and seen[-1] < 2:
            time.sleep(0.5)
            seen.append(_running_replicas("LLM"))
        stop.set()
        for w in workers:
            w.result()
    assert max(seen) == 2, f"LLM replicas seen under load: {seen}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _running_replicas("LLM") > 1:
        time.sleep(0.5)
    assert _running_replicas("LLM") == 1, "no scale-down after the load stopped"
    assert _post(served, bodies[0]).status_code == 200


def test_health_check_replaces_a_broken_replica(served: Served) -> None:
    """An LLM replica whose weights go bad (NaN) fails Serve's check_health (a one-token
    forward pass) and is replaced by a fresh, healthy one."""
    from ray import serve

    from ecglm.serving.catalog import resolve_models
    from ecglm.serving.deployments import LLM

    class BreakableLLM(LLM.func_or_class):  # local class: shipped to the replica by value
        def pid(self) -> int:
            return os.getpid()

        def corrupt(self) -> None:
            with torch.no_grad():
                for p in self.part.model.parameters():
                    p.fill_(float("nan"))

    models = resolve_models(served.cfg, served.checkpoint)
    deployment = serve.deployment(BreakableLLM).options(
        name="BreakableLLM", num_replicas=1, health_check_period_s=1,
        health_check_timeout_s=10, ray_actor_options={"num_cpus": 0.25})
    handle = serve.run(deployment.bind(models, served.cfg.serve.llm), name="breakable",
                       route_prefix=None)
    try:
        first = handle.pid.remote().result(timeout_s=TIMEOUT_S)
        handle.corrupt.remote().result(timeout_s=TIMEOUT_S)
        deadline = time.monotonic() + 90
        current = first
        while time.monotonic() < deadline and current == first:
            time.sleep(1)
            try:
                current = handle.pid.remote().result(timeout_s=10)
            except Exception:  # noqa: BLE001 - the broken replica is going away
                continue
        assert current != first, "the broken replica was not replaced"
        assert handle.health.remote().result(timeout_s=TIMEOUT_S) is True
    finally:
        serve.delete("breakable")
