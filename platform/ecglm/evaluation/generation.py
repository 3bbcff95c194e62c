"""Evaluation of the generation tasks (``task: report`` MEIT, ``task: grounding`` GEM).

For every record of ``evaluation.split`` the model generates a text from the evaluation prompt
(first instruction of the pool, top-1 retrieved report when retrieval is on). Scored against the
record's ``target``:

* text metrics (BLEU-1..4, METEOR, ROUGE-1/2/L, CIDEr-D, BERTScore) for the model and for the
  nearest-neighbour baseline (the target of the closest *training* record of another patient,
  from the retrieval artifact);
* ``grounding`` task: every numeric/qualitative claim parsed from the generated text is checked
  against the record's own measured features (:mod:`ecglm.evaluation.grounding`); the same for
  the baseline, which quotes another ECG's numbers.

Written to ``out_dir``: ``eval_summary.json``, ``predictions.json`` (id, target, generated,
baseline) and ``report.html`` (metric table, bar chart, example ECGs with texts); logged to the
MLflow run as ``eval/<system>/<metric>``.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from ecglm.checkpoint import STATE_FILE
from ecglm.config import ExperimentConfig
from ecglm.evaluation.qa import generate_texts
from ecglm.evaluation.run import EvalResult, EvalSection
from ecglm.models.from_checkpoint import load_model
from ecglm.tracking import mlflow_run

BAR_KEYS = ("bleu1", "bleu4", "meteor", "rouge_l", "bertscore_f1")


def neighbour_targets(rows: Sequence[dict], train_rows: Sequence[dict],
                      neighbour_ids: Mapping[int, Sequence[int]]) -> list[str]:
    """Baseline text per row: the target of its nearest training neighbour that has one
    ("" when none does)."""
    by_id = {int(r["sample_id"]): str(r["target"]) for r in train_rows}
    out = []
    for r in rows:
        ids = [int(i) for i in neighbour_ids.get(int(r["sample_id"]), [])]
        out.append(next((by_id[i] for i in ids if i in by_id), ""))
    return out


def grounding_scores(rows: Sequence[dict], systems: Mapping[str, Sequence[str]],
                     fs: float) -> dict[str, dict[str, float]]:
    """Per system, :func:`ecglm.evaluation.grounding.grounding_metrics` of its texts against
    the measured features of each row's own ECG (delineated once per row; rows whose ECG cannot
    be delineated are counted in ``n_unmeasurable`` and skipped)."""
    from ecglm.data.sharding import decode_signals
    from ecglm.evaluation.grounding import ground_text, grounding_metrics
    from ecglm.features.grounding import grounding_features

    results: dict[str, list[Any]] = {name: [] for name in systems}
    skipped = 0
    for i, r in enumerate(rows):
        sig = decode_signals(r["signals"], 1, int(r["n_samples"]))[0]
        try:
            feats = grounding_features(sig, fs)
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


def _bar_chart(systems: Mapping[str, Mapping[str, Any]], title: str) -> Any:
    from ecglm.evaluation.report import _plt

    plt = _plt()
    keys = [k for k in BAR_KEYS if any(k in m for m in systems.values())]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    width = 0.8 / max(len(systems), 1)
    for j, (name, m) in enumerate(systems.items()):
        ax.bar(np.arange(len(keys)) + j * width, [float(m.get(k, np.nan)) for k in keys],
               width, label=name)
    ax.set_xticks(np.arange(len(keys)) + width * (len(systems) - 1) / 2, keys)
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _html(cfg: ExperimentConfig, info: Mapping[str, Any], systems: Mapping[str, Mapping[str, Any]],
          rows: Sequence[dict], texts: Sequence[str], base: Sequence[str], figure_uri: str,
          sections: Sequence[EvalSection]) -> str:
    from ecglm.data.sharding import decode_signals
    from ecglm.evaluation.report import _CSS, ecg_plot
    from ecglm.evaluation.reports import REPORT_KEYS

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
    for r, text, b in list(zip(rows, texts, base))[: cfg.evaluation.report_examples]:
        sig = decode_signals(r["signals"], 1, int(r["n_samples"]))[0]
        parts.append(f"<div class='ex'><img alt='ecg' src='"
                     f"{ecg_plot(sig, cfg.data.fs, 'record ' + str(r['sample_id']))}'>"
                     f"<p><b>Reference</b>: {html.escape(str(r['target']))}</p>"
                     f"<p><b>Generated</b>: {html.escape(text)}</p>"
                     f"<p><b>Nearest neighbour</b>: {html.escape(b)}</p></div>")
    parts += [f"<h2>{html.escape(s.heading)}</h2>{s.html}" for s in sections if s.html]
    parts.append("</body></html>")
    return "\n".join(parts)


def evaluate_generation(cfg: ExperimentConfig, checkpoint_dir: Path, rows: list[dict],
                        run_id: Optional[str], out_dir: Path,
                        train_rows: Optional[list[dict]] = None,
                        neighbour_ids: Optional[Mapping[int, Sequence[int]]] = None,
                        sections: Sequence[EvalSection] = ()) -> EvalResult:
    """Generate for ``rows`` (records of ``evaluation.split`` with ``target``), score, write the
    summary/report and log to ``run_id``. Returns metrics ``model/<metric>`` and
    ``baseline/nearest_neighbour/<metric>`` (``predictions`` is empty: texts are in
    ``predictions.json``)."""
    from ecglm.evaluation.metrics import TextScorer
    from ecglm.evaluation.report import fig_to_data_uri
    from ecglm.evaluation.reports import score_reports

    if cfg.evaluation.max_items is not None:
        rows = rows[: cfg.evaluation.max_items]
    if not rows:
        raise ValueError(f"evaluation.split: split '{cfg.evaluation.split}' has no "
                         f"{cfg.task} records")
    model = load_model(cfg, checkpoint_dir)
    texts = generate_texts(model, rows, cfg)
    refs = [str(r["target"]) for r in rows]
    scorer = TextScorer(cfg.evaluation.bertscore_model, cfg.evaluation.bertscore_layers)
    systems: dict[str, dict[str, Any]] = {"model": score_reports(texts, refs, scorer)}
    base: list[str] = [""] * len(rows)
    if cfg.evaluation.baselines and train_rows and neighbour_ids is not None:
        base = neighbour_targets(rows, train_rows, neighbour_ids)
        systems["nearest_neighbour"] = score_reports(base, refs, scorer)
    if cfg.task == "grounding":
        texts_by = {"model": texts, "nearest_neighbour": base}
        scores = grounding_scores(rows, {n: texts_by[n] for n in systems}, cfg.data.fs)
        for name, m in scores.items():
            systems[name].update({f"grounding/{k}": v for k, v in m.items()})
    metrics = {(f"{name}/{k}" if name == "model" else f"baseline/{name}/{k}"): float(v)
               for name, m in systems.items() for k, v in m.items()
               if isinstance(v, (int, float))}
    for sec in sections:
        metrics.update({f"{sec.key}/{k}": v for k, v in sec.metrics.items()})
    out_dir.mkdir(parents=True, exist_ok=True)
    state_file = checkpoint_dir / STATE_FILE
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    summary = {"task": cfg.task, "split": cfg.evaluation.split, "metrics": metrics,
               "checkpoint": str(checkpoint_dir), "checkpoint_step": state.get("step"),
               "mlflow_run_id": run_id, **{s.key: s.summary for s in sections}}
    summary_path = out_dir / "eval_summary.json"
    summary_path.write_text(json.dumps(summary, indent=2))
    (out_dir / "predictions.json").write_text(json.dumps(
        [{"sample_id": int(r["sample_id"]), "target": t, "generated": g, "nearest_neighbour": b}
         for r, t, g, b in zip(rows, refs, texts, base)], indent=1))
    fig = _bar_chart({k: v for k, v in systems.items()},
                     f"{cfg.name}: {cfg.task} on {cfg.evaluation.split} ({len(rows)} records)")
    fig.savefig(out_dir / "text_metrics.png", dpi=110)
    uri = fig_to_data_uri(fig)
    if cfg.evaluation.report:
        info = {"config": cfg.name, "task": cfg.task, "split": cfg.evaluation.split,
                "records": len(rows), "checkpoint": str(checkpoint_dir),
                "checkpoint step": state.get("step"), "MLflow run": run_id}
        (out_dir / "report.html").write_text(
            _html(cfg, info, systems, rows, texts, base, uri, sections), encoding="utf-8")
    if run_id:
        mlflow_run.log_metrics(cfg.tracking.tracking_uri, run_id,
                               {f"eval/{k}": v for k, v in metrics.items()})
        mlflow_run.log_artifacts(cfg.tracking.tracking_uri, run_id, out_dir, "eval")
        mlflow_run.set_tags(cfg.tracking.tracking_uri, run_id, {"ecglm.stage": "evaluated"})
    return EvalResult(metrics, [], summary_path)
