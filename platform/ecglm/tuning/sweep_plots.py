"""The five figures of a sweep report, as matplotlib ``Figure`` objects.

Figures are built with ``matplotlib.figure.Figure`` directly (no pyplot, so nothing global
to open or close); save them with :func:`ecglm.evaluation.report.fig_to_data_uri` or
``fig.savefig``. In every figure the best trial is drawn in :data:`BEST_COLOR` (a bold
outlined line, or a star), trials the scheduler stopped early (``KILLED``) are dashed or
marked with a cross, and trials without a finite metric are grey or left out where the
metric is an axis.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ecglm.tuning.records import (KILLED, ParamAxis, TrialRecord, best_first, check_mode,
                                 finite_metric, label, param_axes, pareto_front)

BEST_COLOR = "#d62728"
NO_METRIC_COLOR = "#9e9e9e"
PALETTE = ("C0", "C1", "C2", "C4", "C5", "C6", "C7", "C8", "C9")
"""Line colours of the other trials (the default cycle without its red, kept for the best)."""
MISSING_Y = -0.1
"""Height, on a parallel-coordinates axis, of a trial that lacks the value (below the range)."""
MAX_LEGEND = 12
"""Most trials named in the learning-curve legend (the best ones; the caption says so)."""


def better_phrase(mode: str) -> str:
    """``"lower is better"`` for ``mode="min"``, ``"higher is better"`` for ``"max"``."""
    check_mode(mode)
    return "lower is better" if mode == "min" else "higher is better"


def _is_best(t: TrialRecord, best: Optional[TrialRecord]) -> bool:
    return best is not None and t is best


def _empty(ax: Axes, message: str) -> None:
    """Write ``message`` in the middle of ``ax`` and hide its frame."""
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=10, transform=ax.transAxes)
    ax.set_axis_off()


def _metric_range(trials: Sequence[TrialRecord]) -> tuple[float, float]:
    """(low, high) of the finite metrics, widened when they are all equal; (0, 1) if none."""
    vals = [m for m in (finite_metric(t) for t in trials) if m is not None]
    if not vals:
        return 0.0, 1.0
    lo, hi = min(vals), max(vals)
    if hi > lo:
        return lo, hi
    pad = abs(lo) * 0.05 or 0.5
    return lo - pad, hi + pad


def _axis_ticks(axis: ParamAxis) -> list[tuple[float, str]]:
    """(position in [0, 1], text) of the tick labels drawn beside a parallel-coordinates axis."""
    if axis.kind == "categorical":
        n = len(axis.categories)
        return [((i / (n - 1)) if n > 1 else 0.5, c) for i, c in enumerate(axis.categories)]
    if not math.isfinite(axis.low):
        return []
    scale = (lambda p: 10 ** p) if axis.kind == "log" else (lambda p: p)
    if axis.high <= axis.low:
        return [(0.5, label(scale(axis.low)))]
    ticks = [(0.0, label(scale(axis.low))), (1.0, label(scale(axis.high)))]
    if axis.kind == "log":
        ticks.append((0.5, f"{scale((axis.low + axis.high) / 2):.2g}"))  # geometric mean
    return ticks


def parallel_coordinates(trials: Sequence[TrialRecord], metric: str, mode: str,
                         best: Optional[TrialRecord]) -> Figure:
    """One vertical axis per parameter plus the metric (each scaled to [0, 1]); one line per
    trial coloured by its metric (the colour bar's bright end is the better end). A trial
    without a value crosses that axis at ``(missing)``, below its range."""
    axes = param_axes(trials)
    n = len(axes) + 1
    fig = Figure(figsize=(max(6.5, 1.8 * n + 2.5), 4.6))
    ax = fig.subplots()
    lo, hi = _metric_range(trials)
    norm = Normalize(lo, hi)
    cmap = matplotlib.colormaps["viridis" if mode == "max" else "viridis_r"]
    xs = np.arange(n)
    sign = 1.0 if mode == "max" else -1.0
    order = sorted(trials, key=lambda t: (_is_best(t, best), finite_metric(t) is not None,
                                          sign * (finite_metric(t) or 0.0)))
    for t in order:  # worst first, so better trials (and the best) are drawn on top
        m = finite_metric(t)
        ys = [a.unit(t.params.get(a.key)) for a in axes]
        ys.append((m - lo) / (hi - lo) if m is not None else math.nan)
        ys = [MISSING_Y if math.isnan(y) else y for y in ys]  # lines stay unbroken
        color = NO_METRIC_COLOR if m is None else cmap(norm(m))
        style = "--" if t.status == KILLED else "-"
        if _is_best(t, best):
            ax.plot(xs, ys, color="black", lw=5, ls=style, zorder=4)
            ax.plot(xs, ys, color=color, lw=2.8, ls=style, marker="o", ms=5, zorder=5)
        else:
            ax.plot(xs, ys, color=color, lw=1.3, ls=style, marker="o", ms=3, alpha=0.85)
    scored = [t for t in trials if finite_metric(t) is not None]
    ticks_per_axis = [_axis_ticks(a) for a in axes]
    ticks_per_axis.append([(0.0, label(lo)), (1.0, label(hi))] if scored else [])
    for i, a in enumerate(axes):
        if any(a.key not in t.params or t.params[a.key] is None for t in trials):
            ticks_per_axis[i].append((MISSING_Y, "(missing)"))
    if len(scored) < len(trials):
        ticks_per_axis[-1].append((MISSING_Y, "(missing)"))
    for i, ticks in enumerate(ticks_per_axis):
        ax.vlines(i, 0.0, 1.0, color="0.35", lw=0.8, zorder=1)
        for y, text in ticks:
            ax.text(i + 0.04, y, text, fontsize=7, va="center", ha="left", zorder=6,
                    bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.7})
    names = [a.key + (" (log)" if a.kind == "log" else "") for a in axes] + [metric]
    ax.set_xticks(xs, names, fontsize=8, rotation=15 if n > 4 else 0)
    ax.set_yticks([])
    ax.set_xlim(-0.3, n - 1 + 0.7)
    ax.set_ylim(MISSING_Y - 0.06, 1.08)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    if scored:
        fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=metric, pad=0.02)
    handles = []
    if best is not None:
        handles.append(Line2D([], [], color="black", lw=3, label="best trial"))
    if any(t.status == KILLED for t in trials):
        handles.append(Line2D([], [], color="0.3", ls="--", label="KILLED (stopped early)"))
    if len(scored) < len(trials):
        handles.append(Line2D([], [], color=NO_METRIC_COLOR, label="no metric"))
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12),
                  ncol=len(handles), frameon=False)
    ax.set_title(f"Parallel coordinates ({metric}, {better_phrase(mode)})", fontsize=10)
    fig.tight_layout()
    return fig


def _param_x(axis: ParamAxis, value: Any) -> float:
    """x of a value in a metric-vs-parameter panel: the value itself on numeric axes (the
    panel is log-scaled when the axis is), the category index otherwise."""
    if value is None:
        return math.nan
    return axis.position(value) if axis.kind == "categorical" else float(value)


def metric_vs_params(trials: Sequence[TrialRecord], metric: str, mode: str,
                     best: Optional[TrialRecord]) -> Figure:
    """One panel per parameter: the metric (y) against the parameter's value (x)."""
    axes = param_axes(trials)
    k = max(len(axes), 1)
    ncols = min(3, k)
    nrows = math.ceil(k / ncols)
    fig = Figure(figsize=(4.3 * ncols, 3.4 * nrows))
    grid = fig.subplots(nrows, ncols, squeeze=False)
    scored = [t for t in trials if finite_metric(t) is not None]
    if not axes or not scored:
        _empty(grid[0, 0], "no swept parameters" if not axes
               else f"no trial reported {metric}")
    for pos, ax in enumerate(grid.flat):
        if pos >= len(axes) or not scored:
            if pos > 0:
                ax.set_visible(False)
            continue
        axis = axes[pos]
        for killed, marker, color, name in ((False, "o", "C0", "FINISHED"),
                                            (True, "x", "C1", "KILLED (stopped early)")):
            group = [t for t in scored if (t.status == KILLED) == killed]
            ax.plot([_param_x(axis, t.params.get(axis.key)) for t in group],
                    [finite_metric(t) for t in group], ls="none", marker=marker, color=color,
                    ms=6, label=name)
        if best is not None and finite_metric(best) is not None:
            ax.plot([_param_x(axis, best.params.get(axis.key))], [finite_metric(best)],
                    ls="none", marker="*", ms=16, mfc=BEST_COLOR, mec="black", zorder=5,
                    label="best trial")
        if axis.kind == "log":
            ax.set_xscale("log")
        elif axis.kind == "linear" and not axis.varies:
            ax.set_xticks([axis.low], [label(axis.low)])
        elif axis.kind == "categorical" and axis.categories:
            ax.set_xticks(range(len(axis.categories)), axis.categories, fontsize=7,
                          rotation=20 if len(axis.categories) > 3 else 0)
            ax.set_xlim(-0.5, len(axis.categories) - 0.5)
        ax.set_xlabel(axis.key, fontsize=9)
        ax.set_ylabel(metric, fontsize=9)
        ax.grid(alpha=0.3)
        if pos == 0:
            ax.legend(fontsize=7)
    fig.suptitle(f"{metric} against each parameter ({better_phrase(mode)})", fontsize=10)
    fig.tight_layout()
    return fig


def learning_curves(trials: Sequence[TrialRecord], metric: str, mode: str,
                    best: Optional[TrialRecord], max_legend: int = MAX_LEGEND) -> Figure:
    """Every trial's metric against the optimizer step; the legend names the best
    ``max_legend`` trials."""
    fig = Figure(figsize=(8.5, 4.4))
    ax = fig.subplots()
    order = best_first(trials, mode, best.run_id if best is not None else "")
    with_curve = [t for t in order if t.curve]
    if not with_curve:
        _empty(ax, "no trial reported a learning curve")
        return fig
    for rank in reversed(range(len(with_curve))):  # best last, so it is drawn on top
        t = with_curve[rank]
        steps = [s for s, _ in t.curve]
        vals = [v for _, v in t.curve]
        top = _is_best(t, best)
        name = t.name + (" (best)" if top else "") + (" [KILLED]" if t.status == KILLED else "")
        ax.plot(steps, vals, color=BEST_COLOR if top else PALETTE[rank % len(PALETTE)],
                lw=2.8 if top else 1.2, ls="--" if t.status == KILLED else "-",
                marker="." if len(steps) < 30 else None, zorder=5 if top else 2,
                alpha=1.0 if top else 0.8, label=name if rank < max_legend else "_nolegend_")
    handles, labels = ax.get_legend_handles_labels()  # drawn worst first: reverse them
    hidden = len(with_curve) - min(len(with_curve), max_legend)
    ax.legend(handles[::-1], labels[::-1], fontsize=7,
              loc="upper left", bbox_to_anchor=(1.01, 1.0),
              title=f"best {max_legend} of {len(with_curve)}" if hidden else None,
              title_fontsize=7)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.set_title(f"Learning curves ({metric}, {better_phrase(mode)})", fontsize=10)
    fig.tight_layout()
    return fig


def importance_figure(importance: dict[str, float], best: Optional[TrialRecord],
                      n_scored: int) -> Figure:
    """Horizontal bars of ``importance`` (most important on top); each label also shows the
    best trial's value of that parameter."""
    fig = Figure(figsize=(7.0, max(2.6, 0.55 * len(importance) + 1.4)))
    ax = fig.subplots()
    if not importance:
        _empty(ax, "not enough trials to estimate parameter importance\n"
                   "(it needs 3 or more trials with a finite metric\n"
                   "and a parameter whose value varies)")
        return fig
    keys = list(importance)[::-1]
    vals = [importance[k] for k in keys]
    names = [k + (f"\nbest: {label(best.params.get(k))}" if best is not None else "")
             for k in keys]
    ax.barh(np.arange(len(keys)), vals, color="C0")
    for y, v in enumerate(vals):
        ax.text(v + 0.01, y, f"{v:.2f}", va="center", fontsize=8)
    ax.set_yticks(np.arange(len(keys)), names, fontsize=8)
    ax.set_xlim(0, min(1.0, max(vals) + 0.15) if max(vals) > 0 else 1.0)
    ax.set_xlabel("importance (share of the forest's impurity decrease)")
    ax.set_title(f"Parameter importance (random forest over {n_scored} trials)", fontsize=10)
    fig.tight_layout()
    return fig


def _rate_text(tokens_per_s: Optional[float]) -> str:
    if tokens_per_s is None or not math.isfinite(tokens_per_s):
        return "tok/s ?"
    return (f"{tokens_per_s / 1000:.1f}k tok/s" if tokens_per_s >= 1000
            else f"{tokens_per_s:.0f} tok/s")


def quality_vs_cost(trials: Sequence[TrialRecord], metric: str, mode: str,
                    best: Optional[TrialRecord]) -> Figure:
    """Metric (y) against cost in worker-hours (x); marker area grows with tokens/s (hollow:
    unknown); the step line is the Pareto front (the best metric reached for at most that
    cost)."""
    fig = Figure(figsize=(7.5, 4.4))
    ax = fig.subplots()
    pts = [t for t in trials
           if finite_metric(t) is not None and math.isfinite(float(t.worker_hours))]
    if not pts:
        _empty(ax, f"no trial reported both {metric} and its cost")
        return fig
    rates = [t.tokens_per_s for t in pts
             if t.tokens_per_s is not None and math.isfinite(t.tokens_per_s)]
    top_rate = max(rates, default=0.0) or 1.0
    for t in pts:
        x, y = float(t.worker_hours), finite_metric(t)
        known = t.tokens_per_s is not None and math.isfinite(t.tokens_per_s)
        size = 40 + 360 * float(t.tokens_per_s or 0.0) / top_rate if known else 40
        marker = "s" if t.status == KILLED else "o"
        ax.scatter([x], [y], s=size, marker=marker, alpha=0.7, zorder=3,
                   facecolors="C0" if known else "none", edgecolors="C0")
        ax.annotate(_rate_text(t.tokens_per_s), (x, y), textcoords="offset points",
                    xytext=(7, 5), fontsize=7)
    costs = [float(t.worker_hours) for t in pts]
    mets = [float(finite_metric(t) or 0.0) for t in pts]  # all finite (pts filters)
    front = pareto_front(costs, mets, mode)
    fx = [costs[i] for i in front] + [max(costs)]
    fy = [mets[i] for i in front] + [mets[front[-1]]]
    ax.step(fx, fy, where="post", color="black", lw=1.2, zorder=2)
    if best is not None and any(t is best for t in pts):
        ax.scatter([float(best.worker_hours)], [finite_metric(best)], s=320, marker="*",
                   color=BEST_COLOR, edgecolors="black", zorder=5)
    handles = [Line2D([], [], ls="none", marker="o", color="C0", label="FINISHED"),
               Line2D([], [], ls="none", marker="s", color="C0", label="KILLED"),
               Line2D([], [], ls="none", marker="*", ms=13, mfc=BEST_COLOR, mec="black",
                      label="best trial"),
               Line2D([], [], color="black", lw=1.2, label="Pareto front")]
    ax.legend(handles=handles, fontsize=7, loc="best")
    ax.set_xlabel("cost (worker-hours)")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.set_title(f"Quality against cost ({metric}, {better_phrase(mode)}; "
                 "marker area: tokens/s)", fontsize=10)
    fig.tight_layout()
    return fig
