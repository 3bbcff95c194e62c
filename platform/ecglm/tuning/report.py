"""Readable report of a hyper-parameter sweep, and the throughput/cost section of a run's report.

:func:`write_sweep_report` writes ``sweep_report.html`` (self-contained: its figures are
embedded as PNG data URIs) and the same figures as PNG files beside it:

* ``parallel_coordinates``: one axis per parameter plus the metric, one line per trial;
* ``metric_vs_params``: the metric against each parameter;
* ``learning_curves``: every trial's metric against the optimizer step;
* ``param_importance``: :func:`~ecglm.tuning.importance.parameter_importance` as bars;
* ``quality_vs_cost``: metric against worker-hours, with the Pareto front.

:func:`cost_section_html` is the (heading, HTML) pair a training run appends to its
``report.html`` through ``extra_sections``. Pure Python + numpy + matplotlib + scikit-learn:
no Ray or MLflow here; the sweep driver turns its results into :class:`TrialRecord` objects.
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from matplotlib.figure import Figure

from ecglm.config.search_space import Dimension
from ecglm.evaluation.report import _CSS, fig_to_data_uri
from ecglm.tuning.importance import MIN_TRIALS, parameter_importance
from ecglm.tuning.sweep_plots import (MAX_LEGEND, better_phrase, importance_figure,
                                      learning_curves, metric_vs_params, parallel_coordinates,
                                      quality_vs_cost)
from ecglm.tuning.records import (FINISHED, KILLED, TrialRecord, best_first, check_mode, find_best,
                                 finite_metric, label, param_axes, param_keys)

__all__ = ["FIGURES", "SweepReport", "TrialRecord", "cost_section_html", "parameter_importance",
           "write_sweep_report"]

FIGURES = ("parallel_coordinates", "metric_vs_params", "learning_curves", "param_importance",
           "quality_vs_cost")
"""Names of the report's figures (keys of :attr:`SweepReport.pngs`, PNG file stems)."""

COST_HEADING = "Throughput and cost"
_SWEEP_CSS = _CSS + """
tr.best td{background:#fff1c9;font-weight:bold}figure{margin:18px 0}
figcaption{font-size:13px;color:#444;margin-top:4px}"""


@dataclass(frozen=True)
class SweepReport:
    """What :func:`write_sweep_report` wrote.

    Attributes:
        html: ``<out_dir>/sweep_report.html``.
        pngs: figure name (each of :data:`FIGURES`) -> its PNG file in ``out_dir``.
        importance: parameter -> importance in [0, 1], summing to 1; empty when it cannot be
            computed (see :func:`parameter_importance`).
    """

    html: Path
    pngs: dict[str, Path]
    importance: dict[str, float]


def html_table(header: Sequence[str], rows: Sequence[Sequence[str]],
               row_classes: Sequence[str] = ()) -> str:
    """An HTML table of plain-text cells (escaped here); ``row_classes[i]`` is row i's CSS
    class (empty: none)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cls = row_classes[i] if i < len(row_classes) else ""
        attr = f" class='{html.escape(cls)}'" if cls else ""
        body.append(f"<tr{attr}>" + "".join(f"<td>{html.escape(c)}</td>" for c in row)
                    + "</tr>")
    return f"<table>{'<tr>' + head + '</tr>' if header else ''}{''.join(body)}</table>"


def _num(value: Optional[float], fmt: str) -> str:
    """``value`` formatted with ``fmt``; ``-`` when it is None or not finite."""
    if value is None or not math.isfinite(float(value)):
        return "-"
    return format(float(value), fmt)


def _params_text(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={label(v)}" for k, v in params.items()) or "(none)"


def _space_rows(space: Mapping[str, Any]) -> list[list[str]]:
    """``[key, kind, values]`` per entry of a search space, given as written in the config
    (a list of choices, or ``{kind: [args]}``) or as parsed :class:`Dimension` objects."""
    rows = []
    for key, spec in space.items():
        if isinstance(spec, Dimension):
            kind, args = spec.kind, list(spec.values)
        elif isinstance(spec, Mapping) and len(spec) == 1:
            kind, args = next(iter(spec.items()))
        elif isinstance(spec, (list, tuple)):
            kind, args = "choice", list(spec)
        else:
            kind, args = "", spec
        rows.append([str(key), str(kind), json.dumps(args, default=str)])
    return rows


def _captions(trials: Sequence[TrialRecord], metric: str, mode: str,
              importance: Mapping[str, float]) -> dict[str, str]:
    """One sentence per figure saying how to read it."""
    logs = [a.key for a in param_axes(trials) if a.kind == "log"]
    log_note = f" ({', '.join(logs)} on a log scale)" if logs else ""
    n_scored = sum(finite_metric(t) is not None for t in trials)
    imp = (f"Share of a seeded random forest's impurity decrease per parameter, fitted on "
           f"{n_scored} trials ({metric} from the parameters), a rough ranking when trials are "
           f"few; each label gives the best trial's value." if importance else
           f"No importance: it needs at least {MIN_TRIALS} trials with a finite {metric} and a "
           f"parameter whose value varies, and a metric that is not the same for all of them.")
    return {
        "parallel_coordinates": (
            f"Each line is a trial crossing one axis per parameter and then {metric}, each axis "
            f"scaled to its range{log_note}; colour is {metric} ({better_phrase(mode)}), dashed "
            f"lines were stopped early, grey ones never reported the metric, a trial without a "
            f"value crosses that axis at (missing), and the outlined bold line is the best "
            f"trial."),
        "metric_vs_params": (
            f"{metric} of every trial against each parameter{log_note}; crosses were stopped "
            f"early and the star is the best trial."),
        "learning_curves": (
            f"{metric} at each evaluation against the optimizer step; the best trial is the "
            f"bold red line, dashed trials were stopped early, and the legend names at most "
            f"the {MAX_LEGEND} best trials."),
        "param_importance": imp,
        "quality_vs_cost": (
            f"{metric} against the cost in worker-hours (workers x wall-clock hours), marker "
            f"area and label giving the training tokens/s; the black steps are the best "
            f"{metric} reachable for at most that cost and the star is the best trial."),
    }


def _figures(trials: Sequence[TrialRecord], metric: str, mode: str,
             best: Optional[TrialRecord], importance: dict[str, float]) -> dict[str, Figure]:
    n_scored = sum(finite_metric(t) is not None for t in trials)
    return {
        "parallel_coordinates": parallel_coordinates(trials, metric, mode, best),
        "metric_vs_params": metric_vs_params(trials, metric, mode, best),
        "learning_curves": learning_curves(trials, metric, mode, best),
        "param_importance": importance_figure(importance, best, n_scored),
        "quality_vs_cost": quality_vs_cost(trials, metric, mode, best),
    }


def _summary_rows(trials: Sequence[TrialRecord], metric: str, mode: str,
                  best: Optional[TrialRecord], best_run_id: str) -> list[list[str]]:
    killed = sum(t.status == KILLED for t in trials)
    finished = sum(t.status == FINISHED for t in trials)
    rows = [["metric", f"{metric} ({mode}: {better_phrase(mode)})"],
            ["trials", str(len(trials))],
            ["FINISHED / KILLED", f"{finished} / {killed}"]]
    other = len(trials) - killed - finished
    if other:
        rows.append(["other status", str(other)])
    missing = sum(finite_metric(t) is None for t in trials)
    if missing:
        rows.append(["trials without a metric", str(missing)])
    if best is None:
        rows.append(["best trial", f"none found (best run id: {best_run_id or '-'})"])
        return rows
    if best.run_id != best_run_id:
        rows.append(["note", f"no trial has run id {best_run_id or '(empty)'}; the best "
                             f"trial shown is the one with the best {metric}"])
    rows += [["best trial", best.name], ["best run id", best.run_id],
             [f"best {metric}", _num(best.metric, ".6g")],
             ["best parameters", _params_text(best.params)]]
    return rows


def _trial_rows(ordered: Sequence[TrialRecord], keys: Sequence[str]) -> list[list[str]]:
    return [[t.name] + [label(t.params.get(k)) for k in keys]
            + [_num(t.metric, ".6g"), t.status, str(t.steps), _num(t.wall_s, ",.1f"),
               _num(t.worker_hours, ".4g"), _num(t.tokens_per_s, ",.0f"), t.run_id]
            for t in ordered]


def write_sweep_report(out_dir: Path, trials: Sequence[TrialRecord], *, metric: str, mode: str,
                       space: Mapping[str, Any], best_run_id: str, title: str) -> SweepReport:
    """Write ``<out_dir>/sweep_report.html`` and its five figures as PNG files beside it.

    Args:
        out_dir: folder to write to (created if needed).
        trials: every trial of the sweep, in any order.
        metric: name of the sweep metric (``tune.metric``).
        mode: ``"min"`` or ``"max"`` (``tune.mode``).
        space: the search space as in the config (dotted key -> list or ``{kind: [args]}``) or
            as parsed :class:`~ecglm.config.search_space.Dimension` objects.
        best_run_id: MLflow run id of the best trial, highlighted everywhere; when no trial has
            it, the trial with the best finite metric is highlighted and the summary says so.
        title: page title.

    Raises:
        ValueError: ``mode`` is neither ``"min"`` nor ``"max"``.
    """
    check_mode(mode)
    trials = list(trials)
    best = find_best(trials, mode, best_run_id)
    importance = parameter_importance(trials)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    uris: dict[str, str] = {}
    pngs: dict[str, Path] = {}
    for name, fig in _figures(trials, metric, mode, best, importance).items():
        uris[name] = fig_to_data_uri(fig, close=False)  # Figure objects: nothing to close
        pngs[name] = out_dir / f"{name}.png"
        pngs[name].write_bytes(base64.b64decode(uris[name].split(",", 1)[1]))
    ordered = best_first(trials, mode, best.run_id if best is not None else "")
    keys = param_keys(trials)
    captions = _captions(trials, metric, mode, importance)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
             f"</title><style>{_SWEEP_CSS}</style></head><body><h1>{html.escape(title)}</h1>",
             "<h2>Summary</h2>", html_table([], _summary_rows(trials, metric, mode, best,
                                                               best_run_id)),
             "<h2>Search space</h2>",
             html_table(["parameter", "kind", "values"], _space_rows(space)) if space
             else "<p>(no search space given)</p>",
             f"<h2>Trials, best first</h2><p>{html.escape(metric)}: {better_phrase(mode)}; the "
             f"highlighted row is the best trial.</p>",
             html_table(["trial"] + keys + [metric, "status", "steps", "wall s", "worker-hours",
                                            "tokens/s", "run id"],
                        _trial_rows(ordered, keys),
                        ["best" if best is not None and t is best else "" for t in ordered]),
             "<h2>Figures</h2>"]
    for name in FIGURES:
        parts.append(f"<figure><img src=\"{uris[name]}\" alt=\"{name}\">"
                     f"<figcaption>{html.escape(captions[name])}</figcaption></figure>")
    parts.append("</body></html>")
    page = out_dir / "sweep_report.html"
    page.write_text("\n".join(parts), encoding="utf-8")
    return SweepReport(html=page, pngs=pngs, importance=importance)


def _hms(seconds: float) -> str:
    """``h:mm:ss`` of a non-negative number of seconds."""
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _rate(value: Optional[float]) -> str:
    """A rate with thousands separators (3 significant digits below 100); ``unknown`` if
    missing."""
    if value is None or not math.isfinite(float(value)):
        return "unknown"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def cost_section_html(*, wall_s: float, num_workers: int, worker_hours: float,
                      examples_per_s: Optional[float], tokens_per_s: Optional[float],
                      steps: int, device: str) -> tuple[str, str]:
    """(heading, html fragment) of a 'Throughput and cost' section for a training run's
    report.html (``extra_sections`` of :func:`ecglm.evaluation.report.write_report`).

    Args:
        wall_s: wall-clock seconds of training.
        num_workers: Ray Train workers (>= 1).
        worker_hours: the run's cost, ``num_workers * wall_s / 3600`` as the caller measured it.
        examples_per_s, tokens_per_s: training throughput over all workers; None if unknown.
        steps: optimizer steps run.
        device: what each worker ran on, e.g. ``"cuda (NVIDIA H200)"`` or ``"cpu"``.

    Raises:
        ValueError: ``num_workers`` < 1 or ``wall_s`` negative.
    """
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    if wall_s < 0:
        raise ValueError(f"wall_s must be >= 0, got {wall_s}")
    per_worker = tokens_per_s / num_workers if tokens_per_s is not None else None
    rows = [["wall-clock time", f"{wall_s:,.1f} s ({_hms(wall_s)})"],
            ["workers", str(num_workers)],
            ["device", device],
            ["cost", f"{_num(worker_hours, '.3f')} worker-hours"],
            ["optimizer steps", f"{steps:,}"],
            ["seconds per step", _num(wall_s / steps, ".3g") if steps > 0 else "-"],
            ["examples/s (all workers)", _rate(examples_per_s)],
            ["tokens/s (all workers)", _rate(tokens_per_s)],
            ["tokens/s per worker", _rate(per_worker)]]
    body = ("<p>Cost counts every worker for the whole wall-clock time (workers x hours); "
            "rates are summed over all workers.</p>" + html_table([], rows))
    return COST_HEADING, body
