"""Ray Serve deployments: ``Ingress`` (HTTP) -> ``ECGEncoder`` -> ``Retriever`` -> ``LLM``.

* ``ECGEncoder`` computes the ECG prefix with the trained encoder + mapper and the retrieval
  embedding with the *retrieval* encoder saved next to the index (the one the index was built
  with, not the fine-tuned one).
* ``Retriever`` returns the top-k reports of similar training ECGs from the FAISS index.
* ``LLM`` builds the evaluation prompt (options in the given order, top-1 report) and decodes
  greedily from the prefix; requests are micro-batched with ``@serve.batch``.
* ``Ingress`` checks the body size before reading it, validates the JSON
  (:mod:`ecglm.serving.validation`), chains the three and answers JSON.

So the served answer is the one offline evaluation (:func:`ecglm.evaluation.qa.predict`) gives
for the same ECG, question and options.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ecglm.config import ExperimentConfig
from ecglm.config.schema import DataConfig, ServeConfig
from ecglm.retrieval.index import Hit, ReportIndex
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
# messages between deployments
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EncodedECG:
    """Output of :class:`ECGEncoder` for one ECG."""

    prefix: torch.Tensor
    """``(1, P, d_llm)`` ECG prefix vectors (``P`` = tokens the mapper returns; both fusions)."""
    prefix_mask: torch.Tensor
    """``(1, P)`` bool."""
    embedding: np.ndarray
    """``(d_enc,)`` float32 retrieval embedding (pooled retrieval-encoder output)."""


@dataclass(frozen=True)
class GenerationRequest:
    """Input of :class:`LLM` for one question."""

    prefix: torch.Tensor
    """``(1, P, d_llm)``."""
    prefix_mask: torch.Tensor
    """``(1, P)`` bool."""
    question: str
    options: list[str]
    reports: list[str]
    """Retrieved reports, best first."""


@dataclass(frozen=True)
class Generation:
    """Output of :class:`LLM`: the generated text and the options parsed from it (sorted)."""

    generated: str
    answer: list[str]


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


def qa_prompt(cfg: ExperimentConfig, tokenizer: Any, question: str, options: list[str],
              reports: list[str]) -> str:
    """The evaluation prompt for one single-ECG question (options as given, top-1 report):
    :func:`ecglm.train.batches.row_prompt`, the builder training and evaluation use."""
    from ecglm.train.batches import row_prompt

    row = {"question": question, "options": list(options), "retrieved_reports": list(reports),
           "n_ecg": 1}
    return row_prompt(row, tokenizer, cfg, None)


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
    """Trained encoder + mapper (prefix) and the retrieval encoder (embedding)."""

    def __init__(self, cfg: ExperimentConfig, checkpoint_dir: str, retrieval_dir: str) -> None:
        set_process_env()  # before transformers is first imported in this replica
        from ecglm.models.from_checkpoint import load_model
        from ecglm.retrieval.build import load_retrieval_encoder

        self.n_samples = cfg.data.n_samples
        self.model = load_model(cfg, Path(checkpoint_dir))
        self.retrieval_encoder = load_retrieval_encoder(retrieval_dir)

    @torch.no_grad()
    def __call__(self, signal: np.ndarray) -> EncodedECG:
        """``signal (12, data.n_samples)`` float32 mV -> :class:`EncodedECG`."""
        from ecglm.retrieval.build import embed

        if signal.shape != (12, self.n_samples):
            raise ValueError(f"signal: expected shape (12, {self.n_samples}), "
                             f"got {signal.shape}")
        x = torch.from_numpy(np.ascontiguousarray(signal, dtype=np.float32))
        prefix, prefix_mask = self.model.ecg_prefix(x[None, None], None)
        embedding = embed(self.retrieval_encoder, x.numpy()[None])[0]
        return EncodedECG(prefix, prefix_mask, embedding)


@serve.deployment
class Retriever:
    """FAISS index of training-ECG embeddings with their reports."""

    def __init__(self, retrieval_dir: str, top_k: int, exclude_same_patient: bool) -> None:
        self.index = ReportIndex.load(retrieval_dir)
        self.top_k = top_k
        self.exclude_same_patient = exclude_same_patient

    def __call__(self, embedding: np.ndarray) -> list[Hit]:
        """``embedding (d,)`` -> top-k :class:`Hit` (never the query's own record)."""
        return retrieve(self.index, embedding, self.top_k, self.exclude_same_patient)


@serve.deployment
class LLM:
    """LoRA LLM of the trained model; greedy decoding from the ECG prefix, micro-batched."""

    def __init__(self, cfg: ExperimentConfig, checkpoint_dir: str) -> None:
        set_process_env()  # before transformers is first imported in this replica
        from ecglm.models.from_checkpoint import load_model

        self.cfg = cfg
        self.model = load_model(cfg, Path(checkpoint_dir))

    async def __call__(self, request: GenerationRequest) -> Generation:
        return await self.generate_batch(request)

    @serve.batch(max_batch_size=LLM_MAX_BATCH_SIZE, batch_wait_timeout_s=LLM_BATCH_WAIT_S)
    async def generate_batch(self, requests: list[GenerationRequest]) -> list[Generation]:
        """Up to :data:`LLM_MAX_BATCH_SIZE` requests decoded together (off the event loop)."""
        return await asyncio.to_thread(self.generate, requests)

    def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        """Prompts -> ``(B, S)`` right-padded ids -> greedy decoding -> parsed answers."""
        from ecglm.models.prompting import parse_answer
        from ecglm.train.batches import prompt_ids_batch

        tok = self.model.tokenizer
        prompts = [qa_prompt(self.cfg, tok, r.question, r.options, r.reports) for r in requests]
        batch = prompt_ids_batch(prompts, tok, self.cfg)  # exactly as evaluation encodes them
        prefix = torch.cat([r.prefix for r in requests], dim=0)
        prefix_mask = torch.cat([r.prefix_mask for r in requests], dim=0)
        ids = self.model.generate_from_prefix(prefix, prefix_mask, batch["input_ids"],
                                              batch["attention_mask"], self.cfg.llm.max_new_tokens,
                                              prefix_at=batch.get("prefix_at"))
        out = []
        for r, row in zip(requests, ids):
            text = tok.decode(row, skip_special_tokens=True).strip()
            out.append(Generation(text, sorted(parse_answer(text, r.options))))
        return out


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
        """``qa``: answer ``question``; ``report``/``grounding``: write the report."""
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
        """Validate, encode, retrieve, generate; the JSON response body."""
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        body = await read_body(request, self.serve_cfg.max_body_bytes)
        req = validate_request(parse_json(body), self.serve_cfg, self.data_cfg, self.task)
        timings["validate"] = _ms(t0)

        t = time.perf_counter()
        enc: EncodedECG = await self.encoder.remote(req.signal)
        timings["encode"] = _ms(t)
        hits: list[Hit] = []
        if self.retrieval:  # presets without retrieval (MEIT, GEM) never see reports
            t = time.perf_counter()
            hits = await self.retriever.remote(enc.embedding)
            timings["retrieve"] = _ms(t)
        t = time.perf_counter()
        gen: Generation = await self.llm.remote(GenerationRequest(
            enc.prefix, enc.prefix_mask, req.question, req.options, [h.report for h in hits]))
        timings["generate"] = _ms(t)
        timings["total"] = _ms(t0)
        reports = [{"ecg_id": h.ecg_id, "report": h.report, "score": round(h.score, 6)}
                   for h in hits]
        if self.task != "qa":
            return {"task": self.task, "report": gen.generated, "retrieved_reports": reports,
                    "timings_ms": timings}
        return {
            "answer": gen.answer,
            "generated": gen.generated,
            "retrieved_reports": reports,
            "options": req.options,
            "timings_ms": timings,
        }


def _error(status: int, field: str, message: str,
           headers: Optional[dict[str, str]] = None) -> JSONResponse:
    return JSONResponse({"error": message, "field": field}, status_code=status, headers=headers)
