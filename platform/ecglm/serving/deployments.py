"""Ray Serve model deployments behind the HTTP ingress (:mod:`ecglm.serving.ingress`):
``ECGEncoder``, ``Retriever`` and ``LLM``. Each loads only its own part, takes its resources,
autoscaling and ``@serve.batch`` size from its ``serve.<name>`` config, and answers Serve's
``check_health`` with a tiny forward pass, so a broken replica is replaced.

* ``ECGEncoder`` holds the trained ECG front end (encoder + mapper,
  :func:`ecglm.models.load_front_end_from_checkpoint`, no LLM) for the prefix
  (:meth:`ECGEncoder.prefix`; an adapter's own front end when the request names one) and the
  *retrieval* encoder saved next to the index (the one the index was built with, not the
  fine-tuned one) for the embedding (:meth:`ECGEncoder.embed`).
* ``Retriever`` returns the top-k reports of similar training ECGs from the FAISS index
  (``retrieval.index``: flat, ivf or hnsw).
* ``LLM`` holds one base LLM (+ LoRA + fusion, :func:`ecglm.models.load_prefix_lm`) in
  ``llm.dtype``, on a GPU when ``serve.llm.num_gpus`` asks; adapters of ``serve.adapters`` are
  loaded on demand by ``@serve.multiplexed`` (their LoRA tensors swapped in per request group).
  It builds the evaluation prompt (options in the given order, top-1 report) and decodes
  greedily from the prefix; requests are batched with ``@serve.batch`` (left padding inside
  the decoder), or streamed one by one.

So the served answer is the one offline evaluation (:func:`ecglm.tasks.qa.predict`) gives for
the same ECG, question and options.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Optional, Union

import numpy as np
from ray import serve

from ecglm.config.schema import DeploymentConfig, RetrievalConfig
from ecglm.data.rows import ECGRow
from ecglm.retrieval.index import Hit, ReportIndex
from ecglm.serving.catalog import MAIN_MODEL, ServedModel
from ecglm.serving.messages import (
    EncodedPrefix,
    Generation,
    GenerationRequest,
    QueryEmbedding,
    Retrieved,
    positions_by,
)
from ecglm.serving.options import apply_batching, replica_device
from ecglm.utils.ray_env import set_process_env

SELF_MATCH_MIN_SCORE = 1.0 - 1e-5
"""Cosine similarity at or above which an indexed record is taken to be the query itself
(the server is not told record ids). On PTB-XL records 1-300 with the quickstart retrieval
encoder, distinct records stay below 1 - 1e-3; only exact duplicate signals (same patient)
reach 1."""
MAX_ADAPTERS_PER_REPLICA = 4
"""Adapters one encoder/LLM replica keeps loaded (``@serve.multiplexed``, least recently used
dropped); Serve routes a request to a replica that already holds its adapter."""


# ------------------------------------------------------------------------------------------------
# pure helpers (testable without Ray)
# ------------------------------------------------------------------------------------------------

def retrieve_batch(index: ReportIndex, embeddings: np.ndarray, k: int,
                   exclude_same_patient: bool) -> list[list[Hit]]:
    """Top-``k`` reports for ``Q`` query embeddings ``(Q, d)``, best first, one search pass
    for the self-match test and one for the hits.

    A query identical to an indexed training record (cosine >= :data:`SELF_MATCH_MIN_SCORE`) is
    that record: it is excluded, and so are its patient's other records when
    ``exclude_same_patient`` — the rule offline neighbours follow.
    """
    queries = np.asarray(embeddings, dtype=np.float32).reshape(len(embeddings), -1)
    own_ids: list[Optional[int]] = []
    own_patients: list[Optional[int]] = []
    for best in index.search(queries, 1):
        own = best[0] if best and best[0].score >= SELF_MATCH_MIN_SCORE else None
        own_ids.append(own.ecg_id if own is not None else None)
        own_patients.append(own.patient_id if own is not None and exclude_same_patient
                            else None)
    return index.search(queries, k, exclude_ids=own_ids, exclude_patients=own_patients)


def retrieve(index: ReportIndex, embedding: np.ndarray, k: int,
             exclude_same_patient: bool) -> list[Hit]:
    """Top-``k`` reports for one query embedding ``(d,)`` (:func:`retrieve_batch`)."""
    return retrieve_batch(index, np.asarray(embedding)[None], k, exclude_same_patient)[0]


def _hits(retrieved: Optional[Retrieved]) -> list[Hit]:
    """The retrieved hits, or none when the model does not retrieve."""
    return retrieved.hits if retrieved is not None else []


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000.0, 2)


# ------------------------------------------------------------------------------------------------
# deployments
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Signal:
    """One ECG in the encoder's batch, with the front end of its model."""

    model: str
    front_end: Any
    signal: np.ndarray


@serve.deployment
class ECGEncoder:
    """ECG front ends (prefix) and the retrieval encoder (embedding); no LLM
    (:class:`ecglm.serving.parts.ECGPart`).

    Args:
        models: the served models (:func:`ecglm.serving.catalog.resolve_models`).
        retrieval_dir: the retrieval artifact folder.
        dep: ``serve.encoder``.
    """

    def __init__(self, models: dict[str, ServedModel], retrieval_dir: str,
                 dep: DeploymentConfig) -> None:
        set_process_env()  # before transformers is first imported in this replica
        # deferred on purpose: parts loads transformers, which must see the process env
        from ecglm.serving.parts import ECGPart

        main = models[MAIN_MODEL]
        self.models = models
        self.part = ECGPart(main.cfg, main.checkpoint_dir, retrieval_dir, replica_device(dep))
        apply_batching(self.prefix_batch, dep)
        apply_batching(self.embed_batch, dep)

    @property
    def front_end(self) -> Any:
        """The main model's :class:`~ecglm.models.ECGFrontEnd`."""
        return self.part.front_end

    @serve.multiplexed(max_num_models_per_replica=MAX_ADAPTERS_PER_REPLICA)
    async def adapter_front_end(self, model_id: str) -> Any:
        """The front end of adapter ``model_id`` (loaded once per replica, LRU-evicted)."""
        model = self.models[model_id]
        return await asyncio.to_thread(self.part.load_front_end, model.cfg, model.checkpoint_dir)

    async def prefix(self, signal: np.ndarray) -> EncodedPrefix:
        """``signal (12, data.n_samples)`` float32 mV -> the ``(1, P, d_llm)`` ECG prefix of the
        request's model (``serve_multiplexed_model_id``; the main model without one)."""
        model = serve.get_multiplexed_model_id()
        front_end = (await self.adapter_front_end(model) if model and model != MAIN_MODEL
                     else self.part.front_end)
        return await self.prefix_batch(_Signal(model, front_end, signal))

    @serve.batch
    async def prefix_batch(self, items: list[_Signal]) -> list[EncodedPrefix]:
        """Prefixes of a batch, one forward pass per model in it (off the event loop)."""
        return await asyncio.to_thread(self._prefixes, items)

    def _prefixes(self, items: list[_Signal]) -> list[EncodedPrefix]:
        out: list[Optional[EncodedPrefix]] = [None] * len(items)
        for idx in positions_by([item.model for item in items]).values():
            encoded = self.part.prefixes(items[idx[0]].front_end, [items[i].signal for i in idx])
            for i, e in zip(idx, encoded):
                out[i] = e
        return [e for e in out if e is not None]

    async def embed(self, signal: np.ndarray) -> QueryEmbedding:
        """``signal (12, data.n_samples)`` float32 mV -> retrieval embedding ``(d_enc,)``."""
        return await self.embed_batch(signal)

    @serve.batch
    async def embed_batch(self, signals: list[np.ndarray]) -> list[QueryEmbedding]:
        """Retrieval embeddings of a batch, one forward pass."""
        return await asyncio.to_thread(self.part.embeddings, signals)

    def check_health(self) -> None:
        """Serve's health check: a flat ECG through both encoders must give finite outputs."""
        self.part.health()

    async def health(self) -> bool:
        """The same probe for the ingress's ``/healthz``."""
        await asyncio.to_thread(self.part.health)
        return True


@serve.deployment
class Retriever:
    """FAISS index of training-ECG embeddings with their reports.

    Args:
        retrieval_dir: the retrieval artifact folder.
        retrieval: ``retrieval`` config (``top_k``, ``exclude_same_patient``, index query
            parameters ``nprobe``/``ef_search``).
        dep: ``serve.retriever``.
    """

    def __init__(self, retrieval_dir: str, retrieval: RetrievalConfig,
                 dep: DeploymentConfig) -> None:
        self.index = ReportIndex.load(retrieval_dir, retrieval)
        self.top_k = retrieval.top_k
        self.exclude_same_patient = retrieval.exclude_same_patient
        apply_batching(self.search_batch, dep)

    async def __call__(self, query: QueryEmbedding) -> Retrieved:
        """Top-k :class:`Hit` for the query (never the query's own record)."""
        return await self.search_batch(query)

    @serve.batch
    async def search_batch(self, queries: list[QueryEmbedding]) -> list[Retrieved]:
        """One index search for a batch of queries."""
        t0 = time.perf_counter()
        hits = retrieve_batch(self.index, np.stack([q.embedding for q in queries]),
                              self.top_k, self.exclude_same_patient)
        ms = _ms(t0)
        return [Retrieved(h, q.elapsed_ms, ms) for h, q in zip(hits, queries)]

    def check_health(self) -> None:
        """Serve's health check: one search must answer."""
        probe = np.ones((1, self.index.dim), np.float32)
        self.index.search(probe, 1)

    async def health(self) -> bool:
        """The same probe for the ingress's ``/healthz``."""
        self.check_health()
        return True


class _LoadedAdapter:
    """An adapter held by the LLM replica's multiplexer; dropped from the replica's LLM part
    when Serve evicts it."""

    def __init__(self, part: Any, name: str) -> None:
        self.part = part
        self.name = name

    def __del__(self) -> None:
        self.part.drop_adapter(self.name)


@dataclass(frozen=True)
class TextPiece:
    """One streamed piece of generated text (``LLM.stream``)."""

    text: str


@serve.deployment
class LLM:
    """One base LLM (+ LoRA + fusion; no encoder or mapper) and the adapters of
    ``serve.adapters``; greedy decoding from the ECG prefix, batched or streamed.

    Args:
        models: the served models (:func:`ecglm.serving.catalog.resolve_models`).
        dep: ``serve.llm``.
    """

    def __init__(self, models: dict[str, ServedModel], dep: DeploymentConfig) -> None:
        set_process_env()  # before transformers is first imported in this replica
        # deferred on purpose: parts loads transformers, which must see the process env
        from ecglm.serving.parts import LLMPart

        main = models[MAIN_MODEL]
        self.models = models
        self.part = LLMPart(main.cfg, main.checkpoint_dir, replica_device(dep))
        apply_batching(self.generate_batch, dep)

    @serve.multiplexed(max_num_models_per_replica=MAX_ADAPTERS_PER_REPLICA)
    async def adapter(self, model_id: str) -> _LoadedAdapter:
        """Load adapter ``model_id``'s LoRA tensors and config into this replica."""
        model = self.models[model_id]
        await asyncio.to_thread(self.part.add_adapter, model_id, model.cfg, model.checkpoint_dir)
        return _LoadedAdapter(self.part, model_id)

    async def _request(self, encoded: EncodedPrefix, retrieved: Optional[Retrieved],
                       row: ECGRow) -> GenerationRequest:
        model = serve.get_multiplexed_model_id() or MAIN_MODEL
        if model != MAIN_MODEL:
            await self.adapter(model)
        hits = _hits(retrieved)
        return GenerationRequest(encoded.prefix, encoded.prefix_mask, row,
                                 [h.report for h in hits], model)

    @staticmethod
    def _timings(encoded: EncodedPrefix, retrieved: Optional[Retrieved],
                 t0: float) -> dict[str, float]:
        timings = {"encode": round(encoded.elapsed_ms
                                   + (retrieved.embed_ms if retrieved is not None else 0.0), 2)}
        if retrieved is not None:
            timings["retrieve"] = retrieved.search_ms
        timings["generate"] = _ms(t0)
        return timings

    async def __call__(self, encoded: EncodedPrefix, retrieved: Optional[Retrieved],
                       row: ECGRow) -> Generation:
        """Answer one request (its task fields in ``row``) from its prefix and retrieved
        reports (either may arrive as the resolved result of another deployment's response)."""
        t0 = time.perf_counter()
        request = await self._request(encoded, retrieved, row)
        gen = await self.generate_batch(request)
        hits = _hits(retrieved)
        return Generation(gen.generated, gen.body, hits, self._timings(encoded, retrieved, t0))

    async def stream(self, encoded: EncodedPrefix, retrieved: Optional[Retrieved],
                     row: ECGRow) -> AsyncIterator[Union[TextPiece, Generation]]:
        """Stream one request: :class:`TextPiece` s as tokens are decoded, then the final
        :class:`Generation` (the same text and task fields :meth:`__call__` gives)."""
        t0 = time.perf_counter()
        request = await self._request(encoded, retrieved, row)
        pieces = self.part.stream(request)
        parts: list[str] = []
        done = object()
        try:
            while True:
                piece = await asyncio.to_thread(next, pieces, done)
                if piece is done:
                    break
                parts.append(piece)
                yield TextPiece(piece)
        finally:
            pieces.close()
        text = "".join(parts).strip()
        hits = _hits(retrieved)
        yield Generation(text, self.part.response(request, text), hits,
                         self._timings(encoded, retrieved, t0))

    @serve.batch
    async def generate_batch(self, requests: list[GenerationRequest]) -> list[Generation]:
        """A batch of requests decoded together (grouped by model; off the event loop)."""
        return await asyncio.to_thread(self.part.generate, requests)

    def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        """Decode a batch (:meth:`ecglm.serving.parts.LLMPart.generate`)."""
        return self.part.generate(requests)

    def check_health(self) -> None:
        """Serve's health check: a one-token forward pass must give finite logits."""
        self.part.health()

    async def health(self) -> bool:
        """The same probe for the ingress's ``/healthz``."""
        await asyncio.to_thread(self.part.health)
        return True
