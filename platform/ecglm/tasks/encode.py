"""Rows -> model inputs, the same for every task (Ray Train workers, evaluation, serving).

The task supplies the user-turn text and the target; this module adds what is common: the ECG
placeholder (``fusion.position: placeholder``), the chat template, left truncation to
``llm.max_length``, padding and the stacked signals.
"""

from __future__ import annotations

import random
import time
from dataclasses import replace
from typing import Any, Iterable, Iterator, Optional, Sequence

import numpy as np
import torch

from ecglm.config import ExperimentConfig
from ecglm.models.fusion import build_fusion, split_at_placeholder
from ecglm.models.prompting import collate, encode_prompt, render_prompt
from ecglm.tasks.base import ECGRow, Task


def uses_placeholder(cfg: ExperimentConfig) -> bool:
    """True when the fusion splices the ECG tokens at a prompt marker (``fusion.placeholder``)
    instead of prepending them or caching them as keys/values."""
    return build_fusion(cfg.fusion).prompt_marker is not None


def row_prompt(task: Task, row: ECGRow, tokenizer: Any, cfg: ExperimentConfig,
               rng: Optional[random.Random]) -> str:
    """The rendered prompt of one row, exactly as training, evaluation and serving build it.

    Retrieved reports are used when ``retrieval.enabled`` (cut to
    ``retrieval.max_report_chars``); ``llm.use_chat_template`` wraps the text in the
    tokenizer's chat template.
    """
    text = task.user_text(row, cfg, rng)
    if uses_placeholder(cfg):  # the ECG tokens open the user turn (LLaVA-style)
        text = f"{cfg.fusion.placeholder}\n{text}"
    return render_prompt(tokenizer, text, cfg.llm.use_chat_template)


def _split(prompt: str, tokenizer: Any, cfg: ExperimentConfig) -> tuple[list[int], str]:
    """Placeholder mode: ids of the text before the placeholder and the text after it."""
    before, _, after = prompt.partition(cfg.fusion.placeholder)
    ids, pos = split_at_placeholder(tokenizer, before + cfg.fusion.placeholder,
                                    cfg.fusion.placeholder)
    return ids[:pos], after


def encode_row(task: Task, row: ECGRow, tokenizer: Any, cfg: ExperimentConfig,
               rng: Optional[random.Random]) -> dict[str, Any]:
    """Prompt + target ids with labels on the target only (``prefix_at`` in placeholder
    mode)."""
    prompt = row_prompt(task, row, tokenizer, cfg, rng)
    head: list[int] = []
    if uses_placeholder(cfg):
        head, prompt = _split(prompt, tokenizer, cfg)
    ex: dict[str, Any] = task.encode_target(tokenizer, prompt, row, cfg.llm.max_length - len(head))
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


def stack_signals(rows: Sequence[ECGRow]) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode and pad the ECGs of a batch.

    Returns:
        signals ``(B, E, 12, T)`` float32 mV with ``E = max n_ecg`` (missing ECGs are zeros) and
        ecg_mask ``(B, E)`` bool, True where an ECG is present.
    """
    decoded = [r.ecgs() for r in rows]
    e_max = max(d.shape[0] for d in decoded)
    n_samples = decoded[0].shape[-1]
    out = np.zeros((len(rows), e_max, 12, n_samples), dtype=np.float32)
    mask = np.zeros((len(rows), e_max), dtype=bool)
    for i, d in enumerate(decoded):
        out[i, : d.shape[0]] = d
        mask[i, : d.shape[0]] = True
    return torch.from_numpy(out), torch.from_numpy(mask)


def train_batch(task: Task, rows: Sequence[ECGRow], tokenizer: Any, cfg: ExperimentConfig,
                rng: Optional[random.Random]) -> dict[str, torch.Tensor]:
    """Tensors for a training/validation step.

    ``rng`` set: dynamic prompting (shuffled options, random top-k report or instruction);
    ``None``: the fixed evaluation prompt. Returns ``signals (B,E,12,T)``, ``ecg_mask (B,E)``,
    ``input_ids (B,S)``, ``attention_mask (B,S)``, ``labels (B,S)`` (-100 except on target
    tokens) and, with ``fusion.position: placeholder``, ``prefix_at (B,)``.
    """
    examples = [encode_row(task, r, tokenizer, cfg, rng) for r in rows]
    batch = _with_prefix_at(collate(examples, tokenizer.pad_token_id), examples)
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


def prompt_batch(task: Task, rows: Sequence[ECGRow], tokenizer: Any, cfg: ExperimentConfig
                 ) -> dict[str, torch.Tensor]:
    """Tensors for generation: the evaluation prompt without the target (right-padded)."""
    batch = prompt_ids_batch([row_prompt(task, r, tokenizer, cfg, None) for r in rows],
                             tokenizer, cfg)
    batch["signals"], batch["ecg_mask"] = stack_signals(rows)
    return batch


def batched(rows: Iterable[ECGRow], size: int) -> Iterator[list[ECGRow]]:
    """Consecutive lists of ``size`` rows (the last may be shorter) from one pass over
    ``rows``."""
    chunk: list[ECGRow] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@torch.no_grad()
def generate_texts(task: Task, model: Any, rows: Sequence[ECGRow], cfg: ExperimentConfig
                   ) -> list[str]:
    """Greedy generation from the evaluation prompt of every row, ``evaluation.batch_size`` at
    a time, with a progress line (rows/s, ETA).

    Args:
        model: an :class:`~ecglm.models.ecg_lm.ECGLanguageModel` (put in eval mode here).
        rows: rows with ``retrieved_reports``.
    """
    model.eval()
    device = next(model.parameters()).device  # the batch follows the model (GPU in workers)
    out: list[str] = []
    bs = cfg.evaluation.batch_size
    t0 = time.perf_counter()
    for chunk in batched(rows, bs):  # one iteration: a split read on demand streams
        batch = {k: v.to(device) for k, v in
                 prompt_batch(task, chunk, model.tokenizer, cfg).items()}
        signals, ecg_mask = batch.pop("signals"), batch.pop("ecg_mask")
        # input_ids, attention_mask and, with fusion.position=placeholder, prefix_at
        out += model.generate(signals, ecg_mask, max_new_tokens=cfg.llm.max_new_tokens, **batch)
        rate = len(out) / max(time.perf_counter() - t0, 1e-9)
        print(f"[eval] {len(out)}/{len(rows)} generated ({rate:.2f}/s, ETA "
              f"{(len(rows) - len(out)) / max(rate, 1e-9):.0f}s)", flush=True)
    return out


def answer_ids(tokenizer: Any, prompt: str, encode: Any, max_length: int) -> list[int]:
    """The target tokens (those with a label) of ``encode(tokenizer, prompt, max_length)``:
    exactly what training puts the loss on for that answer (eos included)."""
    ex = encode(tokenizer, prompt, max_length)
    return [int(t) for t, lab in zip(ex["input_ids"], ex["labels"]) if lab != -100]


@torch.no_grad()
def score_answers(task: Task, model: Any, rows: Sequence[ECGRow], cfg: ExperimentConfig,
                  answers: Sequence[Any], encode: Any) -> np.ndarray:
    """Log-probability of each candidate answer for every row (teacher forced, greedy-free).

    Args:
        model: an :class:`~ecglm.models.ecg_lm.ECGLanguageModel` (put in eval mode here).
        answers: ``K`` candidate answers, each turned into target tokens by
            ``encode(tokenizer, prompt, answer, max_length)`` (the task's own target encoding,
            so a candidate is tokenised as in training).

    Returns:
        ``(N, K)`` float64 summed log-probabilities (eos included), rows in order. One prompt
        forward per row plus ``K`` short continuations on its cache; a progress line per
        ``evaluation.batch_size`` rows. The prompt is cut from the left to ``llm.max_length``
        minus the longest candidate, so every candidate sees the same prompt; where nothing is
        cut (the usual case) each score is exactly minus the summed training loss of that
        answer.
    """
    model.eval()
    device = next(model.parameters()).device
    tok = model.tokenizer
    out = np.zeros((len(rows), len(answers)), dtype=np.float64)
    t0 = time.perf_counter()
    for n, row in enumerate(rows):
        full = row_prompt(task, row, tok, cfg, None)
        prompt = _split(full, tok, cfg)[1] if uses_placeholder(cfg) else full  # as encode_row
        ids = [answer_ids(tok, prompt, lambda t, p, m, a=a: encode(t, p, a, m),
                          cfg.llm.max_length) for a in answers]
        width = max(len(i) for i in ids)
        # the prompt keeps max_length - the longest answer tokens (cut from the left, as
        # training cuts it before its target), the same window for every candidate
        short = replace(cfg, llm=replace(cfg.llm, max_length=max(cfg.llm.max_length - width, 1)))
        cont = torch.full((len(ids), width), int(tok.pad_token_id), dtype=torch.long)
        cmask = torch.zeros((len(ids), width), dtype=torch.long)
        for k, i in enumerate(ids):
            cont[k, : len(i)] = torch.tensor(i)
            cmask[k, : len(i)] = 1
        batch = {k: v.to(device) for k, v in prompt_ids_batch([full], tok, short).items()}
        signals, ecg_mask = (t.to(device) for t in stack_signals([row]))
        out[n] = model.score(signals, ecg_mask, continuations=cont, cont_mask=cmask,
                             **batch).double().cpu().numpy()
        if (n + 1) % cfg.evaluation.batch_size == 0 or n + 1 == len(rows):
            rate = (n + 1) / max(time.perf_counter() - t0, 1e-9)
            print(f"[eval] {n + 1}/{len(rows)} scored over {len(answers)} answers "
                  f"({rate:.2f}/s, ETA {(len(rows) - n - 1) / max(rate, 1e-9):.0f}s)",
                  flush=True)
    return out
