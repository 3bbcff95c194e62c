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
    if uses_placeholder(cfg):  # the ECG tokens open the user turn (LLaVA-style)
        text = f"{cfg.fusion.placeholder}\n{text}"
    return render_prompt(tokenizer, text, cfg.llm.use_chat_template)


def uses_placeholder(cfg: ExperimentConfig) -> bool:
    """True when ECG tokens are spliced at ``fusion.placeholder`` instead of prepended."""
    return cfg.fusion.name == "input_prefix" and cfg.fusion.position == "placeholder"


def _split(prompt: str, tokenizer: Any, cfg: ExperimentConfig) -> tuple[list[int], str]:
    """Placeholder mode: ids of the text before the placeholder and the text after it."""
    from ecglm.models.fusion import split_at_placeholder

    before, _, after = prompt.partition(cfg.fusion.placeholder)
    ids, pos = split_at_placeholder(tokenizer, before + cfg.fusion.placeholder,
                                    cfg.fusion.placeholder)
    return ids[:pos], after


def encode_row(row: Row, tokenizer: Any, cfg: ExperimentConfig,
               rng: Optional[random.Random]) -> dict[str, list[int]]:
    """Prompt + target ids with labels on the target only: the answer set (``qa``) or the
    row's ``target`` text (``report``/``grounding``)."""
    prompt = row_prompt(row, tokenizer, cfg, rng)
    head: list[int] = []
    if uses_placeholder(cfg):
        head, prompt = _split(prompt, tokenizer, cfg)
    room = cfg.llm.max_length - len(head)
    if cfg.task == "qa":
        ex = encode_train_example(tokenizer, prompt, list(row["answer"]), room)
    else:
        ex = encode_text_example(tokenizer, prompt, str(row["target"]), room)
    if uses_placeholder(cfg):
        ex = {"input_ids": head + ex["input_ids"], "labels": [-100] * len(head) + ex["labels"],
              "prefix_at": len(head)}
    return ex


def _with_prefix_at(batch: dict[str, torch.Tensor], examples: list[dict[str, Any]]
                    ) -> dict[str, torch.Tensor]:
    """Add ``prefix_at (B,)`` (placeholder mode) from the examples."""
    if examples and "prefix_at" in examples[0]:
        batch["prefix_at"] = torch.tensor([int(e["prefix_at"]) for e in examples],
                                          dtype=torch.long)
    return batch


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
    ``attention_mask (B,S)``, ``labels (B,S)`` (-100 except on answer tokens) and, with
    ``fusion.position: placeholder``, ``prefix_at (B,)`` (where the ECG tokens go).
    """
    examples = [encode_row(r, tokenizer, cfg, rng) for r in rows]
    batch = _with_prefix_at(collate(examples, tokenizer.pad_token_id), examples)
    batch["signals"], batch["ecg_mask"] = stack_signals(rows)
    return batch


def prompt_batch(rows: list[Row], tokenizer: Any, cfg: ExperimentConfig) -> dict[str, torch.Tensor]:
    """Tensors for generation: the evaluation prompt without the answer (right-padded)."""
    batch = prompt_ids_batch([row_prompt(r, tokenizer, cfg, None) for r in rows], tokenizer, cfg)
    batch["signals"], batch["ecg_mask"] = stack_signals(rows)
    return batch


def prompt_example(prompt: str, tokenizer: Any, cfg: ExperimentConfig) -> dict[str, Any]:
    """Ids of a rendered generation prompt (cut from the left to ``llm.max_length``; in
    placeholder mode the text before the placeholder is kept and ``prefix_at`` added)."""
    head: list[int] = []
    if uses_placeholder(cfg):
        head, prompt = _split(prompt, tokenizer, cfg)
    ids = head + encode_prompt(tokenizer, prompt, cfg.llm.max_length - len(head))
    ex: dict[str, Any] = {"input_ids": ids, "labels": [-100] * len(ids)}
    if uses_placeholder(cfg):
        ex["prefix_at"] = len(head)
    return ex


def prompt_ids_batch(prompts: list[str], tokenizer: Any, cfg: ExperimentConfig
                     ) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``/``attention_mask`` (+ ``prefix_at``) of rendered prompts:
    what evaluation and serving hand to generation."""
    examples = [prompt_example(p, tokenizer, cfg) for p in prompts]
    batch = _with_prefix_at(collate(examples, tokenizer.pad_token_id), examples)
    batch.pop("labels")
    return batch
