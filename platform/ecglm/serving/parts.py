"""What each Serve replica computes, without Ray: the ECG part (front end + retrieval
encoder) and the LLM part (LLM side + prompts). :mod:`ecglm.serving.deployments` wraps them;
tests use them directly.

Importing this module loads transformers; a replica imports it after
:func:`ecglm.utils.ray_env.set_process_env`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ecglm.config import ExperimentConfig
from ecglm.models import load_front_end_from_checkpoint, load_prefix_lm
from ecglm.data.rows import ECGRow
from ecglm.retrieval.build import embed, load_retrieval_encoder
from ecglm.serving.messages import EncodedPrefix, Generation, GenerationRequest, QueryEmbedding
from ecglm.tasks import get_task
from ecglm.tasks.encode import prompt_ids_batch, row_prompt
from ecglm.checkpoint import TRAINABLE_FILE


def elapsed_ms(t0: float) -> float:
    """Milliseconds since ``t0`` (``time.perf_counter``), rounded to 0.01."""
    return round((time.perf_counter() - t0) * 1000.0, 2)


def serve_prompt(cfg: ExperimentConfig, tokenizer: Any, row: ECGRow,
                 reports: list[str]) -> str:
    """The evaluation prompt of one single-ECG request (task fields as given, top-1 report):
    :func:`ecglm.tasks.encode.row_prompt`, the builder training and evaluation use."""
    return row_prompt(get_task(cfg.task), row.with_reports(reports), tokenizer, cfg, None)


def signal_tensor(signal: np.ndarray, n_samples: int) -> torch.Tensor:
    """``signal (12, n_samples)`` float32 mV -> tensor.

    Raises:
        ValueError: another shape.
    """
    if signal.shape != (12, n_samples):
        raise ValueError(f"signal: expected shape (12, {n_samples}), got {signal.shape}")
    return torch.from_numpy(np.ascontiguousarray(signal, dtype=np.float32))


class ECGPart:
    """Trained ECG front end (prefix; no LLM) and the retrieval encoder saved next to the
    index (embedding; the one the index was built with, not the fine-tuned one)."""

    def __init__(self, cfg: ExperimentConfig, checkpoint_dir: str | Path,
                 retrieval_dir: str | Path) -> None:
        self.n_samples = cfg.data.n_samples
        self.front_end = load_front_end_from_checkpoint(cfg, Path(checkpoint_dir) / TRAINABLE_FILE)
        self.retrieval_encoder = load_retrieval_encoder(retrieval_dir)

    @torch.no_grad()
    def prefix(self, signal: np.ndarray) -> EncodedPrefix:
        """``signal (12, data.n_samples)`` float32 mV -> the ``(1, P, d_llm)`` ECG prefix."""
        t0 = time.perf_counter()
        x = signal_tensor(signal, self.n_samples)
        prefix, prefix_mask = self.front_end(x[None, None], None)
        return EncodedPrefix(prefix, prefix_mask, elapsed_ms(t0))

    @torch.no_grad()
    def embed(self, signal: np.ndarray) -> QueryEmbedding:
        """``signal (12, data.n_samples)`` float32 mV -> retrieval embedding ``(d_enc,)``."""
        t0 = time.perf_counter()
        x = signal_tensor(signal, self.n_samples)
        return QueryEmbedding(embed(self.retrieval_encoder, x.numpy()[None])[0], elapsed_ms(t0))


class LLMPart:
    """LLM side of the trained model (LLM + LoRA + fusion; no encoder or mapper): the
    evaluation prompt and greedy decoding from ECG prefixes."""

    def __init__(self, cfg: ExperimentConfig, checkpoint_dir: str | Path) -> None:
        self.cfg = cfg
        self.model = load_prefix_lm(cfg, Path(checkpoint_dir) / TRAINABLE_FILE)

    def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        """Prompts -> ``(B, S)`` right-padded ids -> greedy decoding -> task responses."""
        tok = self.model.tokenizer
        task = get_task(self.cfg.task)
        prompts = [serve_prompt(self.cfg, tok, r.row, r.reports) for r in requests]
        batch = prompt_ids_batch(prompts, tok, self.cfg)  # exactly as evaluation encodes them
        prefix = torch.cat([r.prefix for r in requests], dim=0)
        prefix_mask = torch.cat([r.prefix_mask for r in requests], dim=0)
        ids = self.model.generate_from_prefix(prefix, prefix_mask, batch["input_ids"],
                                              batch["attention_mask"], self.cfg.llm.max_new_tokens,
                                              prefix_at=batch.get("prefix_at"))
        return [Generation(text, task.response(r.row, text, self.cfg))
                for r, text in zip(requests, self.model.decode(ids))]
