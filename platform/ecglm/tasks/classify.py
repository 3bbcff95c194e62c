"""``task: classify``: multi-label ECG classification answered as generated text (the
abnormality-detection part of GEM and Q-HEART, on PTB-XL).

A record's labels are the classes of ``targets.classes`` it has: its PTB-XL diagnostic
superclasses (NORM, MI, STTC, CD, HYP through ``scp_statements.csv``, diagnostic statements at
or above ``targets.min_likelihood``) or its SCP statement codes. The target text lists them in
vocabulary order, comma separated, or ``none``. The prompt lists the vocabulary; evaluation
parses the generated text back into a label set and scores macro AUC, macro F1, Hamming loss
and subset accuracy (:func:`ecglm.evaluation.metrics.classification_metrics`) for the model,
the label-prior baseline (training prevalence as the score) and the nearest-neighbour baseline
(labels of the closest training record of another patient). The model's AUC ranks records by
label probabilities (:func:`label_probabilities`: every possible answer is scored by the model
and a class's probability is the mass of the answers that name it); F1, Hamming loss and subset
accuracy use the greedy generated answer. A served request carries ``ecg`` and ``fs``;
the response lists the ``labels``.
"""

from __future__ import annotations

import html
import json
import random
import re
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from ecglm.config import ExperimentConfig
from ecglm.data.ptbxl import load_scp_statements, scp_labels
from ecglm.data.rows import LabelRow
from ecglm.evaluation.metrics import classification_metrics
from ecglm.evaluation.report import _CSS, fig_to_data_uri, metric_bars
from ecglm.evaluation.writer import EvalOutcome, section_metrics
from ecglm.models.prompting import build_generation_prompt, encode_text_example
from ecglm.tasks.base import (
    EvalContext,
    Task,
    TaskData,
    evaluation_rows,
    system_headline,
)
from ecglm.tasks.encode import generate_texts, score_answers
from ecglm.tasks.records import Target, build_record_rows

NONE_ANSWER = "none"
SUPERCLASS_NAMES: dict[str, str] = {
    "NORM": "normal ECG", "MI": "myocardial infarction", "STTC": "ST/T change",
    "CD": "conduction disturbance", "HYP": "hypertrophy",
}
"""How the prompt spells out the PTB-XL superclasses (other codes are listed as they are)."""
INSTRUCTION = ("Which of these findings does this ECG show? Answer with the matching codes, "
               "comma separated, or 'none' if none applies.")


def record_labels(scp_codes: str | Mapping[str, float], statements: Any,
                  classes: Sequence[str], min_likelihood: float) -> tuple[str, ...]:
    """The classes of ``classes`` a record has, in vocabulary order.

    Args:
        scp_codes: ``{code: likelihood}`` or its JSON text.
        statements: ``scp_statements.csv`` (None: only the codes themselves count).
    """
    codes = json.loads(scp_codes) if isinstance(scp_codes, str) else dict(scp_codes or {})
    have = {c for c, p in codes.items() if float(p) >= min_likelihood or float(p) == 0.0}
    have |= set(scp_labels(codes, statements, min_likelihood)["superclass"])
    return tuple(c for c in classes if c in have)


def answer_text(labels: Sequence[str]) -> str:
    """``"MI, STTC"`` or ``"none"``."""
    return ", ".join(labels) if labels else NONE_ANSWER


def parse_labels(text: str, classes: Sequence[str]) -> tuple[str, ...]:
    """Classes named in a generated ``text`` (whole words, case-insensitive), in vocabulary
    order; ``none`` or nothing recognised gives ``()``."""
    found = {c for c in classes
             if re.search(rf"(?<![A-Za-z0-9]){re.escape(c.lower())}(?![A-Za-z0-9])",
                          text.lower())}
    return tuple(c for c in classes if c in found)


def label_matrix(label_sets: Sequence[Sequence[str]], classes: Sequence[str]) -> np.ndarray:
    """``(N, C)`` 0/1 matrix of label sets."""
    col = {c: i for i, c in enumerate(classes)}
    y = np.zeros((len(label_sets), len(classes)), dtype=np.int64)
    for n, labels in enumerate(label_sets):
        for c in labels:
            y[n, col[c]] = 1
    return y


MAX_ENUMERATED_CLASSES = 6
"""Up to this many classes every label set is a candidate answer (2^6 = 64 per record)."""


def candidate_answers(classes: Sequence[str], train_label_sets: Sequence[Sequence[str]]
                      ) -> list[tuple[str, ...]]:
    """The label sets scored per record: every subset of ``classes`` (vocabulary order, the
    empty set = ``none``) when there are at most :data:`MAX_ENUMERATED_CLASSES`; otherwise the
    sets seen in training plus every single class and ``none`` (an approximation)."""
    if len(classes) <= MAX_ENUMERATED_CLASSES:
        return [tuple(c for i, c in enumerate(classes) if m >> i & 1)
                for m in range(2 ** len(classes))]
    seen = {tuple(c for c in classes if c in set(s)) for s in train_label_sets}
    seen |= {(c,) for c in classes} | {()}
    return sorted(seen, key=lambda s: (len(s), [classes.index(c) for c in s]))


def label_probabilities(logp: np.ndarray, answers: Sequence[Sequence[str]],
                        classes: Sequence[str]) -> np.ndarray:
    """Per-class probabilities ``(N, C)`` from answer log-probabilities ``logp (N, K)``: the
    answers are renormalised over the ``K`` candidates and a class gets the mass of those that
    name it (``P(c) = sum_{S contains c} P(S)``)."""
    p = np.exp(logp - logp.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    has = label_matrix(answers, classes).astype(np.float64)  # (K, C)
    return p @ has


class ClassifyTask(Task[LabelRow]):
    """Multi-label classification as text (see the module docstring)."""

    name = "classify"
    tune_metric = "model/macro_auc"
    row_type = LabelRow
    items = "classify records"

    def build_data(self, cfg: ExperimentConfig, shards: Any) -> TaskData:
        statements = load_scp_statements(Path(cfg.data.shared_root))
        classes = list(cfg.targets.classes)

        def target(record: Mapping[str, Any]) -> Target:
            labels = record_labels(record["scp_codes"] or "{}", statements, classes,
                                   cfg.targets.min_likelihood)
            return Target(answer_text(labels), labels)

        return build_record_rows(cfg, shards, self.name, target,
                                 {"classes": classes,
                                  "min_likelihood": cfg.targets.min_likelihood,
                                  "statements_table": statements is not None})

    def user_text(self, row: LabelRow, cfg: ExperimentConfig,
                  rng: Optional[random.Random]) -> str:
        listed = "; ".join(f"{c} ({SUPERCLASS_NAMES[c]})" if c in SUPERCLASS_NAMES else c
                           for c in cfg.targets.classes)
        reports = list(row.retrieved_reports[:1]) if cfg.retrieval.enabled else []
        if reports and cfg.retrieval.max_report_chars is not None:
            reports = [reports[0][: cfg.retrieval.max_report_chars]]
        text = build_generation_prompt(f"{INSTRUCTION} Codes: {listed}.", reports, row.n_ecg)
        return text.removesuffix("Report:") + "Answer:"

    def encode_target(self, tokenizer: Any, prompt: str, row: LabelRow,
                      max_length: int) -> dict[str, list[int]]:
        return encode_text_example(tokenizer, prompt, row.target, max_length)

    def evaluate(self, ctx: EvalContext[LabelRow]) -> EvalOutcome:
        """``model/<metric>``, ``baseline/prior/<metric>``, ``baseline/nearest_neighbour/...``
        and per-class ``model/f1/<class>``."""
        cfg = ctx.cfg
        classes = list(cfg.targets.classes)
        rows = evaluation_rows(ctx, self.items)
        model = ctx.load_model()
        texts = generate_texts(self, model, rows, cfg)
        parsed = [parse_labels(t, classes) for t in texts]
        y_true = label_matrix([r.labels for r in rows], classes)
        y_model = label_matrix(parsed, classes)
        answers = candidate_answers(classes, [r.labels for r in ctx.train_rows])
        probs = label_probabilities(
            score_answers(self, model, rows, cfg, [answer_text(a) for a in answers],
                          encode_text_example), answers, classes)
        systems = {"model": classification_metrics(y_true, probs, y_model, label_names=classes)}
        base_labels: list[tuple[str, ...]] = [()] * len(rows)
        prior_scores = np.full((len(rows), len(classes)), np.nan)
        if cfg.evaluation.baselines and ctx.train_rows:
            y_train = label_matrix([r.labels for r in ctx.train_rows], classes)
            prior = prior_scores = np.tile(y_train.mean(axis=0), (len(rows), 1))
            systems["prior"] = classification_metrics(y_true, prior, label_names=classes)
            by_id = {r.sample_id: r.labels for r in ctx.train_rows}
            base_labels = [next((by_id[int(i)] for i in ctx.neighbour_ids.get(r.sample_id, [])
                                 if int(i) in by_id), ()) for r in rows]
            y_nn = label_matrix(base_labels, classes)
            systems["nearest_neighbour"] = classification_metrics(
                y_true, y_nn.astype(float), y_nn, label_names=classes)
        metrics = {(f"{name}/{k}" if name == "model" else f"baseline/{name}/{k}"): float(v)
                   for name, m in systems.items() for k, v in m.items()}
        for i, c in enumerate(classes):
            metrics[f"model/prevalence/{c}"] = float(y_true[:, i].mean())
        metrics.update(section_metrics(ctx.sections))
        fig = metric_bars(systems, ("macro_auc", "macro_f1", "subset_accuracy"),
                          f"{cfg.name}: classify on {cfg.evaluation.split} ({len(rows)} records)",
                          size=(6, 3))
        table = [{"sample_id": r.sample_id, "labels": list(r.labels), "generated": t,
                  "parsed": list(p), "nearest_neighbour": list(b),
                  "probabilities": {c: round(float(v), 5) for c, v in zip(classes, pr)},
                  "prior": {c: round(float(v), 5) for c, v in zip(classes, pp)}}
                 for r, t, p, b, pr, pp in zip(rows, texts, parsed, base_labels, probs,
                                               prior_scores)]
        html_text = None
        if cfg.evaluation.report:
            html_text = self._html(cfg, systems, table, fig_to_data_uri(fig, close=False), ctx)
        summary = {"task": cfg.task, "classes": classes,
                   **{s.key: s.summary for s in ctx.sections}}
        return EvalOutcome(metrics, summary, {"predictions.json": table},
                           {"classification.png": fig}, html_text)

    @staticmethod
    def _html(cfg: ExperimentConfig, systems: Mapping[str, Mapping[str, float]],
              table: Sequence[Mapping[str, Any]], figure_uri: str,
              ctx: EvalContext[LabelRow]) -> str:
        keys = ["macro_auc", "macro_f1", "hamming_loss", "subset_accuracy", "n_labels_used"]
        head = "".join(f"<th>{k}</th>" for k in ["system", *keys])
        body = "".join(f"<tr><td>{html.escape(n)}</td>" + "".join(
            f"<td>{float(m.get(k, float('nan'))):.3f}</td>" for k in keys) + "</tr>"
            for n, m in systems.items())
        examples = "".join(
            f"<tr><td>{t['sample_id']}</td><td>{html.escape(', '.join(t['labels']) or '-')}"
            f"</td><td>{html.escape(t['generated'])}</td></tr>"
            for t in table[: max(cfg.evaluation.report_examples, 0) * 4])
        info = {"config": cfg.name, "split": cfg.evaluation.split, "records": len(table),
                "classes": ", ".join(cfg.targets.classes), "checkpoint": ctx.checkpoint,
                "checkpoint step": ctx.checkpoint_step, "MLflow run": ctx.run_id}
        sections = "".join(f"<h2>{html.escape(s.heading)}</h2>{s.html}"
                           for s in ctx.sections if s.html)
        return (f"<!doctype html><html><head><meta charset='utf-8'><title>"
                f"{html.escape(cfg.name)}</title><style>{_CSS}</style></head><body>"
                f"<h1>ecglm evaluation: {html.escape(cfg.name)} (classify)</h1><table>"
                + "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>"
                          for k, v in info.items())
                + f"</table><h2>Metrics</h2><table><tr>{head}</tr>{body}</table>"
                f"<img alt='metrics' src='{figure_uri}'><h2>Examples</h2><table><tr>"
                f"<th>record</th><th>labels</th><th>generated</th></tr>{examples}</table>"
                f"{sections}</body></html>")

    def reference(self, row: Any) -> str:
        return row.target

    def headline(self, metrics: Mapping[str, float]) -> dict[str, dict[str, float]]:
        return system_headline(metrics, ("macro_auc", "macro_f1", "hamming_loss"),
                               ("prior", "nearest_neighbour"))

    def response(self, row: LabelRow, generated: str, cfg: ExperimentConfig
                 ) -> dict[str, Any]:
        return {"task": self.name, "labels": list(parse_labels(generated, cfg.targets.classes)),
                "generated": generated}
