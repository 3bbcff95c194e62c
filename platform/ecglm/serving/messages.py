"""Messages between the Serve deployments (plain dataclasses, pickled by Ray)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Hashable, Sequence

import numpy as np
import torch

from ecglm.data.rows import ECGRow
from ecglm.retrieval.index import Hit


@dataclass(frozen=True)
class EncodedPrefix:
    """Output of ``ECGEncoder.prefix`` for one ECG."""

    prefix: torch.Tensor
    """``(1, P, d_llm)`` ECG prefix vectors (``P`` = tokens the mapper returns; every fusion)."""
    prefix_mask: torch.Tensor
    """``(1, P)`` bool."""
    elapsed_ms: float = 0.0
    """Milliseconds the encoder replica spent on it."""


@dataclass(frozen=True)
class QueryEmbedding:
    """Output of ``ECGEncoder.embed``: the retrieval embedding of one ECG."""

    embedding: np.ndarray
    """``(d_enc,)`` float32 (pooled retrieval-encoder output)."""
    elapsed_ms: float = 0.0


@dataclass(frozen=True)
class Retrieved:
    """Output of ``Retriever``: top-k hits, best first, and the time spent on them."""

    hits: list[Hit]
    embed_ms: float = 0.0
    """Milliseconds of the embedding it searched with (``ECGEncoder.embed``)."""
    search_ms: float = 0.0


@dataclass(frozen=True)
class GenerationRequest:
    """One question inside the ``LLM`` deployment's batch."""

    prefix: torch.Tensor
    """``(1, P, d_llm)``."""
    prefix_mask: torch.Tensor
    """``(1, P)`` bool."""
    row: ECGRow
    """The task's fields of the request (:meth:`ecglm.tasks.base.Task.request_row`)."""
    reports: list[str]
    """Retrieved reports, best first."""
    model: str = ""
    """Served model id (``""``: the main model; else an adapter of ``serve.adapters``)."""


@dataclass(frozen=True)
class Generation:
    """Output of ``LLM``: the generated text, the task's response fields for it
    (:meth:`ecglm.tasks.base.Task.response`, e.g. the parsed answer), the hits its prompt used
    and the stage timings (``encode``, ``retrieve``, ``generate``, ms)."""

    generated: str
    body: dict[str, Any]
    hits: list[Hit] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def positions_by(keys: Sequence[Hashable]) -> dict[Hashable, list[int]]:
    """Positions of each distinct key, in first-seen order (a batch split per served model)."""
    groups: dict[Hashable, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        groups[key].append(i)
    return dict(groups)

