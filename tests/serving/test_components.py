"""Serving pieces that need no running Ray: retrieval rule, routing, body reading, app args."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
import torch
from ray.serve import Application
from starlette.requests import Request

from ecglm.config import load_config
from ecglm.data.rows import QARow
from ecglm.models.prompting import build_prompt
from ecglm.retrieval.index import ReportIndex
from ecglm.serving.app import AppArgsError, build_app, resolve_app_args
from ecglm.tracking.registry import RegistryRefError
from ecglm.serving.deployments import retrieve
from ecglm.serving.ingress import read_body, sse, wants_stream
from ecglm.serving.launch import base_url
from ecglm.serving.parts import serve_prompt
from ecglm.serving.validation import RequestError
from ecglm.tasks.base import serving_row

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "jobs" / "configs" / "tiny.yaml"


# ------------------------------------------------------------------------------------------------
# retrieval rule
# ------------------------------------------------------------------------------------------------

@pytest.fixture
def index() -> tuple[ReportIndex, np.ndarray]:
    """6 records of 3 patients (ids 10..15, patient = id // 2) with random 8-d embeddings."""
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(6, 8)).astype(np.float32)
    ids = list(range(10, 16))
    idx = ReportIndex(8)
    idx.add(emb, ids, [f"report {i}" for i in ids], [i // 2 for i in ids])
    return idx, emb


def test_unknown_query_gets_plain_top_k(index: tuple[ReportIndex, np.ndarray]) -> None:
    idx, emb = index
    query = emb[0] + 0.3 * emb[3]  # close to records 10 and 13 but none of them
    hits = retrieve(idx, query, 3, exclude_same_patient=True)
    assert [h.ecg_id for h in hits] == [h.ecg_id for h in idx.search(query[None], 3)[0]]
    assert hits[0].ecg_id == 10 and hits[0].score < 0.999


@pytest.mark.parametrize("exclude_same_patient", [True, False])
def test_indexed_record_never_gets_itself_back(index: tuple[ReportIndex, np.ndarray],
                                               exclude_same_patient: bool) -> None:
    idx, emb = index
    hits = retrieve(idx, emb[2] * 3.0, 5, exclude_same_patient)  # record 12 (scale-invariant)
    ids = [h.ecg_id for h in hits]
    assert 12 not in ids
    if exclude_same_patient:
        assert 13 not in ids and len(ids) == 4  # patient 6 owns 12 and 13
    else:
        assert 13 in ids and len(ids) == 5
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


# ------------------------------------------------------------------------------------------------
# HTTP helpers (real Starlette requests)
# ------------------------------------------------------------------------------------------------

def _request(path: str = "/", root_path: str = "", body_chunks: tuple[bytes, ...] = (),
             content_length: int | None = None, query_string: bytes = b"",
             accept: str | None = None) -> Request:
    headers = [] if content_length is None else [(b"content-length",
                                                  str(content_length).encode())]
    if accept is not None:
        headers.append((b"accept", accept.encode()))
    scope = {"type": "http", "method": "POST", "path": path, "root_path": root_path,
             "headers": headers, "query_string": query_string}
    messages = [{"type": "http.request", "body": c, "more_body": i < len(body_chunks) - 1}
                for i, c in enumerate(body_chunks)] or [{"type": "http.request", "body": b""}]
    received: list[int] = []

    async def receive() -> dict:
        received.append(1)
        return messages[len(received) - 1]

    request = Request(scope, receive)
    request.state.received = received
    return request


def test_stream_flag_and_event_format() -> None:
    assert wants_stream(_request(query_string=b"stream=true"))
    assert not wants_stream(_request(query_string=b"stream=0"))
    assert wants_stream(_request(accept="text/event-stream"))
    assert sse("token", {"text": "sinus"}) == b'event: token\ndata: {"text":"sinus"}\n\n'


def test_read_body_joins_chunks() -> None:
    req = _request(body_chunks=(b'{"a"', b": 1}"))
    assert asyncio.run(read_body(req, 100)) == b'{"a": 1}'


def test_read_body_refuses_a_declared_large_body_without_reading() -> None:
    req = _request(body_chunks=(b"x" * 10,), content_length=101)
    with pytest.raises(RequestError) as exc:
        asyncio.run(read_body(req, 100))
    assert exc.value.status == 413
    assert req.state.received == []


def test_read_body_stops_at_the_first_chunk_over_the_limit() -> None:
    req = _request(body_chunks=(b"x" * 60, b"x" * 60, b"x" * 60))  # chunked: no length header
    with pytest.raises(RequestError) as exc:
        asyncio.run(read_body(req, 100))
    assert exc.value.status == 413
    assert len(req.state.received) == 2


# ------------------------------------------------------------------------------------------------
# prompt, URL and application arguments
# ------------------------------------------------------------------------------------------------

def test_prompt_is_the_evaluation_prompt() -> None:
    cfg = load_config(TINY)
    tok = None  # llm.use_chat_template is off in tiny.yaml: the tokenizer is not consulted
    row = serving_row(QARow, question="Which leads?", options=("V2", "V1", "none"))
    text = serve_prompt(cfg, tok, row, ["first report", "second"])
    assert text == build_prompt("Which leads?", ["V2", "V1", "none"], ["first report"], 1)
    # retrieval switched off: no reference reports in the prompt, as in evaluation
    off = load_config(TINY, ["retrieval.enabled=false"])
    row = serving_row(QARow, question="Which leads?", options=("V2",))
    assert serve_prompt(off, tok, row, ["first report"]) == build_prompt(
        "Which leads?", ["V2"], [], 1)


@pytest.mark.parametrize("host, prefix, url", [
    ("127.0.0.1", "/", "http://127.0.0.1:8011/"),
    ("0.0.0.0", "/", "http://127.0.0.1:8011/"),
    ("127.0.0.1", "/ecg", "http://127.0.0.1:8011/ecg/"),
    ("::1", "/ecg/", "http://[::1]:8011/ecg/"),
])
def test_base_url(host: str, prefix: str, url: str) -> None:
    cfg = load_config(TINY, [f"serve.host='{host}'", f"serve.route_prefix={prefix}"])
    assert base_url(cfg) == url


def _fake_folders(tmp_path: Path) -> Path:
    """``run/checkpoint`` under ``tmp_path`` with an (empty) ``trainable.safetensors``."""
    ckpt = tmp_path / "run" / "checkpoint"
    ckpt.mkdir(parents=True)
    (ckpt / "trainable.safetensors").write_bytes(b"")
    return ckpt


def test_build_app_checks_its_arguments(tmp_path: Path) -> None:
    ckpt = _fake_folders(tmp_path)
    with pytest.raises(AppArgsError, match="unknown argument"):
        build_app({"config": str(TINY), "checkpoint": str(ckpt), "chekpoint": "x"})
    with pytest.raises(AppArgsError, match="^checkpoint: required"):
        build_app({"config": str(TINY)})
    with pytest.raises(AppArgsError, match="checkpoint: folder .* not found"):
        build_app({"config": str(TINY), "checkpoint": str(tmp_path / "nope" / "checkpoint")})
    with pytest.raises(AppArgsError, match="retrieval: .* lacks index.faiss"):
        build_app({"config": str(TINY), "checkpoint": str(ckpt)})
    # a registry reference is not a folder: it goes to the registry (no such model here)
    with pytest.raises(RegistryRefError, match="tiny-none"):
        build_app({"config": str(TINY), "checkpoint": "models:/tiny-none@champion",
                   "overrides": f"tracking.tracking_uri=sqlite:///{tmp_path}/mlflow.db"})


def test_app_args_resolve_config_overrides_and_default_retrieval(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch
                                                                  ) -> None:
    ckpt = _fake_folders(tmp_path)
    monkeypatch.chdir(tmp_path)  # relative paths are taken from the current directory
    spec = resolve_app_args({"config": str(TINY), "checkpoint": "run/checkpoint",
                             "overrides": "serve.llm.max_replicas=3 retrieval.top_k=2"})
    assert spec.checkpoint_dir == ckpt.resolve()
    assert spec.retrieval_dir == (tmp_path / "run" / "retrieval").resolve()
    assert spec.cfg.serve.llm.max_replicas == 3 and spec.cfg.retrieval.top_k == 2
    assert Path(spec.cfg.llm.cache_dir).is_absolute()
    other = resolve_app_args({"config": str(TINY), "checkpoint": str(ckpt),
                              "retrieval": "elsewhere", "overrides": ["lora.r=2"]})
    assert other.retrieval_dir == tmp_path / "elsewhere" and other.cfg.lora.r == 2
    with pytest.raises(AppArgsError, match="overrides"):
        resolve_app_args({"config": str(TINY), "checkpoint": str(ckpt), "overrides": 3})


def test_build_app_returns_an_application(tmp_path: Path) -> None:
    ckpt = _fake_folders(tmp_path)
    retrieval = ckpt.parent / "retrieval"
    retrieval.mkdir()
    for name in ("index.faiss", "reports.json", "encoder.safetensors", "encoder.json"):
        (retrieval / name).write_bytes(b"")
    assert isinstance(build_app({"config": str(TINY), "checkpoint": str(ckpt)}), Application)


def test_deployment_options_follow_the_config() -> None:
    from ecglm.config.schema import DeploymentConfig
    from ecglm.serving.options import DeviceUnavailable, deployment_options, replica_device

    dep = DeploymentConfig(min_replicas=1, max_replicas=3, target_ongoing_requests=4,
                           upscale_delay_s=1, downscale_delay_s=5, num_cpus=0.5,
                           max_ongoing_requests=12, health_check_period_s=2)
    opts = deployment_options(dep)
    assert opts["ray_actor_options"] == {"num_cpus": 0.5, "num_gpus": 0.0}
    assert opts["autoscaling_config"]["max_replicas"] == 3
    assert opts["autoscaling_config"]["upscale_delay_s"] == 1
    assert opts["max_ongoing_requests"] == 12 and opts["health_check_period_s"] == 2
    assert replica_device(dep).type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(DeviceUnavailable, match="num_gpus=1"):
            replica_device(DeploymentConfig(num_gpus=1))
