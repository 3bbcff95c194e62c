"""Turn QA shard rows into model inputs (runs inside Ray Train workers and the evaluator)."""

from __future__ import annotations

import random
from typing import Any, Iterable, Mapping, Optional

import numpy as np
import torch

from ecglm.config import ExperimentConfig
from ecglm.data.shards import decode_signals
from ecglm.models.instructions import instruction_pool
from ecglm.models.prompting import (
    collate,
    encode_prompt,
    encode_text_example,
    encode_train_example,
    generation_prompt_for_row,
    prompt_for_row,
    render_prompt,
)

Row = Mapping[str, Any]


def row_prompt(row: Row, tokenizer: Any, cfg: ExperimentConfig,
               rng: Optional[random.Random]) -> str:
    """The prompt text for one QA row, exactly as training, evaluation and serving build it.

    Retrieved reports are used when ``retrieval.enabled`` (cut to ``retrieval.max_report_chars``);
    ``llm.use_chat_template`` wraps the text in the tokenizer's chat template.
    """
    k = cfg.retrieval.top_k if cfg.retrieval.enabled else 0
    if cfg.task == "qa":
        text = prompt_for_row(dict(row), rng, cfg.prompt, k,
                              max_report_chars=cfg.retrieval.max_report_chars)
    else:
        text = generation_prompt_for_row(
            dict(row), rng, cfg.prompt, k,
            instruction_pool(cfg.task, cfg.targets.n_instructions),
            max_report_chars=cfg.retrieval.max_report_chars)
    return render_prompt(tokenizer, text, cfg.llm.use_chat_template)


def encode_row(row: Row, tokenizer: Any, cfg: ExperimentConfig,
               rng: Optional[random.Random]) -> dict[str, list[int]]:
    """Prompt + target ids with labels on the target only: the answer set (``qa``) or the
    row's ``target`` text (``report``/``grounding``)."""
    prompt = row_prompt(row, tokenizer, cfg, rng)
    if cfg.task == "qa":
        return encode_train_example(tokenizer, prompt, list(row["answer"]), cfg.llm.max_length)
    return encode_text_example(tokenizer, prompt, str(row["target"]), cfg.llm.max_length)


def stack_signals(rows: Iterable[Row]) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode and pad the ECGs of a batch.

    Returns:
        signals ``(B, E, 12, T)`` float32 mV with ``E = max n_ecg`` (missing ECGs are zeros) and
        ecg_mask ``(B, E)`` bool, True where an ECG is present.
    """
    rows = list(rows)
    decoded = [decode_signals(r["signals"], int(r["n_ecg"]), int(r["n_samples"])) for r in rows]
    e_max = max(d.shape[0] for d in decoded)
    n_samples = decoded[0].shape[-1]
    out = np.zeros((len(rows), e_max, 12, n_samples), dtype=np.float32)
    mask = np.zeros((len(rows), e_max), dtype=bool)
    for i, d in enumerate(decoded):
        out[i, : d.shape[0]] = d
        mask[i, : d.shape[0]] = True
    return torch.from_numpy(out), torch.from_numpy(mask)


def train_batch(
    rows: list[Row], tokenizer: Any, cfg: ExperimentConfig, rng: Optional[random.Random]
) -> dict[str, torch.Tensor]:
    """Tensors for a training/validation step.

    ``rng`` set: dynamic prompting (shuffled options, random top-k report); ``None``: the fixed
    evaluation prompt. Returns ``signals (B,E,12,T)``, ``ecg_mask (B,E)``, ``input_ids (B,S)``,
    ``attention_mask (B,S)``, ``labels (B,S)`` (-100 except on answer tokens).
    """
    examples = [encode_row(r, tokenizer, cfg, rng) for r in rows]
    batch = collate(examples, tokenizer.pad_token_id)
    batch["signals"], batch["ecg_mask"] = stack_signals(rows)
    return batch


def prompt_batch(rows: list[Row], tokenizer: Any, cfg: ExperimentConfig) -> dict[str, torch.Tensor]:
    """Tensors for generation: the evaluation prompt without the answer (right-padded)."""
    examples = []
    for r in rows:
        ids = encode_prompt(tokenizer, row_prompt(r, tokenizer, cfg, None), cfg.llm.max_length)
        examples.append({"input_ids": ids, "labels": [-100] * len(ids)})
    batch = collate(examples, tokenizer.pad_token_id)
    batch.pop("labels")
    batch["signals"], batch["ecg_mask"] = stack_signals(rows)
    return batch

