"""What each Serve replica computes, without Ray: the ECG part (front ends + retrieval
encoder) and the LLM part (one base LLM, LoRA adapters swapped in per request group, prompts,
batched and streamed greedy decoding). :mod:`ecglm.serving.deployments` wraps them; the
MLflow pyfunc model and tests use them directly.

Importing this module loads transformers; a replica imports it after
:func:`ecglm.utils.ray_env.set_process_env`.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch
from safetensors.torch import load_file

from ecglm.checkpoint import TRAINABLE_FILE
from ecglm.config import ExperimentConfig
from ecglm.data.rows import ECGRow
from ecglm.models import load_front_end_from_checkpoint, load_prefix_lm
from ecglm.models.prefix_lm import LLM_PREFIX
from ecglm.models.streaming import stream_from_prefix
from ecglm.models.trainable import load_into, trainable_tensors
from ecglm.retrieval.build import embed, load_retrieval_encoder
from ecglm.serving.catalog import MAIN_MODEL
from ecglm.serving.messages import (
    EncodedPrefix,
    Generation,
    GenerationRequest,
    QueryEmbedding,
    positions_by,
)
from ecglm.tasks import get_task
from ecglm.tasks.encode import prompt_ids_batch, row_prompt


def elapsed_ms(t0: float) -> float:
    """Milliseconds since ``t0`` (``time.perf_counter``), rounded to 0.01."""
    return round((time.perf_counter() - t0) * 1000.0, 2)


def serve_prompt(cfg: ExperimentConfig, tokenizer: Any, row: ECGRow,
                 reports: list[str]) -> str:
    """The evaluation prompt of one single-ECG request (task fields as given, top-1 report):
    :func:`ecglm.tasks.encode.row_prompt`, the builder training and evaluation use."""
    return row_prompt(get_task(cfg.task), row.with_reports(reports), tokenizer, cfg, None)


def signal_batch(signals: list[np.ndarray], n_samples: int) -> torch.Tensor:
    """``B`` signals ``(12, n_samples)`` float32 mV -> ``(B, 12, n_samples)`` tensor.

    Raises:
        ValueError: a signal of another shape.
    """
    for s in signals:
        if s.shape != (12, n_samples):
            raise ValueError(f"signal: expected shape (12, {n_samples}), got {s.shape}")
    return torch.from_numpy(np.ascontiguousarray(np.stack(signals), dtype=np.float32))


class ECGPart:
    """Trained ECG front ends (prefix; no LLM) and the retrieval encoder saved next to the
    index (embedding; the one the index was built with, not the fine-tuned one).

    Args:
        cfg: main model config; checkpoint_dir: its checkpoint folder; retrieval_dir: the
            retrieval artifact folder; device: where the modules run.
    """

    def __init__(self, cfg: ExperimentConfig, checkpoint_dir: str | Path,
                 retrieval_dir: str | Path, device: torch.device = torch.device("cpu")) -> None:
        self.n_samples = cfg.data.n_samples
        self.device = device
        self.front_end = self.load_front_end(cfg, checkpoint_dir)
        self.retrieval_encoder = load_retrieval_encoder(retrieval_dir).to(device).eval()

    def load_front_end(self, cfg: ExperimentConfig, checkpoint_dir: str | Path) -> Any:
        """The encoder + mapper of a checkpoint (an adapter's own front end), on the device."""
        return load_front_end_from_checkpoint(
            cfg, Path(checkpoint_dir) / TRAINABLE_FILE).to(self.device).eval()

    @torch.no_grad()
    def prefixes(self, front_end: Any, signals: list[np.ndarray]) -> list[EncodedPrefix]:
        """``B`` signals ``(12, data.n_samples)`` float32 mV -> ``B`` prefixes ``(1, P, d_llm)``
        (on the CPU, to travel to the LLM replica), computed as one batch."""
        t0 = time.perf_counter()
        x = signal_batch(signals, self.n_samples).to(self.device)
        prefix, mask = front_end(x[:, None], None)
        prefix, mask = prefix.cpu(), mask.cpu()
        ms = elapsed_ms(t0)
        return [EncodedPrefix(prefix[i:i + 1], mask[i:i + 1], ms) for i in range(len(signals))]

    def prefix(self, signal: np.ndarray) -> EncodedPrefix:
        """One signal ``(12, data.n_samples)`` -> its ``(1, P, d_llm)`` prefix (main model)."""
        return self.prefixes(self.front_end, [signal])[0]

    @torch.no_grad()
    def embeddings(self, signals: list[np.ndarray]) -> list[QueryEmbedding]:
        """``B`` signals -> ``B`` retrieval embeddings ``(d_enc,)`` float32, one batch."""
        t0 = time.perf_counter()
        out = embed(self.retrieval_encoder, signal_batch(signals, self.n_samples).numpy())
        ms = elapsed_ms(t0)
        return [QueryEmbedding(out[i], ms) for i in range(len(signals))]

    def embed(self, signal: np.ndarray) -> QueryEmbedding:
        """One signal ``(12, data.n_samples)`` -> retrieval embedding ``(d_enc,)``."""
        return self.embeddings([signal])[0]

    @torch.no_grad()
    def health(self) -> None:
        """A tiny forward pass (a flat ECG through the front end and the retrieval encoder).

        Raises:
            RuntimeError: non-finite outputs (a broken replica).
        """
        flat = np.zeros((12, self.n_samples), np.float32)
        enc = self.prefix(flat)
        emb = self.embed(flat)
        if not (torch.isfinite(enc.prefix.float()).all() and np.isfinite(emb.embedding).all()):
            raise RuntimeError("ECG front end: non-finite output on a flat ECG")


def read_llm_state(checkpoint_dir: str | Path) -> dict[str, torch.Tensor]:
    """The ``llm.*`` tensors (LoRA and the fusion's LLM-side tensors) of a checkpoint."""
    state = load_file(str(Path(checkpoint_dir) / TRAINABLE_FILE))
    return {k: v for k, v in state.items() if k.startswith(LLM_PREFIX)}


class LLMPart:
    """The LLM side (LLM + LoRA + fusion; no encoder or mapper) of the main model, plus the
    LoRA tensors of adapters of the same base: each group of requests for one model swaps its
    tensors in (a copy of a few MB) under a lock, then decodes greedily from the ECG prefixes.

    Args:
        cfg: main model config (``llm.dtype`` sets the base weights' dtype).
        checkpoint_dir: main checkpoint folder.
        device: where the LLM runs.
    """

    def __init__(self, cfg: ExperimentConfig, checkpoint_dir: str | Path,
                 device: torch.device = torch.device("cpu")) -> None:
        self.cfg = cfg
        self.device = device
        self.model = load_prefix_lm(cfg, Path(checkpoint_dir) / TRAINABLE_FILE).to(device)
        self._live = trainable_tensors(self.model, ())
        self._configs: dict[str, ExperimentConfig] = {MAIN_MODEL: cfg}
        self._states: dict[str, dict[str, torch.Tensor]] = {
            MAIN_MODEL: {k: v.detach().to("cpu", copy=True) for k, v in self._live.items()}}
        self._active = MAIN_MODEL
        self._evicted: set[str] = set()
        self._lock = threading.Lock()

    @property
    def adapters(self) -> list[str]:
        """Loaded adapter names (the main model excluded)."""
        return sorted(n for n in self._states if n != MAIN_MODEL)

    def add_adapter(self, name: str, cfg: ExperimentConfig, checkpoint_dir: str | Path) -> None:
        """Load an adapter's LLM-side tensors (checked against the live ones: same keys and
        shapes) and its config (task, prompt, ``llm.max_new_tokens``).

        Raises:
            ecglm.models.trainable.CheckpointError: keys or shapes differ from the base's.
        """
        state = read_llm_state(checkpoint_dir)
        with self._lock:
            self._purge()
            self._evicted.discard(name)
            load_into(self._live, state)  # validates keys/shapes ...
            load_into(self._live, self._states[self._active])  # ... and restores the active
            self._states[name] = state
            self._configs[name] = cfg

    def drop_adapter(self, name: str) -> None:
        """Forget an adapter (the Serve multiplexer's LRU eviction). Safe from a finaliser:
        takes no lock; the tensors go at the next swap."""
        self._evicted.add(name)

    def _purge(self) -> None:
        """Drop evicted adapters (lock held by the caller)."""
        while self._evicted:
            name = self._evicted.pop()
            if name == MAIN_MODEL:
                continue
            if self._active == name:
                load_into(self._live, self._states[MAIN_MODEL])
                self._active = MAIN_MODEL
            self._states.pop(name, None)
            self._configs.pop(name, None)

    def _use(self, name: str) -> ExperimentConfig:
        """Swap in ``name``'s tensors (lock held by the caller); its config.

        Raises:
            KeyError: ``name`` is not loaded here.
        """
        self._purge()
        if name not in self._states:
            raise KeyError(f"model {name!r} is not loaded in this replica")
        if name != self._active:
            load_into(self._live, self._states[name])
            self._active = name
        return self._configs[name]

    def _inputs(self, cfg: ExperimentConfig, requests: list[GenerationRequest]
                ) -> dict[str, torch.Tensor]:
        tok = self.model.tokenizer
        prompts = [serve_prompt(cfg, tok, r.row, r.reports) for r in requests]
        batch = prompt_ids_batch(prompts, tok, cfg)  # exactly as evaluation encodes them
        batch = {k: v.to(self.device) for k, v in batch.items()}
        batch["prefix"] = torch.cat([r.prefix for r in requests], dim=0).to(self.device)
        batch["prefix_mask"] = torch.cat([r.prefix_mask for r in requests], dim=0).to(self.device)
        return batch

    def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        """Requests grouped by model; per group: prompts -> ``(B, S)`` ids (left-padded
        inside the decoder) -> greedy decoding -> task responses, in the requests' order."""
        out: list[Optional[Generation]] = [None] * len(requests)
        with self._lock:
            for name, idx in positions_by([r.model for r in requests]).items():
                cfg = self._use(name)
                group = [requests[i] for i in idx]
                b = self._inputs(cfg, group)
                ids = self.model.generate_from_prefix(
                    b["prefix"], b["prefix_mask"], b["input_ids"], b["attention_mask"],
                    cfg.llm.max_new_tokens, prefix_at=b.get("prefix_at"))
                task = get_task(cfg.task)
                for i, r, text in zip(idx, group, self.model.decode(ids)):
                    out[i] = Generation(text, task.response(r.row, text, cfg))
        return [g for g in out if g is not None]

    def stream(self, request: GenerationRequest) -> Iterator[str]:
        """Text pieces of one request's generation as they are decoded; joined and stripped
        they equal :meth:`generate`'s text. The lock is held until decoding ends."""
        with self._lock:
            cfg = self._use(request.model)
            b = self._inputs(cfg, [request])
            yield from stream_from_prefix(
                self.model, b["prefix"], b["prefix_mask"], b["input_ids"], b["attention_mask"],
                cfg.llm.max_new_tokens, prefix_at=b.get("prefix_at"))

    def response(self, request: GenerationRequest, text: str) -> dict[str, Any]:
        """The task's response fields for generated ``text`` of ``request``'s model."""
        cfg = self._configs[request.model]
        return get_task(cfg.task).response(request.row, text, cfg)

    @torch.no_grad()
    def health(self) -> None:
        """A tiny forward pass: one token through the LLM.

        Raises:
            RuntimeError: non-finite logits (a broken replica).
        """
        tok = self.model.tokenizer
        token = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        ids = torch.tensor([[int(token)]], device=self.device)
        if not self._lock.acquire(timeout=1.0):
            return  # busy decoding: the replica is evidently working
        try:
            logits = self.model.llm(input_ids=ids).logits
        finally:
            self._lock.release()
        if not torch.isfinite(logits.float()).all():
            raise RuntimeError("LLM: non-finite logits on a one-token forward pass")
