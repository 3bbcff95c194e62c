"""Prompts, answer formatting/parsing and batching of text for ECG question answering.

Answers are sets of option strings: :func:`format_answer` writes them sorted and comma-joined,
:func:`parse_answer` reads generated text back into a subset of the candidate options. Training
examples put the loss on the answer tokens and the final eos only.
"""

from __future__ import annotations

import random
import re
from typing import Any, Iterable, Sequence

import torch
from transformers import PreTrainedTokenizerBase

from ecglm.config.schema import PromptConfig

IGNORE_INDEX = -100
"""Label value ignored by the loss (prefix, prompt and padding positions)."""

_SEPARATORS = re.compile(r"\s*(?:,|;|/|\band\b|\bor\b|&)\s*", flags=re.IGNORECASE)
_STRIP = " \t\r\n.:!?'\"`()[]{}*"


class PromptError(ValueError):
    """A QA row or example is missing a field or holds a value of the wrong kind."""


def _as_str_list(value: Any, field: str) -> list[str]:
    """Accept lists, tuples and numpy arrays (Parquet rows) of strings."""
    if value is None or isinstance(value, (str, bytes)):
        raise PromptError(f"{field}: expected a list of strings, got {value!r}")
    try:
        return [str(v) for v in list(value)]
    except TypeError as exc:
        raise PromptError(f"{field}: expected a list of strings, got {value!r}") from exc


def build_prompt(question: str, options: list[str], reports: list[str], n_ecg: int) -> str:
    """Instruction text placed after the ECG prefix; it ends with ``"Answer:"``.

    Args:
        question: the ECG-QA question.
        options: candidate answers, in the order shown.
        reports: reference reports of similar ECGs (empty: no reference section).
        n_ecg: number of ECGs attached (1, or 2 for comparisons).
    """
    if n_ecg < 1:
        raise PromptError(f"n_ecg: expected >= 1, got {n_ecg}")
    if n_ecg == 1:
        intro = "The signal tokens above encode one 12-lead ECG."
    else:
        intro = (f"The signal tokens above encode {n_ecg} 12-lead ECGs, in order "
                 f"(first, second{', ...' if n_ecg > 2 else ''}).")
    lines = [intro]
    cleaned = [r.strip() for r in reports if r and r.strip()]
    if cleaned:
        lines.append("Reports written for similar ECGs (for reference only):")
        lines.extend(f"- {r}" for r in cleaned)
    lines.append(f"Question: {question.strip()}")
    lines.append(f"Candidate answers: {', '.join(options)}")
    lines.append("Reply with every candidate answer that applies, separated by commas.")
    lines.append("Answer:")
    return "\n".join(lines)


def render_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str, use_chat_template: bool) -> str:
    """Wrap ``prompt`` as a user turn of the tokenizer's chat template when asked and available
    (``llm.use_chat_template``); otherwise return it unchanged."""
    if not use_chat_template or not getattr(tokenizer, "chat_template", None):
        return prompt
    return str(tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                             tokenize=False, add_generation_prompt=True))


def format_answer(answer: Iterable[str]) -> str:
    """Canonical answer text: unique entries, sorted, joined with ``", "``."""
    return ", ".join(sorted({str(a).strip() for a in answer if str(a).strip()}))


def _norm(text: str) -> str:
    return " ".join(text.lower().split()).strip(_STRIP)


def parse_answer(text: str, options: list[str]) -> set[str]:
    """Map generated text to a subset of ``options`` (case-insensitive, option spelling kept).

    Only the first line is read. Options that themselves contain a separator (comma, "and", ...)
    are matched as whole phrases first; the rest is split on commas/semicolons/"and"/"or" and
    each piece must equal an option. Text with no matching piece gives an empty set; "none"
    gives ``{"none"}`` when "none" is an option.
    """
    by_norm = {_norm(o): o for o in options if _norm(o)}
    first = text.strip().splitlines()[0] if text.strip() else ""
    rest = _norm(first)
    found: set[str] = set()
    if rest in by_norm:
        return {by_norm[rest]}
    for key in sorted(by_norm, key=len, reverse=True):
        if not _SEPARATORS.search(key):
            continue
        pattern = re.compile(rf"(?<![\w-]){re.escape(key)}(?![\w-])")
        if pattern.search(rest):
            found.add(by_norm[key])
            rest = pattern.sub(" , ", rest)
    for piece in _SEPARATORS.split(rest):
        key = _norm(piece)
        if key in by_norm:
            found.add(by_norm[key])
    return found


def _truncate_left(ids: list[int], keep: int) -> list[int]:
    return ids[len(ids) - keep:] if keep > 0 else []


def encode_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str, max_length: int) -> list[int]:
    """Prompt token ids (no special tokens added), cut from the left to ``max_length``."""
    ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    return _truncate_left(ids, max_length)


def encode_train_example(tokenizer: PreTrainedTokenizerBase, prompt: str, answer: list[str],
                         max_length: int) -> dict[str, list[int]]:
    """Token ids of ``prompt + answer + eos`` with loss only on ``answer + eos``
    (:func:`encode_text_example` of the formatted answer set).

    When too long, the prompt is cut from the left (the question and options sit at its end);
    the answer is never cut unless it alone exceeds ``max_length``.

    Returns:
        ``{"input_ids": [...], "labels": [...]}`` of equal length ``<= max_length``; labels are
        ``-100`` on prompt tokens.
    """
    return encode_text_example(tokenizer, prompt, format_answer(answer), max_length)


def collate(examples: Sequence[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad ``input_ids`` (and ``labels`` when present) into ``(B, S)`` tensors.

    Returns ``input_ids``, ``attention_mask`` (1 on real tokens) and, when every example has
    labels, ``labels`` with ``-100`` on padding (padding is found by position, so a pad id equal
    to eos is fine).
    """
    if not examples:
        raise PromptError("examples: expected at least one example")
    width = max(len(e["input_ids"]) for e in examples)
    batch = len(examples)
    input_ids = torch.full((batch, width), int(pad_id), dtype=torch.long)
    attention_mask = torch.zeros((batch, width), dtype=torch.long)
    with_labels = all("labels" in e for e in examples)
    labels = torch.full((batch, width), IGNORE_INDEX, dtype=torch.long)
    for i, example in enumerate(examples):
        ids = list(example["input_ids"])
        input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[i, : len(ids)] = 1
        if with_labels:
            lab = list(example["labels"])
            if len(lab) != len(ids):
                raise PromptError(f"examples[{i}].labels: expected {len(ids)} entries, "
                                  f"got {len(lab)}")
            labels[i, : len(lab)] = torch.tensor(lab, dtype=torch.long)
    out = {"input_ids": input_ids, "attention_mask": attention_mask}
    if with_labels:
        out["labels"] = labels
    return out


def _row_n_ecg(row: dict[str, Any]) -> int:
    """ECGs of a row: ``n_ecg`` when present, else ``len(ecg_ids)``, else 1."""
    if row.get("n_ecg") is not None:
        return int(row["n_ecg"])
    ecg_ids = row.get("ecg_ids")
    return len(list(ecg_ids)) if ecg_ids is not None and len(list(ecg_ids)) > 0 else 1


def _pick_report(reports: list[str], rng: random.Random | None, cfg: PromptConfig,
                 retrieval_k: int, max_report_chars: int | None) -> list[str]:
    """The retrieved report shown in a prompt (``[]`` or one): a random one of the top
    ``retrieval_k`` in training with ``cfg.random_report``, else the top-1; cut to
    ``max_report_chars``."""
    top = reports[: max(retrieval_k, 0)]
    if not top:
        return []
    pick = rng.randrange(len(top)) if (rng is not None and cfg.random_report) else 0
    chosen = top[pick]
    return [chosen[:max_report_chars] if max_report_chars is not None else chosen]


def prompt_for_row(row: dict[str, Any], rng: random.Random | None, cfg: PromptConfig,
                   retrieval_k: int, *, max_report_chars: int | None = None) -> str:
    """Prompt for one QA shard row (plus ``"retrieved_reports"``, best first).

    Training (``rng`` given): options shuffled when ``cfg.shuffle_options``; one of the top
    ``retrieval_k`` reports chosen at random when ``cfg.random_report`` (else the top-1).
    Evaluation/serving (``rng`` None): options as stored, top-1 report. ``retrieval_k <= 0`` or
    no retrieved reports: no reference section.
    """
    for key in ("question", "options"):
        if key not in row:
            raise PromptError(f"row.{key}: missing (sample_id={row.get('sample_id')})")
    options = _as_str_list(row["options"], "row.options")
    reports_raw = row.get("retrieved_reports")
    reports = [] if reports_raw is None else _as_str_list(reports_raw, "row.retrieved_reports")
    n_ecg = _row_n_ecg(row)
    chosen = _pick_report(reports, rng, cfg, retrieval_k, max_report_chars)
    if rng is not None and cfg.shuffle_options:
        options = options.copy()
        rng.shuffle(options)
    return build_prompt(str(row["question"]), options, chosen, n_ecg)


def build_generation_prompt(instruction: str, reports: list[str], n_ecg: int = 1) -> str:
    """Prompt of the generation tasks (report, grounding); it ends with ``"Report:"``.

    Args:
        instruction: one instruction of the task's pool (:mod:`ecglm.models.instructions`).
        reports: reference reports of similar ECGs (empty: no reference section).
        n_ecg: ECGs attached (1 for these tasks).
    """
    if n_ecg < 1:
        raise PromptError(f"n_ecg: expected >= 1, got {n_ecg}")
    lines = ["The signal tokens above encode one 12-lead ECG." if n_ecg == 1 else
             f"The signal tokens above encode {n_ecg} 12-lead ECGs, in order."]
    cleaned = [r.strip() for r in reports if r and r.strip()]
    if cleaned:
        lines.append("Reports written for similar ECGs (for reference only):")
        lines.extend(f"- {r}" for r in cleaned)
    lines.append(instruction.strip())
    lines.append("Report:")
    return "\n".join(lines)


def generation_prompt_for_row(row: dict[str, Any], rng: random.Random | None, cfg: PromptConfig,
                              retrieval_k: int, instructions: Sequence[str], *,
                              max_report_chars: int | None = None) -> str:
    """Prompt for one generation-task row (``target`` is not used here).

    Training (``rng`` given): a random instruction of ``instructions`` when
    ``cfg.random_instruction`` and a random top-k report when ``cfg.random_report``;
    evaluation/serving (``rng`` None): the first instruction and the top-1 report.
    """
    if not instructions:
        raise PromptError("instructions: expected a non-empty pool")
    reports_raw = row.get("retrieved_reports")
    reports = [] if reports_raw is None else _as_str_list(reports_raw, "row.retrieved_reports")
    chosen = _pick_report(reports, rng, cfg, retrieval_k, max_report_chars)
    use_random = rng is not None and cfg.random_instruction
    instruction = instructions[rng.randrange(len(instructions))] if use_random else instructions[0]
    return build_generation_prompt(instruction, chosen, _row_n_ecg(row))


def encode_text_example(tokenizer: PreTrainedTokenizerBase, prompt: str, target: str,
                        max_length: int) -> dict[str, list[int]]:
    """Token ids of ``prompt + target + eos`` with loss only on ``target + eos`` (generation
    tasks: the report is the target). The prompt is cut from the left first; the target is cut
    at ``max_length`` only when it alone is longer.
    """
    if tokenizer.eos_token_id is None:
        raise PromptError("tokenizer: needs an eos token")
    sep = "" if (not prompt or prompt[-1].isspace()) else " "
    ids = list(tokenizer(sep + target.strip(), add_special_tokens=False)["input_ids"])
    ids = (ids + [int(tokenizer.eos_token_id)])[:max_length]
    prompt_ids = encode_prompt(tokenizer, prompt, max_length - len(ids))
    return {"input_ids": prompt_ids + ids, "labels": [IGNORE_INDEX] * len(prompt_ids) + ids}
