"""LLM-as-judge: score a candidate text against a reference on a set of criteria.

Backends (anything with ``complete(messages) -> str``):

* :class:`LocalHFJudge` — a causal LM from a local Hugging Face folder (greedy decoding).
* :class:`OpenAIJudge` — any OpenAI-compatible ``/v1/chat/completions`` endpoint; URL, key and
  model from ``$ECGLM_JUDGE_URL``, ``$ECGLM_JUDGE_API_KEY``, ``$ECGLM_JUDGE_MODEL`` unless given.

Criteria sets: ``meit`` (4 criteria, 1-5), ``gem`` (8 grounding criteria, 1-5) and ``m2m``
(model-to-model agreement with the reference, 1-5). The judge is asked for one JSON object
``{"<criterion>": <integer>, ...}``; :func:`parse_scores` also accepts ``criterion: N`` lines.
A reply that does not parse (or a transport error) is retried; after ``retries`` extra attempts
the item is recorded as a failure (:attr:`JudgeResult.error`), never raised.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Protocol, Sequence

import requests

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class Criterion:
    """One scored aspect: ``name`` (JSON key) and what the judge should look at."""

    name: str
    description: str


CRITERIA: dict[str, tuple[Criterion, ...]] = {
    "meit": (
        Criterion("terminology", "uses correct, standard ECG and cardiology terms"),
        Criterion("logic", "findings and conclusions follow from each other without "
                           "contradictions"),
        Criterion("completeness", "covers the findings that the reference report contains"),
        Criterion("diagnosis", "the stated diagnosis agrees with the reference diagnosis"),
    ),
    "gem": (
        Criterion("diagnosis_accuracy", "the final diagnoses agree with the reference"),
        Criterion("analysis_completeness", "rhythm, rate, axis, intervals, waves and segments "
                                           "are all examined"),
        Criterion("relevance", "the text stays on what this ECG shows and the question asks"),
        Criterion("lead_coverage", "the leads relevant to each finding are considered"),
        Criterion("lead_accuracy", "findings are attributed to the right leads"),
        Criterion("feature_grounding", "statements cite measured values (intervals, "
                                       "amplitudes, rates) that match the given features"),
        Criterion("evidence_based_reasoning", "each conclusion is supported by stated "
                                              "evidence"),
        Criterion("clinical_fidelity", "the interpretation would be safe and credible to a "
                                       "cardiologist"),
    ),
    "m2m": (
        Criterion("agreement", "how well the candidate answer conveys the same medical content "
                               "as the reference answer"),
    ),
}


class JudgeBackend(Protocol):
    """Turns chat messages into the judge's reply text."""

    def complete(self, messages: Messages) -> str: ...


class JudgeParseError(ValueError):
    """The judge's reply has no valid score for every criterion."""


def build_messages(criteria: Sequence[Criterion], candidate: str, reference: str,
                   question: str = "", context: str = "", scale: tuple[int, int] = (1, 5)
                   ) -> Messages:
    """System + user messages asking for integer scores in ``scale`` as one JSON object."""
    lo, hi = scale
    keys = ", ".join(f'"{c.name}": <{lo}-{hi}>' for c in criteria)
    system = ("You grade electrocardiogram interpretations written by an AI system. Compare "
              "the candidate with the reference written by a clinician and give each criterion "
              f"a whole number from {lo} (very poor) to {hi} (excellent). Reply with a single "
              "JSON object and nothing else.")
    lines = ["Criteria:"] + [f"- {c.name}: {c.description}" for c in criteria]
    if question:
        lines += ["", f"Question or instruction: {question}"]
    if context:
        lines += ["", f"Measured ECG features: {context}"]
    lines += ["", f"Reference: {reference}", "", f"Candidate: {candidate}", "",
              f"Answer format: {{{keys}}}"]
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n".join(lines)}]


def parse_scores(text: str, criteria: Sequence[Criterion], scale: tuple[int, int] = (1, 5)
                 ) -> dict[str, int]:
    """Scores from a judge reply: the first JSON object holding every criterion, else
    ``name: N`` / ``name = N`` lines. Raises :class:`JudgeParseError` otherwise."""
    lo, hi = scale
    names = [c.name for c in criteria]
    found: dict[str, Any] = {}
    for m in re.finditer(r"\{[^{}]*\}", text, flags=re.S):
        try:
            obj = json.loads(m.group(0))
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and all(n in obj for n in names):
            found = {n: obj[n] for n in names}
            break
    if not found:
        for n in names:
            m = re.search(rf"[\"']?{re.escape(n)}[\"']?\s*[:=]\s*\"?(-?\d+(?:\.\d+)?)",
                          text, flags=re.I)
            if m:
                found[n] = m.group(1)
    missing = [n for n in names if n not in found]
    if missing:
        raise JudgeParseError(f"no score for {missing} in reply {text[:200]!r}")
    out: dict[str, int] = {}
    for n in names:
        try:
            v = float(found[n])
        except (TypeError, ValueError) as err:
            raise JudgeParseError(f"{n}: {found[n]!r} is not a number") from err
        if v != int(v) or not lo <= v <= hi:
            raise JudgeParseError(f"{n}: {found[n]!r} is not an integer in {lo}..{hi}")
        out[n] = int(v)
    return out


@dataclass
class JudgeResult:
    """Outcome for one item: ``scores`` (None on failure), replies seen, and the last error."""

    scores: Optional[dict[str, int]]
    replies: list[str] = field(default_factory=list)
    attempts: int = 0
    error: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.scores is not None


@dataclass
class Judge:
    """Scores items with ``backend`` on the criteria set ``criteria`` (``meit``/``gem``/``m2m``).

    Args:
        backend: a :class:`JudgeBackend`.
        criteria: name of a set in :data:`CRITERIA`.
        retries: extra attempts after a malformed reply or a backend error.
    """

    backend: JudgeBackend
    criteria: str = "meit"
    retries: int = 2
    scale: tuple[int, int] = (1, 5)

    def __post_init__(self) -> None:
        if self.criteria not in CRITERIA:
            raise ValueError(f"evaluation.judge_criteria: expected one of {sorted(CRITERIA)}, "
                             f"got {self.criteria!r}")
        if self.retries < 0:
            raise ValueError("evaluation.judge_retries: must be >= 0")

    def score(self, candidate: str, reference: str, question: str = "",
              context: str = "") -> JudgeResult:
        crit = CRITERIA[self.criteria]
        msgs = build_messages(crit, candidate, reference, question, context, self.scale)
        res = JudgeResult(None)
        for _ in range(self.retries + 1):
            res.attempts += 1
            try:
                reply = self.backend.complete(msgs)
            except Exception as err:  # transport/model errors count as a failed attempt
                res.error = f"{type(err).__name__}: {err}"
                continue
            res.replies.append(reply)
            try:
                res.scores = parse_scores(reply, crit, self.scale)
                res.error = None
                return res
            except JudgeParseError as err:
                res.error = str(err)
        return res

    def score_many(self, candidates: Sequence[str], references: Sequence[str],
                   questions: Optional[Sequence[str]] = None) -> tuple[dict[str, float],
                                                                     list[JudgeResult]]:
        """Judge N items; returns (``judge/<criterion>`` means over successes, ``judge/mean``,
        ``judge/failures``, ``judge/n``) and the per-item results."""
        qs = list(questions) if questions is not None else [""] * len(candidates)
        results = [self.score(c, r, q) for c, r, q in zip(candidates, references, qs)]
        ok = [r.scores for r in results if r.scores]
        out: dict[str, float] = {"judge/n": float(len(results)),
                                 "judge/failures": float(len(results) - len(ok))}
        if ok:
            for c in CRITERIA[self.criteria]:
                out[f"judge/{c.name}"] = sum(s[c.name] for s in ok) / len(ok)
            out["judge/mean"] = sum(sum(s.values()) / len(s) for s in ok) / len(ok)
        return out, results


class LocalHFJudge:
    """A local causal LM as judge (greedy decoding, chat template when the tokenizer has one).

    Args:
        model_dir: Hugging Face folder (e.g. from ``ecglm.models.llm.prepare_llm_dir``).
        max_new_tokens: reply length limit.
    """

    def __init__(self, model_dir: str | Path, max_new_tokens: int = 96) -> None:
        # deferred on purpose: only the local judge needs torch + transformers (seconds)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.model = AutoModelForCausalLM.from_pretrained(str(model_dir),
                                                          dtype=torch.float32).eval()
        self.max_new_tokens = max_new_tokens
        self._torch = torch

    def complete(self, messages: Messages) -> str:
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            prompt = "\n\n".join(m["content"] for m in messages) + "\n\nJSON:"
        enc = tok(prompt, return_tensors="pt")
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        with self._torch.no_grad():
            out = self.model.generate(**enc, max_new_tokens=self.max_new_tokens,
                                      do_sample=False, pad_token_id=pad)
        return str(tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True))


class OpenAIJudge:
    """An OpenAI-compatible chat endpoint as judge.

    Args:
        url: base URL (``/v1/chat/completions`` is appended unless present); default
            ``$ECGLM_JUDGE_URL``.
        api_key: bearer token; default ``$ECGLM_JUDGE_API_KEY`` (may be empty for local servers).
        model: model name sent in the request; default ``$ECGLM_JUDGE_MODEL`` or ``judge``.
        timeout_s: HTTP timeout per request in seconds.
    """

    def __init__(self, url: Optional[str] = None, api_key: Optional[str] = None,
                 model: Optional[str] = None, timeout_s: float = 60.0) -> None:
        base = url or os.environ.get("ECGLM_JUDGE_URL", "")
        if not base:
            raise ValueError("judge: set ECGLM_JUDGE_URL (OpenAI-compatible endpoint)")
        base = base.rstrip("/")
        self.url = base if base.endswith("/chat/completions") else (
            base + ("/chat/completions" if base.endswith("/v1") else "/v1/chat/completions"))
        self.api_key = api_key if api_key is not None else os.environ.get(
            "ECGLM_JUDGE_API_KEY", "")
        self.model = model or os.environ.get("ECGLM_JUDGE_MODEL", "judge")
        self.timeout_s = timeout_s

    def complete(self, messages: Messages) -> str:

        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        resp = requests.post(self.url, headers=headers, timeout=self.timeout_s,
                             json={"model": self.model, "messages": messages,
                                   "temperature": 0.0})
        resp.raise_for_status()
        return str(resp.json()["choices"][0]["message"]["content"])
