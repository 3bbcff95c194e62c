"""Ray Serve deployments: ``Ingress`` (HTTP) -> ``ECGEncoder`` -> ``Retriever`` -> ``LLM``.

Each deployment loads only its own part:

* ``ECGEncoder`` holds the trained ECG front end (encoder + mapper,
  :func:`ecglm.models.load_front_end_from_checkpoint`, no LLM) for the prefix
  (:meth:`ECGEncoder.prefix`) and the *retrieval* encoder saved next to the index (the one the
  index was built with, not the fine-tuned one) for the embedding (:meth:`ECGEncoder.embed`).
* ``Retriever`` returns the top-k reports of similar training ECGs from the FAISS index.
* ``LLM`` holds the LLM side only (LLM + LoRA + fusion, :func:`ecglm.models.load_prefix_lm`),
  builds the evaluation prompt (options in the given order, top-1 report) and decodes greedily
  from the prefix; requests are micro-batched with ``@serve.batch``.
* ``Ingress`` checks the body size before reading it, validates the JSON
  (:mod:`ecglm.serving.validation`) and chains the handles without awaiting each hop: the
  ``DeploymentResponse`` of one call is the argument of the next (Serve resolves it where it
  runs), so the prefix is computed while the embedding is searched, and only the LLM's answer
  comes back to the ingress.

So the served answer is the one offline evaluation (:func:`ecglm.evaluation.qa.predict`) gives
for the same ECG, question and options.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Optional

import numpy as np
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ecglm.config import ExperimentConfig
from ecglm.config.schema import DataConfig, ServeConfig
from ecglm.data.rows import ECGRow
from ecglm.retrieval.index import Hit, ReportIndex
from ecglm.serving.messages import (
    EncodedPrefix,
    Generation,
    GenerationRequest,
    QueryEmbedding,
    Retrieved,
)
from ecglm.serving.validation import (
    RequestError,
    check_body_size,
    check_content_length,
    error_body,
    parse_json,
    validate_request,
)
from ecglm.utils.ray_env import set_process_env

logger = logging.getLogger("ray.serve")

SELF_MATCH_MIN_SCORE = 1.0 - 1e-5
"""Cosine similarity at or above which an indexed record is taken to be the query itself
(the server is not told record ids). On PTB-XL records 1-300 with the quickstart retrieval
encoder, distinct records stay below 1 - 1e-3; only exact duplicate signals (same patient)
reach 1."""
LLM_MAX_BATCH_SIZE = 4
LLM_BATCH_WAIT_S = 0.01


# ------------------------------------------------------------------------------------------------
# pure helpers (testable without Ray)
# ------------------------------------------------------------------------------------------------

def retrieve(index: ReportIndex, embedding: np.ndarray, k: int,
             exclude_same_patient: bool) -> list[Hit]:
    """Top-``k`` reports for one query embedding ``(d,)``, best first.

    A query identical to an indexed training record (cosine >= :data:`SELF_MATCH_MIN_SCORE`) is
    that record: it is excluded, and so are its patient's other records when
    ``exclude_same_patient`` — the rule offline neighbours follow.
    """
    query = np.asarray(embedding, dtype=np.float32).reshape(1, -1)
    best = index.search(query, 1)[0]
    if best and best[0].score >= SELF_MATCH_MIN_SCORE:
        own = best[0]
        return index.search(query, k, exclude_ids=[own.ecg_id],
                            exclude_patients=[own.patient_id] if exclude_same_patient else None)[0]
    return index.search(query, k)[0]


def route(request: Request) -> str:
    """Request path relative to the application's route prefix (``"/"``, ``"/healthz"``)."""
    path = request.scope.get("path", "/")
    root = request.scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):]
    return "/" + path.strip("/")


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


# ------------------------------------------------------------------------------------------------
# deployments
# ------------------------------------------------------------------------------------------------

@serve.deployment
class ECGEncoder:
    """Trained ECG front end (prefix) and the retrieval encoder (embedding); no LLM
    (:class:`ecglm.serving.parts.ECGPart`)."""

    def __init__(self, cfg: ExperimentConfig, checkpoint_dir: str, retrieval_dir: str) -> None:
        set_process_env()  # before transformers is first imported in this replica
        # deferred on purpose: parts loads transformers, which must see the process env
        from ecglm.serving.parts import ECGPart

        self.part = ECGPart(cfg, checkpoint_dir, retrieval_dir)

    @property
    def front_end(self) -> Any:
        """The :class:`~ecglm.models.ECGFrontEnd` this replica holds."""
        return self.part.front_end

    def prefix(self, signal: np.ndarray) -> EncodedPrefix:
        """``signal (12, data.n_samples)`` float32 mV -> the ECG prefix."""
        return self.part.prefix(signal)

    def embed(self, signal: np.ndarray) -> QueryEmbedding:
        """``signal (12, data.n_samples)`` float32 mV -> retrieval embedding ``(d_enc,)``."""
        return self.part.embed(signal)


@serve.deployment
class Retriever:
    """FAISS index of training-ECG embeddings with their reports."""

    def __init__(self, retrieval_dir: str, top_k: int, exclude_same_patient: bool) -> None:
        self.index = ReportIndex.load(retrieval_dir)
        self.top_k = top_k
        self.exclude_same_patient = exclude_same_patient

    def __call__(self, query: QueryEmbedding) -> Retrieved:
        """Top-k :class:`Hit` for the query (never the query's own record)."""
        t0 = time.perf_counter()
        hits = retrieve(self.index, query.embedding, self.top_k, self.exclude_same_patient)
        return Retrieved(hits, query.elapsed_ms, _ms(t0))


@serve.deployment
class LLM:
    """LLM side of the trained model (LLM + LoRA + fusion, no encoder or mapper); greedy
    decoding from the ECG prefix, micro-batched."""

    def __init__(self, cfg: ExperimentConfig, checkpoint_dir: str) -> None:
        set_process_env()  # before transformers is first imported in this replica
        # deferred on purpose: parts loads transformers, which must see the process env
        from ecglm.serving.parts import LLMPart

        self.part = LLMPart(cfg, checkpoint_dir)

    async def __call__(self, encoded: EncodedPrefix, retrieved: Optional[Retrieved],
                       row: ECGRow) -> Generation:
        """Answer one request (its task fields in ``row``) from its prefix and retrieved
        reports (either may arrive as the resolved result of another deployment's response)."""
        t0 = time.perf_counter()
        hits = retrieved.hits if retrieved is not None else []
        gen = await self.generate_batch(GenerationRequest(
            encoded.prefix, encoded.prefix_mask, row, [h.report for h in hits]))
        timings = {"encode": round(encoded.elapsed_ms
                                   + (retrieved.embed_ms if retrieved is not None else 0.0), 2)}
        if retrieved is not None:
            timings["retrieve"] = retrieved.search_ms
        timings["generate"] = _ms(t0)
        return Generation(gen.generated, gen.body, hits, timings)

    @serve.batch(max_batch_size=LLM_MAX_BATCH_SIZE, batch_wait_timeout_s=LLM_BATCH_WAIT_S)
    async def generate_batch(self, requests: list[GenerationRequest]) -> list[Generation]:
        """Up to :data:`LLM_MAX_BATCH_SIZE` requests decoded together (off the event loop)."""
        return await asyncio.to_thread(self.part.generate, requests)

    def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        """Decode a batch (:meth:`ecglm.serving.parts.LLMPart.generate`)."""
        return self.part.generate(requests)


@serve.deployment
class Ingress:
    """HTTP entry point: ``POST /`` answers a question about an ECG, ``GET /healthz``."""

    def __init__(self, encoder: DeploymentHandle, retriever: DeploymentHandle,
                 llm: DeploymentHandle, serve_cfg: ServeConfig, data_cfg: DataConfig,
                 task: str = "qa", retrieval: bool = True) -> None:
        self.encoder = encoder
        self.retriever = retriever
        self.llm = llm
        self.serve_cfg = serve_cfg
        self.data_cfg = data_cfg
        self.task = task
        """The served model's task (its plugin validates requests and shapes responses)."""
        self.retrieval = retrieval
        """``retrieval.enabled``: query the retriever and put the top-k reports in the prompt."""

    async def __call__(self, request: Request) -> Response:
        path = route(request)
        if path == "/healthz":
            if request.method not in ("GET", "HEAD"):
                return _error(405, "method", f"{request.method} not allowed; use GET",
                              {"Allow": "GET, HEAD"})
            return JSONResponse({"status": "ok"})
        if path != "/":
            return _error(404, "path", f"no route {path!r}; use POST / or GET /healthz")
        if request.method != "POST":
            return _error(405, "method", f"{request.method} not allowed; use POST with a JSON "
                                         "body", {"Allow": "POST"})
        try:
            return JSONResponse(await self.answer(request))
        except RequestError as err:
            return JSONResponse(error_body(err), status_code=err.status)
        except Exception:  # noqa: BLE001 - the client gets a 500, the log gets the traceback
            logger.exception("ecglm: request failed")
            return _error(500, "server", "internal error while answering; see the Serve logs")

    async def answer(self, request: Request) -> dict[str, Any]:
        """Validate, then encode -> (retrieve) -> generate as one chain of handle calls; the
        JSON response body. Stage timings are measured inside each deployment."""
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        body = await read_body(request, self.serve_cfg.max_body_bytes)
        req = validate_request(parse_json(body), self.serve_cfg, self.data_cfg, self.task)
        timings["validate"] = _ms(t0)

        prefix = self.encoder.prefix.remote(req.signal)
        retrieved = None
        if self.retrieval:  # presets without retrieval (MEIT, GEM) never see reports
            retrieved = self.retriever.remote(self.encoder.embed.remote(req.signal))
        gen: Generation = await self.llm.remote(prefix, retrieved, req.row)
        timings.update(gen.timings)
        timings["total"] = _ms(t0)
        reports = [{"ecg_id": h.ecg_id, "report": h.report, "score": round(h.score, 6)}
                   for h in gen.hits]
        return {**gen.body, "retrieved_reports": reports, "timings_ms": timings}


def _error(status: int, field: str, message: str,
           headers: Optional[dict[str, str]] = None) -> JSONResponse:
    return JSONResponse({"error": message, "field": field}, status_code=status, headers=headers)
