"""``ecglm eval``: load trainable parts from a checkpoint, generate, score, log to MLflow."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from ecglm.checkpoint import STATE_FILE
from ecglm.config import ExperimentConfig
from ecglm.evaluation.qa import Prediction, predict, predictions_table, score
from ecglm.models.from_checkpoint import load_model
from ecglm.tracking import mlflow_run


@dataclass
class EvalResult:
    """Metrics (``em/<type>``...), per-item predictions and where the summary was written."""

    metrics: dict[str, float]
    predictions: list[Prediction]
    summary_path: Path


@dataclass
class EvalSection:
    """An extra part of the evaluation computed by the caller (report generation,
    classification...): ``metrics`` are logged as ``eval/<key>/<name>``, ``summary`` is stored
    under ``key`` in ``eval_summary.json``, ``html`` is appended to ``report.html``."""

    key: str
    heading: str
    metrics: dict[str, float]
    summary: dict[str, Any] = field(default_factory=dict)
    html: str = ""


def plot_em(metrics: dict[str, float], path: Path, title: str) -> Path:
    """Exact match per question type as a PNG (the report's bar chart, model only)."""
    from ecglm.evaluation.report import em_comparison_figure

    fig = em_comparison_figure({"model": metrics}, title)  # selects the Agg backend
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def evaluate(
    cfg: ExperimentConfig,
    checkpoint_dir: Path,
    rows: list[dict],
    run_id: Optional[str],
    out_dir: Path,
    train_rows: Optional[list[dict]] = None,
    sections: Sequence[EvalSection] = (),
) -> EvalResult:
    """Score ``rows`` (QA rows of ``evaluation.split``) and log everything to ``run_id``.

    With ``evaluation.baselines`` and ``train_rows``, the majority and blind baselines are
    fitted on ``train_rows`` and scored on the same rows (``baseline/<name>/em/...``); with
    ``evaluation.report`` a self-contained ``report.html`` is written to ``out_dir``.
    ``evaluation.regime`` picks the items (``ten_percent``: stratified 10% subset) before
    ``evaluation.max_items``; ``evaluation.noise_snr_db`` adds the EM-vs-SNR curve
    (``noise/<snr>/em/...``); ``evaluation.judge`` adds the LLM-judge section
    (``judge/m2m/<criterion>``, see :mod:`ecglm.evaluation.judging`).
    """
    from ecglm.evaluation.regimes import select_regime

    rows = select_regime(rows, cfg.evaluation.regime, cfg.seed)
    if cfg.evaluation.max_items is not None:
        rows = rows[: cfg.evaluation.max_items]
    if not rows:
        raise ValueError(f"evaluation.split: split '{cfg.evaluation.split}' has no QA items")
    model = load_model(cfg, checkpoint_dir)
    preds = predict(model, rows, cfg)
    metrics = score(preds)
    systems: dict[str, list[Prediction]] = {"model": preds}
    if cfg.evaluation.baselines and train_rows:
        from ecglm.evaluation.baselines import fit_qa_baselines, predict_baseline

        for name, base in fit_qa_baselines(train_rows).items():
            systems[name] = predict_baseline(base, rows)
            metrics.update({f"baseline/{name}/{k}": v for k, v in score(systems[name]).items()})
    curve: dict[str, dict[str, float]] = {}
    if cfg.evaluation.noise_snr_db:
        from ecglm.evaluation.robustness import curve_metrics, noise_curve

        curve = noise_curve(lambda r: predict(model, r, cfg), score, rows,
                            cfg.evaluation.noise_snr_db, cfg.evaluation.noise_seed)
        metrics.update(curve_metrics(curve))
    if cfg.evaluation.judge != "none":
        from ecglm.evaluation.judging import judge_section

        sections = [*sections, judge_section(preds, cfg.evaluation.judge,
                                             cfg.evaluation.judge_model_path,
                                             cfg.evaluation.judge_max_items)]
    for sec in sections:
        metrics.update({f"{sec.key}/{k}": v for k, v in sec.metrics.items()})
    out_dir.mkdir(parents=True, exist_ok=True)
    state = json.loads((checkpoint_dir / STATE_FILE).read_text()) if (
        checkpoint_dir / STATE_FILE).exists() else {}
    summary = {"split": cfg.evaluation.split, "regime": cfg.evaluation.regime,
               "metrics": metrics, "checkpoint": str(checkpoint_dir),
               "checkpoint_step": state.get("step"), "mlflow_run_id": run_id,
               **({"noise": curve} if curve else {}),
               **{sec.key: sec.summary for sec in sections}}
    summary_path = out_dir / "eval_summary.json"
    summary_path.write_text(json.dumps(summary, indent=2))
    (out_dir / "predictions.json").write_text(json.dumps(predictions_table(preds), indent=1))
    plot_em(metrics, out_dir / "em_per_type.png",
            f"{cfg.name}: exact match on {cfg.evaluation.split} ({len(preds)} items)")
    for name, sp in systems.items():
        if name != "model":
            (out_dir / f"predictions_{name}.json").write_text(
                json.dumps(predictions_table(sp), indent=1))
    if cfg.evaluation.report:
        extra = []
        if curve:
            from ecglm.evaluation.robustness import curve_section

            extra.append(curve_section(curve))
        extra += [(sec.heading, sec.html) for sec in sections if sec.html]
        write_eval_report(cfg, out_dir / "report.html", rows, systems, summary, extra)
    if run_id:
        uri = cfg.tracking.tracking_uri
        mlflow_run.log_metrics(uri, run_id, {f"eval/{k}": v for k, v in metrics.items()})
        mlflow_run.log_artifacts(uri, run_id, out_dir, "eval")
        mlflow_run.set_tags(uri, run_id, {"ecglm.stage": "evaluated"})
    return EvalResult(metrics, preds, summary_path)


def write_eval_report(cfg: ExperimentConfig, path: Path, rows: list[dict],
                      systems: dict[str, list[Prediction]], summary: dict[str, Any],
                      extra_sections: Sequence[tuple[str, str]] = ()) -> Path:
    """``report.html``: model vs baselines, confusion matrices, example ECGs, then
    ``extra_sections`` ((heading, HTML) pairs: noise curve, report generation...)."""
    from ecglm.evaluation.report import pick_examples, write_report

    per_system = {name: score(p) for name, p in systems.items()}
    info = {"config": cfg.name, "split": cfg.evaluation.split,
            "regime": cfg.evaluation.regime, "items": len(rows),
            "checkpoint": summary.get("checkpoint"), "checkpoint step":
            summary.get("checkpoint_step"), "MLflow run": summary.get("mlflow_run_id")}
    examples = pick_examples(rows, systems["model"], cfg.data.fs, cfg.evaluation.report_examples)
    return write_report(path, f"ecglm evaluation: {cfg.name}", info, systems, per_system,
                        examples, extra_sections)
