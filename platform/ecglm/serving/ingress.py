"""The HTTP ingress of the ecglm application: a FastAPI app (OpenAPI schema at ``/docs``)
in front of ``ECGEncoder`` -> ``Retriever`` -> ``LLM``.

Routes (relative to ``serve.route_prefix``):

* ``GET /healthz``: 200 when every model deployment answers its health probe, else 503.
* ``POST /v1/answer`` (qa), ``POST /v1/report`` (report, grounding), ``POST /v1/classify``;
  ``POST /`` is the main model's route. The ECG comes as JSON (``ecg`` lists + ``fs``), as a
  multipart WFDB upload (``.hea`` + data file, task fields as form fields) or as raw
  little-endian int16/float32 bytes (``X-ECG-*`` headers, task fields as query parameters):
  :mod:`ecglm.serving.inputs`. ``?stream=true`` (or ``Accept: text/event-stream``) streams the
  generated text as server-sent events.
* The ``serve_multiplexed_model_id`` header picks an adapter of ``serve.adapters``.

Every response carries ``request_id`` (also Serve's ``X-Request-ID`` header and in every
replica log line) and ``timings_ms`` (``preprocess``, ``encode``, ``retrieve``, ``generate``,
``total``; also the ``ecglm_stage_ms`` Serve metric). With a token configured
(``ECGLM_SERVE_TOKEN`` or ``serve.token_file``), every route except ``/healthz`` and the API
docs answers 401 without ``Authorization: Bearer <token>``.

The ingress chains the handles without awaiting each hop: the ``DeploymentResponse`` of one
call is the argument of the next (Serve resolves it where it runs), so the prefix is computed
while the embedding is searched, and only the LLM's answer comes back here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, AsyncIterator, Optional

from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartParser
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from ecglm.config.schema import DataConfig, ServeConfig
from ecglm.serving.api_schema import openapi_body, response_model
from ecglm.serving.auth import Secret, bearer_ok
from ecglm.serving.catalog import MAIN_MODEL, ROUTES, ModelInfo
from ecglm.serving.deployments import TextPiece
from ecglm.serving.inputs import (
    RAW_FIELDS,
    WFDB_FIELDS,
    signal_from_raw,
    signal_from_wfdb,
    task_fields_from_query,
)
from ecglm.serving.messages import Generation
from ecglm.serving.telemetry import ServeMetrics, request_id
from ecglm.serving.validation import (
    ECGRequest,
    RequestError,
    check_body_size,
    check_content_length,
    parse_json,
    validate_request,
    validate_signal_request,
)
from ecglm.tasks import get_task

logger = logging.getLogger("ray.serve")

HEALTH_TIMEOUT_S = 10.0
MAX_UPLOAD_PARTS = 8
"""Form parts (files + fields) a multipart upload may hold."""
MODEL_HEADER = "serve_multiplexed_model_id"


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The raw body, refused with 413 as soon as ``Content-Length`` or the bytes read so far
    exceed ``max_bytes`` (nothing beyond the limit is buffered)."""
    check_content_length(request.headers.get("content-length"), max_bytes)
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        check_body_size(total, max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000.0, 2)


def _error(status: int, field: str, message: str, rid: str,
           headers: Optional[dict[str, str]] = None) -> JSONResponse:
    return JSONResponse({"error": message, "field": field, "request_id": rid},
                        status_code=status, headers=headers)


def wants_stream(request: Request) -> bool:
    """``?stream=true|1`` or ``Accept: text/event-stream``."""
    flag = request.query_params.get("stream", "").lower()
    return flag in ("1", "true", "yes") or "text/event-stream" in request.headers.get(
        "accept", "")


def sse(event: str, data: dict[str, Any]) -> bytes:
    """One server-sent event (``event:`` line, one-line JSON ``data:``, blank line)."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class IngressCore:
    """Everything the routes do, kept apart from FastAPI so the routes stay thin.

    Args:
        encoder, retriever, llm: handles of the model deployments.
        serve_cfg: ``serve`` (limits, auth file); data_cfg: the models' ECG format.
        models: model id -> :class:`ModelInfo` (``""``: the main model).
        token: the bearer token, or None (no auth).
    """

    def __init__(self, encoder: DeploymentHandle, retriever: DeploymentHandle,
                 llm: DeploymentHandle, serve_cfg: ServeConfig, data_cfg: DataConfig,
                 models: dict[str, ModelInfo], token: Optional[Secret]) -> None:
        self.encoder = encoder
        self.retriever = retriever
        self.llm = llm
        self.serve_cfg = serve_cfg
        self.data_cfg = data_cfg
        self.models = models
        self.token = token
        self.metrics = ServeMetrics()

    # -- checks -----------------------------------------------------------------------------

    def authorize(self, request: Request) -> None:
        """Raises RequestError 401 when a token is configured and the request lacks it."""
        if self.token is not None and not bearer_ok(request.headers.get("authorization"),
                                                    self.token):
            raise RequestError(401, "authorization", "missing or invalid bearer token "
                                                     "(send 'Authorization: Bearer <token>')")

    def model_for(self, request: Request, route: Optional[str]) -> tuple[str, ModelInfo]:
        """The requested model (header ``serve_multiplexed_model_id``) and its info; it must
        serve ``route`` (None: the main model's route, ``POST /``).

        Raises:
            RequestError: 404 unknown model or a route its task does not serve.
        """
        name = request.headers.get(MODEL_HEADER, "") or MAIN_MODEL
        info = self.models.get(name)
        if info is None:
            known = sorted(n for n in self.models if n)
            raise RequestError(404, MODEL_HEADER, f"unknown model {name!r}; adapters: {known}")
        if route is not None and info.route != route:
            label = f"adapter {name!r}" if name else "the main model"
            raise RequestError(404, "path", f"{label} serves task {info.task!r}: POST "
                                            f"/v1/{info.route}")
        return name, info

    # -- inputs -----------------------------------------------------------------------------

    async def parse(self, request: Request, info: ModelInfo) -> ECGRequest:
        """Body (JSON, multipart WFDB or raw bytes) -> validated, preprocessed request."""
        body = await read_body(request, self.serve_cfg.max_body_bytes)
        kind = request.headers.get("content-type", "application/json").split(";")[0].strip()
        fields_allowed = get_task(info.task).request_fields
        if kind == "multipart/form-data":
            files, fields = await self._form(request, body)
            x, fs = signal_from_wfdb(files, self.serve_cfg.max_body_bytes)
            return validate_signal_request(x, fs, task_fields_from_query(fields, fields_allowed),
                                           self.serve_cfg, self.data_cfg, info.task,
                                           names=WFDB_FIELDS)
        if kind == "application/octet-stream":
            x, fs = signal_from_raw(body, request.headers)
            fields = {k: request.query_params.getlist(k) for k in request.query_params
                      if k != "stream"}
            return validate_signal_request(x, fs, task_fields_from_query(fields, fields_allowed),
                                           self.serve_cfg, self.data_cfg, info.task,
                                           names=RAW_FIELDS)
        if kind not in ("application/json", ""):
            raise RequestError(415, "content-type", f"unsupported content type {kind!r}; send "
                                                    "application/json, multipart/form-data "
                                                    "(WFDB) or application/octet-stream (raw)")
        return validate_request(parse_json(body), self.serve_cfg, self.data_cfg, info.task)

    async def _form(self, request: Request, body: bytes
                    ) -> tuple[dict[str, bytes], dict[str, list[str]]]:
        async def chunks() -> AsyncIterator[bytes]:
            yield body

        try:
            form = await MultiPartParser(request.headers, chunks(), max_files=MAX_UPLOAD_PARTS,
                                         max_fields=MAX_UPLOAD_PARTS).parse()
        except Exception as exc:  # noqa: BLE001 - any parser failure is the client's body
            raise RequestError(400, "body", f"malformed multipart body: {exc}") from None
        files: dict[str, bytes] = {}
        fields: dict[str, list[str]] = {}
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                name = value.filename or key
                if name in files:
                    raise RequestError(422, key, f"file {name!r} uploaded twice")
                files[name] = await value.read()
            else:
                fields.setdefault(key, []).append(str(value))
        return files, fields

    # -- answering --------------------------------------------------------------------------

    def _chain(self, req: ECGRequest, model: str, info: ModelInfo) -> tuple[Any, Any]:
        """Start encode -> (retrieve): the prefix and retrieval responses, not awaited."""
        encoder = self.encoder.options(multiplexed_model_id=model) if model else self.encoder
        prefix = encoder.prefix.remote(req.signal)
        retrieved = None
        if info.retrieval:  # presets without retrieval (MEIT, GEM) never see reports
            retrieved = self.retriever.remote(self.encoder.embed.remote(req.signal))
        return prefix, retrieved

    def _llm(self, model: str, stream: bool = False) -> DeploymentHandle:
        handle = self.llm.options(multiplexed_model_id=model) if model else self.llm
        return handle.options(stream=True) if stream else handle

    @staticmethod
    def _body(gen: Generation, timings: dict[str, float], rid: str, model: str
              ) -> dict[str, Any]:
        reports = [{"ecg_id": h.ecg_id, "report": h.report, "score": round(h.score, 6)}
                   for h in gen.hits]
        return {**gen.body, "retrieved_reports": reports, "model": model or "main",
                "request_id": rid, "timings_ms": timings}

    async def handle(self, request: Request, route: Optional[str]) -> Response:
        """One POST: auth, model, parse, encode -> retrieve -> generate (or stream)."""
        t0 = time.perf_counter()
        rid = request_id()
        name = route or "main"
        try:
            self.authorize(request)
            model, info = self.model_for(request, route)
            name = info.route
            req = await self.parse(request, info)
            timings = {"preprocess": _ms(t0)}
            prefix, retrieved = self._chain(req, model, info)
            if wants_stream(request):
                gen_stream = self._llm(model, stream=True).stream.remote(prefix, retrieved,
                                                                         req.row)
                return StreamingResponse(self._events(gen_stream, timings, t0, rid, model, name),
                                         media_type="text/event-stream",
                                         headers={"Cache-Control": "no-cache"})
            gen: Generation = await self._llm(model).remote(prefix, retrieved, req.row)
            timings.update(gen.timings)
            timings["total"] = _ms(t0)
            self.metrics.observe(name, 200, timings)
            logger.info("ecglm: %s model=%s 200 in %.1f ms", name, model or "main",
                        timings["total"])
            return JSONResponse(self._body(gen, timings, rid, model))
        except RequestError as err:
            self.metrics.observe(name, err.status, {})
            logger.info("ecglm: %s %d %s: %s", name, err.status, err.field, err.message)
            headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
            return _error(err.status, err.field, err.message, rid, headers)
        except Exception:  # noqa: BLE001 - the client gets a 500, the log gets the traceback
            self.metrics.observe(name, 500, {})
            logger.exception("ecglm: request failed")
            return _error(500, "server", "internal error while answering; see the Serve logs "
                                         f"(request id {rid})", rid)

    async def _events(self, stream: Any, timings: dict[str, float], t0: float, rid: str,
                      model: str, route: str) -> AsyncIterator[bytes]:
        """``event: token`` per text piece, then ``event: done`` with the full response body
        (or ``event: error``)."""
        try:
            async for item in stream:
                if isinstance(item, TextPiece):
                    yield sse("token", {"text": item.text})
                else:
                    timings.update(item.timings)
                    timings["total"] = _ms(t0)
                    self.metrics.observe(route, 200, timings)
                    yield sse("done", self._body(item, timings, rid, model))
        except Exception:  # noqa: BLE001 - headers are sent: report in-band
            logger.exception("ecglm: streamed request failed")
            self.metrics.observe(route, 500, {})
            yield sse("error", {"error": "internal error while generating", "request_id": rid})

    async def health(self) -> Response:
        """200 when every model deployment answers its probe within the timeout."""
        probes = {"encoder": self.encoder.health.remote(), "llm": self.llm.health.remote()}
        if any(m.retrieval for m in self.models.values()):
            probes["retriever"] = self.retriever.health.remote()
        failed = {}
        for name, probe in probes.items():
            try:
                await asyncio.wait_for(probe, HEALTH_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - any failure makes the app unhealthy
                failed[name] = f"{type(exc).__name__}: {exc}"[:300]
        if failed:
            return JSONResponse({"status": "unhealthy", "failed": failed}, status_code=503)
        return JSONResponse({"status": "ok", "models": sorted(n or "main" for n in self.models)})


def build_api(core: IngressCore) -> FastAPI:
    """The FastAPI app of one ingress replica (its routes close over ``core``)."""
    api = FastAPI(title="ecglm", version="1",
                  description="ECG-language model endpoint: question answering, reports, "
                              "grounded interpretation and classification from 12-lead ECGs.")

    @api.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return _error(exc.status_code, "path", str(exc.detail), request_id())

    @api.get("/healthz", summary="Readiness of every model deployment")
    async def healthz() -> Response:
        return await core.health()

    def add_route(route: str, tasks: list[str]) -> None:
        async def endpoint(request: Request) -> Response:
            return await core.handle(request, route)

        api.add_api_route(f"/v1/{route}", endpoint, methods=["POST"],
                          summary=f"{route}: tasks {', '.join(tasks)}",
                          openapi_extra=openapi_body(tasks),
                          responses={200: {"model": response_model(tasks)}})

    by_route: dict[str, list[str]] = {}
    for task, route in ROUTES.items():
        by_route.setdefault(route, []).append(task)
    for route, tasks in by_route.items():
        add_route(route, tasks)

    @api.post("/", summary="The main model's route (same as /v1/<its route>)",
              include_in_schema=False)
    async def root(request: Request) -> Response:
        return await core.handle(request, None)

    return api


@serve.deployment
@serve.ingress()
class Ingress:
    """HTTP entry point (see the module docstring)."""

    def __init__(self, encoder: DeploymentHandle, retriever: DeploymentHandle,
                 llm: DeploymentHandle, serve_cfg: ServeConfig, data_cfg: DataConfig,
                 models: dict[str, ModelInfo], token: Optional[Secret] = None) -> None:
        self.core = IngressCore(encoder, retriever, llm, serve_cfg, data_cfg, models, token)

    def __serve_build_asgi_app__(self) -> FastAPI:
        return build_api(self.core)
