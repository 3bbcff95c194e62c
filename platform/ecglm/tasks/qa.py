"""``task: qa``: ECG question answering (ECG-QA; Q-HEART).

Rows are the QA shards' items (one or two ECGs, a question, its options and the answer set).
The target is the answer set as text; evaluation parses the generated text back into the row's
options and scores set exact match per question type, beside the majority and question-only
baselines, an optional EM-vs-noise curve and an optional LLM judge. A served request carries
``question`` and ``options`` (optional for yes/no questions).
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from ecglm.config import ExperimentConfig
from ecglm.config.schema import ServeConfig
from ecglm.data.shards import require_qa_dataset
from ecglm.evaluation.baselines import fit_qa_baselines, predict_baseline
from ecglm.evaluation.metrics import binary_auc
from ecglm.evaluation.judging import judge_section
from ecglm.evaluation.qa import Prediction, exact_match, predictions_table, score
from ecglm.evaluation.regimes import select_regime
from ecglm.evaluation.report import em_comparison_figure, pick_examples, render_report
from ecglm.evaluation.robustness import curve_metrics, curve_section, noise_curve
from ecglm.evaluation.writer import EvalOutcome, section_metrics
from ecglm.models.prompting import encode_train_example, parse_answer, prompt_for_row
from ecglm.data.rows import QARow
from ecglm.tasks.base import (
    EvalContext,
    RequestError,
    RowCounts,
    Task,
    TaskData,
    TaskManifest,
    serving_row,
)
from ecglm.tasks.encode import generate_texts, score_answers

MAX_OPTIONS = 64
"""Most candidate answers a request may list."""
YES_NO_OPTIONS: tuple[str, ...] = ("yes", "no", "not sure")
"""Options used when a yes/no question comes without ``options`` (ECG-QA's verify wording)."""
YES_NO_FIRST_WORDS = frozenset({"does", "is", "are", "do", "was", "were"})
"""First words that mark a yes/no question."""


def validate_question(value: Any, serve: ServeConfig) -> str:
    """Non-empty ``question`` of at most ``serve.max_question_chars`` characters (stripped)."""
    if not isinstance(value, str):
        raise RequestError(422, "question", f"expected a string, got {type(value).__name__}")
    question = value.strip()
    if not question:
        raise RequestError(422, "question", "must not be empty")
    if len(question) > serve.max_question_chars:
        raise RequestError(422, "question", f"{len(question)} characters, at most "
                                            f"{serve.max_question_chars} allowed")
    return question


def is_yes_no_question(question: str) -> bool:
    """True when the first word is one of :data:`YES_NO_FIRST_WORDS` (case-insensitive)."""
    words = question.split(maxsplit=1)
    return bool(words) and words[0].lower() in YES_NO_FIRST_WORDS


def validate_options(value: Any, question: str, serve: ServeConfig) -> tuple[list[str], bool]:
    """Candidate answers: 1..64 distinct non-empty strings (each at most
    ``serve.max_question_chars``), or the yes/no defaults for a yes/no question.

    Returns:
        ``(options, defaulted)``.
    """
    if value is None:
        if is_yes_no_question(question):
            return list(YES_NO_OPTIONS), True
        raise RequestError(422, "options", "missing \"options\": send the candidate answers as "
                                           "a list of strings (only yes/no questions, whose "
                                           "first word is Does/Is/Are/Do/Was/Were, get "
                                           "[\"yes\", \"no\", \"not sure\"] by default)")
    if not isinstance(value, list):
        raise RequestError(422, "options", f"expected a list of strings, got "
                                           f"{type(value).__name__}")
    if not 1 <= len(value) <= MAX_OPTIONS:
        raise RequestError(422, "options", f"expected 1 to {MAX_OPTIONS} options, "
                                           f"got {len(value)}")
    options: list[str] = []
    for i, opt in enumerate(value):
        if not isinstance(opt, str) or not opt.strip():
            raise RequestError(422, "options", f"options[{i}]: expected a non-empty string, "
                                               f"got {opt!r}")
        if len(opt) > serve.max_question_chars:
            raise RequestError(422, "options", f"options[{i}]: {len(opt)} characters, at most "
                                               f"{serve.max_question_chars} allowed")
        if opt.strip() in options:
            raise RequestError(422, "options", f"options[{i}]: duplicate {opt.strip()!r}")
        options.append(opt.strip())
    return options, False


def verify_probabilities(task: "QATask", model: Any, rows: Sequence[QARow],
                         cfg: ExperimentConfig) -> dict[int, float]:
    """``{sample_id: P(yes)}`` for the verify questions (yes/no among their options): both
    answers are scored as training encodes them and renormalised against each other. Greedy
    decoding answers "no" whenever ``P(yes) < 0.5``; this probability shows whether the model
    ranks the "yes" items higher even when it never says yes."""
    chosen = [r for r in rows if r.question_type.endswith("verify")
              and "yes" in r.options and "no" in r.options]
    if not chosen:
        return {}
    logp = score_answers(task, model, chosen, cfg, [["yes"], ["no"]],
                         lambda tok, prompt, answer, n: encode_train_example(tok, prompt,
                                                                             list(answer), n))
    p_yes = 1.0 / (1.0 + np.exp(logp[:, 1] - logp[:, 0]))
    return {int(r.sample_id): float(p) for r, p in zip(chosen, p_yes)}


def verify_metrics(preds: Sequence[Prediction]) -> dict[str, float]:
    """``verify/auc``: ROC AUC of ``P(yes)`` against the gold yes/no of the verify items (0.5:
    no better than the prior), when both answers occur; ``verify/n`` items."""
    scored = [p for p in preds if p.p_yes is not None and p.gold in (["yes"], ["no"])]
    y = np.array([p.gold == ["yes"] for p in scored])
    out = {"verify/n": float(len(scored))}
    if scored and 0 < y.sum() < len(y):
        out["verify/auc"] = binary_auc(y, np.array([p.p_yes for p in scored]))
    return out


def predict(task: "QATask", model: Any, rows: Sequence[QARow], cfg: ExperimentConfig
            ) -> list[Prediction]:
    """Generate an answer for every row and parse it into the row's option set."""
    preds: list[Prediction] = []
    for r, text in zip(rows, generate_texts(task, model, rows, cfg)):
        parsed = sorted(parse_answer(text, list(r.options)))
        gold = list(r.answer)
        preds.append(Prediction(r.sample_id, r.question_type, r.attribute_type, r.question,
                                gold, text, parsed, exact_match(parsed, gold)))
    return preds


class QATask(Task[QARow]):
    """ECG question answering (see the module docstring)."""

    name = "qa"
    tune_metric = "em/overall"
    row_type = QARow
    items = "QA items"
    request_fields = frozenset({"question", "options"})

    def check_config(self, cfg: ExperimentConfig) -> None:
        require_qa_dataset(cfg)  # QA needs ECG-QA items (PTB-XL)

    def build_data(self, cfg: ExperimentConfig, shards: Any) -> TaskData:
        per_split = {s: int(c.get("qa", 0)) for s, c in
                     shards.manifest["counts"]["per_split"].items()}
        n = sum(per_split.values())
        # the QA shards were written with the records (their quarantine is the records')
        manifest = TaskManifest(self.name, RowCounts(n, n, 0, per_split), None,
                                {"source": shards.manifest.get("source"),
                                 "config_hash": shards.manifest.get("config_hash")})
        return TaskData(shards.root, dict(shards.qa), manifest)

    def user_text(self, row: QARow, cfg: ExperimentConfig,
                  rng: Optional[random.Random]) -> str:
        k = cfg.retrieval.top_k if cfg.retrieval.enabled else 0
        fields = {"question": row.question, "options": list(row.options),
                  "retrieved_reports": list(row.retrieved_reports), "n_ecg": row.n_ecg,
                  "sample_id": row.sample_id}
        return prompt_for_row(fields, rng, cfg.prompt, k,
                              max_report_chars=cfg.retrieval.max_report_chars)

    def encode_target(self, tokenizer: Any, prompt: str, row: QARow,
                      max_length: int) -> dict[str, list[int]]:
        return encode_train_example(tokenizer, prompt, list(row.answer), max_length)

    def evaluate(self, ctx: EvalContext[QARow]) -> EvalOutcome:
        """Exact match per question type (``em/<type>``...), baselines
        (``baseline/<name>/em/...``), the noise curve (``noise/<snr>/em/...``) and the judge
        (``judge/m2m/<criterion>``) as ``evaluation.*`` asks."""
        cfg = ctx.cfg
        rows = select_regime(ctx.rows, cfg.evaluation.regime, cfg.seed)
        if cfg.evaluation.max_items is not None:
            rows = rows[: cfg.evaluation.max_items]
        if not rows:
            raise ValueError(f"evaluation.split: split '{cfg.evaluation.split}' has no QA items")
        model = ctx.load_model()
        preds = predict(self, model, rows, cfg)
        p_yes = verify_probabilities(self, model, rows, cfg)
        preds = [replace(p, p_yes=p_yes.get(int(p.sample_id))) for p in preds]
        metrics = {**score(preds), **verify_metrics(preds)}
        systems: dict[str, list[Prediction]] = {"model": preds}
        if cfg.evaluation.baselines and ctx.train_rows:
            for name, base in fit_qa_baselines(ctx.train_rows).items():
                systems[name] = predict_baseline(base, rows)
                metrics.update({f"baseline/{name}/{k}": v
                                for k, v in score(systems[name]).items()})
        curve: dict[str, dict[str, float]] = {}
        if cfg.evaluation.noise_snr_db:
            curve = noise_curve(lambda r: predict(self, model, r, cfg), score, rows,
                                cfg.evaluation.noise_snr_db, cfg.evaluation.noise_seed)
            metrics.update(curve_metrics(curve))
        sections = list(ctx.sections)
        if cfg.evaluation.judge != "none":
            sections.append(judge_section(preds, cfg.evaluation.judge,
                                          cfg.evaluation.judge_model_path,
                                          cfg.evaluation.judge_max_items))
        metrics.update(section_metrics(sections))
        summary = {"regime": cfg.evaluation.regime, **({"noise": curve} if curve else {}),
                   **{sec.key: sec.summary for sec in sections}}
        tables = {"predictions.json": predictions_table(preds),
                  **{f"predictions_{name}.json": predictions_table(p)
                     for name, p in systems.items() if name != "model"}}
        fig = em_comparison_figure({"model": metrics}, f"{cfg.name}: exact match on "
                                   f"{cfg.evaluation.split} ({len(preds)} items)")
        html = None
        if cfg.evaluation.report:
            extra = [curve_section(curve)] if curve else []
            extra += [(sec.heading, sec.html) for sec in sections if sec.html]
            info = {"config": cfg.name, "split": cfg.evaluation.split,
                    "regime": cfg.evaluation.regime, "items": len(rows),
                    "checkpoint": ctx.checkpoint, "checkpoint step": ctx.checkpoint_step,
                    "MLflow run": ctx.run_id}
            examples = pick_examples(rows, preds, cfg.data.fs, cfg.evaluation.report_examples)
            html = render_report(f"ecglm evaluation: {cfg.name}", info, systems,
                                 {name: score(p) for name, p in systems.items()}, examples,
                                 extra)
        return EvalOutcome(metrics, summary, tables, {"em_per_type.png": fig}, html)

    def request_row(self, fields: Mapping[str, Any], serve: ServeConfig) -> QARow:
        if "question" not in fields:
            raise RequestError(422, "question", "missing required field")
        question = validate_question(fields["question"], serve)
        options, _ = validate_options(fields.get("options"), question, serve)
        return serving_row(QARow, question=question, options=tuple(options))

    def request_fields_of(self, row: QARow) -> dict[str, Any]:
        return {"question": row.question, "options": list(row.options)}

    def reference(self, row: QARow) -> str:
        return ", ".join(row.answer)

    def headline(self, metrics: Mapping[str, float]) -> dict[str, dict[str, float]]:
        out = {"model": {k: round(v, 3) for k, v in metrics.items()
                         if k.startswith("em/") or k == "verify/auc"}}
        for name in ("majority", "blind"):
            base = {k.split("/", 2)[2]: round(v, 3) for k, v in metrics.items()
                    if k.startswith(f"baseline/{name}/em/") and k.count("/") == 3}
            if base:
                out[name] = base
        return out

    def response(self, row: QARow, generated: str, cfg: ExperimentConfig) -> dict[str, Any]:
        return {"answer": sorted(parse_answer(generated, list(row.options))),
                "generated": generated, "options": list(row.options)}
