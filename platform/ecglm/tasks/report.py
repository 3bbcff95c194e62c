"""``task: report`` (MEIT report generation) and ``task: grounding`` (GEM grounded
interpretation).

Rows are records with a reference text (``target``):

* ``report``: the record's report (``targets.source: report``), the English descriptions of its
  SCP statements (``statements``; PTB-XL's ``scp_statements.csv``) or both, cleaned as MEIT does
  (``nan``/number-only sentences dropped, fewer than ``targets.min_tokens`` tokens quarantined).
* ``grounding``: a GEM-style feature-grounded interpretation composed from the record's own
  measured features (:mod:`ecglm.features`) followed by the statement/report text as the
  impression. GEM had a teacher LLM write these; here the composition is a deterministic
  template, so every number in a target is a measurement of that ECG. Records whose
  delineation fails are quarantined with the reason.

The prompt is an instruction from the task's rephrased pool (random in training, the first one
in evaluation and serving). Evaluation scores the generated texts with BLEU-1..4, METEOR,
ROUGE, CIDEr-D and BERTScore against the targets, beside the nearest-neighbour baseline (the
target of the closest training record of another patient); ``grounding`` also checks every
claim in a text against the record's own measured features. A served request carries only
``ecg`` and ``fs``; the response holds the generated ``report``.
"""

from __future__ import annotations

import html
import itertools
import random
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from ecglm.config import ExperimentConfig, to_dict
from ecglm.data.ptbxl import load_scp_statements
from ecglm.data.reference import reference_text
from ecglm.data.rows import RecordRow
from ecglm.data.sharding import decode_signals
from ecglm.evaluation.grounding import ground_text, grounding_metrics
from ecglm.evaluation.metrics import TextScorer
from ecglm.evaluation.report import _CSS, ecg_plot, fig_to_data_uri, metric_bars
from ecglm.evaluation.reports import REPORT_KEYS, score_reports
from ecglm.evaluation.writer import EvalOutcome, section_metrics
from ecglm.features.grounding import grounding_features
from ecglm.features.summary import summarize, summary_text
from ecglm.models.instructions import instruction_pool
from ecglm.models.prompting import encode_text_example, generation_prompt_for_row
from ecglm.tasks.base import (
    EvalContext,
    Task,
    TaskData,
    evaluation_rows,
    system_headline,
)
from ecglm.tasks.encode import generate_texts
from ecglm.tasks.records import Target, build_record_rows

BAR_KEYS = ("bleu1", "bleu4", "meteor", "rouge_l", "bertscore_f1")


def grounded_text(signal: np.ndarray, fs: float, impression: str) -> str:
    """GEM-style target: measured features in words, then ``Impression: <impression>``.

    Args:
        signal: ``(12, T)`` mV at ``fs`` Hz.

    Raises:
        ValueError: the ECG cannot be delineated (no heartbeat measured).
    """
    summary = summarize(grounding_features(signal, fs))
    if summary["n_beats"] == 0:
        raise ValueError("no heartbeats could be measured")
    text = summary_text(summary)
    return f"{text} Impression: {impression}" if impression else text


def neighbour_targets(rows: Sequence[RecordRow], train_rows: Sequence[RecordRow],
                      neighbour_ids: Mapping[int, Sequence[int]]) -> list[str]:
    """Baseline text per row: the target of its nearest training neighbour that has one
    ("" when none does)."""
    by_id = {r.sample_id: r.target for r in train_rows}
    out = []
    for r in rows:
        ids = [int(i) for i in neighbour_ids.get(r.sample_id, [])]
        out.append(next((by_id[i] for i in ids if i in by_id), ""))
    return out


def grounding_scores(rows: Sequence[RecordRow], systems: Mapping[str, Sequence[str]],
                     fs: float) -> dict[str, dict[str, float]]:
    """Per system, :func:`ecglm.evaluation.grounding.grounding_metrics` of its texts against
    the measured features of each row's own ECG (delineated once per row; rows whose ECG cannot
    be delineated are counted in ``n_unmeasurable`` and skipped)."""
    results: dict[str, list[Any]] = {name: [] for name in systems}
    skipped = 0
    for i, r in enumerate(rows):
        try:
            feats = grounding_features(r.ecgs()[0], fs)
        except ValueError:
            skipped += 1
            continue
        for name, texts in systems.items():
            results[name].append(ground_text(texts[i], feats))
    out = {}
    for name, res in results.items():
        out[name] = grounding_metrics(res)
        out[name]["n_unmeasurable"] = float(skipped)
    return out


def render_text_report(cfg: ExperimentConfig, info: Mapping[str, Any],
                       systems: Mapping[str, Mapping[str, Any]], rows: Sequence[RecordRow],
                       texts: Sequence[str], base: Sequence[str], figure_uri: str,
                       sections: Sequence[Any]) -> str:
    """``report.html`` of a text-generation evaluation: metric table, chart, examples."""
    keys = [k for k in (*REPORT_KEYS, "grounding/score", "grounding/claims_per_text")
            if any(k in m for m in systems.values())]
    head = "".join(f"<th>{html.escape(k)}</th>" for k in ["system", *keys, "n"])
    body = "".join("<tr><td>" + html.escape(name) + "</td>" + "".join(
        f"<td>{float(m.get(k, float('nan'))):.3f}</td>" for k in keys)
        + f"<td>{int(m.get('n', 0))}</td></tr>" for name, m in systems.items())
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(cfg.name)}"
             f"</title><style>{_CSS}</style></head><body>"
             f"<h1>ecglm evaluation: {html.escape(cfg.name)} ({html.escape(cfg.task)})</h1>",
             "<table>" + "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}"
                                 f"</td></tr>" for k, v in info.items()) + "</table>",
             f"<h2>Text metrics</h2><table><tr>{head}</tr>{body}</table>",
             f"<img alt='metrics' src='{figure_uri}'>", "<h2>Examples</h2>"]
    for r, text, b in itertools.islice(zip(rows, texts, base), cfg.evaluation.report_examples):
        sig = decode_signals(r.signals, 1, r.n_samples)[0]
        parts.append(f"<div class='ex'><img alt='ecg' src='"
                     f"{ecg_plot(sig, cfg.data.fs, 'record ' + str(r.sample_id))}'>"
                     f"<p><b>Reference</b>: {html.escape(r.target)}</p>"
                     f"<p><b>Generated</b>: {html.escape(text)}</p>"
                     f"<p><b>Nearest neighbour</b>: {html.escape(b)}</p></div>")
    parts += [f"<h2>{html.escape(s.heading)}</h2>{s.html}" for s in sections if s.html]
    parts.append("</body></html>")
    return "\n".join(parts)


class ReportTask(Task[RecordRow]):
    """Report generation (see the module docstring)."""

    name = "report"
    tune_metric = "model/rouge_l"
    row_type = RecordRow
    items = "report records"

    def build_data(self, cfg: ExperimentConfig, shards: Any) -> TaskData:
        statements = load_scp_statements(Path(cfg.data.shared_root))
        min_tokens = self.min_tokens(cfg)

        def target(record: Mapping[str, Any]) -> Target:
            text = reference_text(record["report"], record["scp_codes"] or "{}",
                                  cfg.targets.source, statements, min_tokens)
            return self.target(record, text, cfg)

        return build_record_rows(cfg, shards, self.name, target,
                                 {"targets": to_dict(cfg.targets),
                                  "statements_table": statements is not None})

    def min_tokens(self, cfg: ExperimentConfig) -> int:
        """MEIT's minimum length of a reference text."""
        return cfg.targets.min_tokens

    def target(self, record: Mapping[str, Any], text: str, cfg: ExperimentConfig) -> Target:
        """The record's :class:`Target` from its cleaned reference ``text``."""
        if text:
            return Target(text)
        return Target(reason=f"reference text has fewer than {cfg.targets.min_tokens} tokens "
                             f"after cleaning (targets.source={cfg.targets.source})")

    def user_text(self, row: RecordRow, cfg: ExperimentConfig,
                  rng: Optional[random.Random]) -> str:
        k = cfg.retrieval.top_k if cfg.retrieval.enabled else 0
        fields = {"retrieved_reports": list(row.retrieved_reports), "n_ecg": row.n_ecg}
        return generation_prompt_for_row(
            fields, rng, cfg.prompt, k, instruction_pool(self.name, cfg.targets.n_instructions),
            max_report_chars=cfg.retrieval.max_report_chars)

    def encode_target(self, tokenizer: Any, prompt: str, row: RecordRow,
                      max_length: int) -> dict[str, list[int]]:
        return encode_text_example(tokenizer, prompt, row.target, max_length)

    def extra_scores(self, rows: Sequence[RecordRow], texts: Mapping[str, Sequence[str]],
                     cfg: ExperimentConfig) -> dict[str, dict[str, float]]:
        """Task-specific metrics per system, merged into the text metrics (none here)."""
        return {}

    def evaluate(self, ctx: EvalContext[RecordRow]) -> EvalOutcome:
        """Metrics ``model/<metric>`` and ``baseline/nearest_neighbour/<metric>``."""
        cfg = ctx.cfg
        rows = evaluation_rows(ctx, self.items)
        texts = generate_texts(self, ctx.load_model(), rows, cfg)
        refs = [r.target for r in rows]
        scorer = TextScorer(cfg.evaluation.bertscore_model, cfg.evaluation.bertscore_layers)
        systems: dict[str, dict[str, Any]] = {"model": score_reports(texts, refs, scorer)}
        base: list[str] = [""] * len(rows)
        if cfg.evaluation.baselines and ctx.train_rows:
            base = neighbour_targets(rows, ctx.train_rows, ctx.neighbour_ids)
            systems["nearest_neighbour"] = score_reports(base, refs, scorer)
        texts_by = {"model": texts, "nearest_neighbour": base}
        for name, m in self.extra_scores(rows, {n: texts_by[n] for n in systems}, cfg).items():
            systems[name].update(m)
        metrics = {(f"{name}/{k}" if name == "model" else f"baseline/{name}/{k}"): float(v)
                   for name, m in systems.items() for k, v in m.items()
                   if isinstance(v, (int, float))}
        metrics.update(section_metrics(ctx.sections))
        fig = metric_bars(systems, BAR_KEYS, f"{cfg.name}: {cfg.task} on "
                                             f"{cfg.evaluation.split} ({len(rows)} records)")
        html_text = None
        if cfg.evaluation.report:
            info = {"config": cfg.name, "task": cfg.task, "split": cfg.evaluation.split,
                    "records": len(rows), "checkpoint": ctx.checkpoint,
                    "checkpoint step": ctx.checkpoint_step, "MLflow run": ctx.run_id}
            html_text = render_text_report(cfg, info, systems, rows, texts, base,
                                           fig_to_data_uri(fig, close=False), ctx.sections)
        table = [{"sample_id": r.sample_id, "target": t, "generated": g, "nearest_neighbour": b}
                 for r, t, g, b in zip(rows, refs, texts, base)]
        summary = {"task": cfg.task, **{s.key: s.summary for s in ctx.sections}}
        return EvalOutcome(metrics, summary, {"predictions.json": table},
                           {"text_metrics.png": fig}, html_text)

    def reference(self, row: Any) -> str:
        return row.target

    def headline(self, metrics: Mapping[str, float]) -> dict[str, dict[str, float]]:
        return system_headline(metrics, ("bleu4", "meteor", "rouge_l", "bertscore_f1",
                                         "grounding/score"), ("nearest_neighbour",))

    def response(self, row: RecordRow, generated: str, cfg: ExperimentConfig
                 ) -> dict[str, Any]:
        return {"task": self.name, "report": generated}


class GroundingTask(ReportTask):
    """Grounded interpretation (see the module docstring)."""

    name = "grounding"
    items = "grounding records"

    def min_tokens(self, cfg: ExperimentConfig) -> int:
        return 0  # the impression may be short; the measured part makes the target

    def target(self, record: Mapping[str, Any], text: str, cfg: ExperimentConfig) -> Target:
        signal = decode_signals(record["signal"], 1, int(record["n_samples"]))[0]
        try:
            return Target(grounded_text(signal, cfg.data.fs, text))
        except ValueError as exc:  # SignalError is a ValueError
            return Target(reason=f"grounding features: {exc}")

    def extra_scores(self, rows: Sequence[RecordRow], texts: Mapping[str, Sequence[str]],
                     cfg: ExperimentConfig) -> dict[str, dict[str, float]]:
        return {name: {f"grounding/{k}": v for k, v in m.items()}
                for name, m in grounding_scores(rows, texts, cfg.data.fs).items()}
