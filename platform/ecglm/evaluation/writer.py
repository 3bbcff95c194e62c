"""The one writer of an evaluation's files and MLflow records, whatever the task.

Every task's evaluation ends in an :class:`EvalOutcome`; :func:`write_evaluation` writes it to
``out_dir``::

    eval_summary.json     split, metrics, checkpoint (+ step), MLflow run id, task extras
    predictions*.json     the outcome's tables
    *.png                 the outcome's figures
    report.html           when the task wrote one (``evaluation.report``)

and, given a run id, logs the metrics as ``eval/<name>``, the folder as the ``eval`` artifact
and tags the run ``ecglm.stage=evaluated``.
"""

from __future__ import annotations

import html
import io
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional, Sequence

import matplotlib

matplotlib.use("Agg")  # files only, never a window (set before pyplot is imported)
import matplotlib.pyplot as plt  # noqa: E402

from ecglm.tracking import mlflow_run  # noqa: E402

FIGURE_DPI = 110
"""Resolution of the PNG files written from figures."""


@dataclass(frozen=True)
class EvalSection:
    """An extra part of an evaluation (report-generation baseline, zero-shot classification,
    transfer...): ``metrics`` are logged as ``eval/<key>/<name>``, ``summary`` is stored under
    ``key`` in ``eval_summary.json``, ``html`` is appended to ``report.html``."""

    key: str
    heading: str
    metrics: dict[str, float]
    summary: dict[str, Any] = field(default_factory=dict)
    html: str = ""


@dataclass
class EvalOutcome:
    """What a task's evaluation produced."""

    metrics: dict[str, float]
    """Flat metrics (logged as ``eval/<name>``), section metrics included."""
    summary: dict[str, Any]
    """Extra keys of ``eval_summary.json`` (besides split, metrics, checkpoint, run id)."""
    tables: dict[str, list[dict[str, Any]]]
    """JSON files to write: ``{"predictions.json": [...], ...}``."""
    figures: dict[str, Any] = field(default_factory=dict)
    """Matplotlib figures saved as PNG: ``{"em_per_type.png": fig}`` (closed once written), or
    PNG bytes already rendered (:func:`render_figures`, for an outcome made in a Ray worker)."""
    report_html: Optional[str] = None
    """The self-contained ``report.html`` (None: no report)."""


@dataclass(frozen=True)
class EvalResult:
    """Metrics and where the summary was written."""

    metrics: dict[str, float]
    summary_path: Path

    @property
    def report_path(self) -> Optional[Path]:
        path = self.summary_path.parent / "report.html"
        return path if path.exists() else None


def section_metrics(sections: Any) -> dict[str, float]:
    """``{"<key>/<name>": value}`` of every section."""
    return {f"{sec.key}/{k}": v for sec in sections for k, v in sec.metrics.items()}


def render_figures(outcome: EvalOutcome) -> EvalOutcome:
    """``outcome`` with every figure rendered to PNG bytes at :data:`FIGURE_DPI` and closed
    (bytes travel between processes; an unpickled figure may hold read-only arrays)."""
    png: dict[str, Any] = {}
    for name, fig in outcome.figures.items():
        if isinstance(fig, bytes):
            png[name] = fig
            continue
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=FIGURE_DPI)
        plt.close(fig)
        png[name] = buf.getvalue()
    return replace(outcome, figures=png)


def add_sections(html_text: str, sections: Sequence[tuple[str, str]]) -> str:
    """``html_text`` with ``(heading, html fragment)`` sections added at the end of its body."""
    if not sections:
        return html_text
    extra = "".join(f"<h2>{html.escape(heading)}</h2>\n{fragment}\n"
                    for heading, fragment in sections)
    at = html_text.rfind("</body>")
    return html_text + extra if at < 0 else html_text[:at] + extra + html_text[at:]


def write_evaluation(outcome: EvalOutcome, out_dir: Path, *, split: str, checkpoint: str,
                     checkpoint_step: Optional[int], run_id: Optional[str],
                     tracking_uri: str,
                     extra_sections: Sequence[tuple[str, str]] = ()) -> EvalResult:
    """Write ``outcome`` to ``out_dir`` and log it to ``run_id`` (see the module docstring);
    ``extra_sections`` (``(heading, html)``, e.g. the training run's throughput and cost) are
    added to ``report.html``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {"split": split, "metrics": outcome.metrics, "checkpoint": checkpoint,
               "checkpoint_step": checkpoint_step, "mlflow_run_id": run_id, **outcome.summary}
    summary_path = out_dir / "eval_summary.json"
    summary_path.write_text(json.dumps(summary, indent=2))
    for name, table in outcome.tables.items():
        (out_dir / name).write_text(json.dumps(table, indent=1))
    for name, fig in outcome.figures.items():
        if isinstance(fig, bytes):
            (out_dir / name).write_bytes(fig)
            continue
        fig.savefig(out_dir / name, dpi=FIGURE_DPI)
        plt.close(fig)
    if outcome.report_html is not None:
        (out_dir / "report.html").write_text(add_sections(outcome.report_html, extra_sections),
                                             encoding="utf-8")
    if run_id:
        mlflow_run.log_metrics(tracking_uri, run_id,
                               {f"eval/{k}": v for k, v in outcome.metrics.items()})
        mlflow_run.log_artifacts(tracking_uri, run_id, out_dir, "eval")
        mlflow_run.set_tags(tracking_uri, run_id, {"ecglm.stage": "evaluated"})
    return EvalResult(dict(outcome.metrics), summary_path)
