"""Trials of a sweep as plain records, and the small pieces every sweep figure shares.

A :class:`TrialRecord` carries what the report needs from one trial (no Ray, no MLflow
objects). :class:`ParamAxis` places the values of one parameter on a numeric axis: log10 for
positive numbers spanning at least two decades, the raw number otherwise, and evenly spaced
positions for strings, booleans and anything else (lists, mixed types). A parameter a trial
does not have sits at NaN on its axis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

MODES = ("min", "max")
LOG_DECADES = 2.0
"""A positive numeric parameter whose max/min ratio reaches 10**LOG_DECADES is log-scaled."""

FINISHED = "FINISHED"
KILLED = "KILLED"


@dataclass(frozen=True)
class TrialRecord:
    """One trial of a sweep as the report sees it.

    Attributes:
        name: display name, e.g. ``trial-r=8-lr=0.0003``.
        run_id: MLflow run id of the trial's child run.
        params: dotted config key -> value the trial used (``"train.lr": 3e-4``).
        metric: the sweep metric at the trial's end; None or NaN when it never reported.
        status: ``"FINISHED"`` (ran its whole budget) or ``"KILLED"`` (stopped early by the
            scheduler).
        curve: (optimizer step, metric value) at every evaluation, ordered by step.
        wall_s: wall-clock seconds the trial ran.
        worker_hours: the trial's cost, number of workers x wall-clock hours.
        tokens_per_s: training throughput in tokens/s summed over all workers; None if unknown.
        steps: optimizer steps the trial ran.
    """

    name: str
    run_id: str
    params: dict[str, Any]
    metric: Optional[float]
    status: str
    curve: tuple[tuple[int, float], ...]
    wall_s: float
    worker_hours: float
    tokens_per_s: Optional[float]
    steps: int


def check_mode(mode: str) -> None:
    """Raise ValueError unless ``mode`` is ``"min"`` or ``"max"``."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def finite_metric(trial: TrialRecord) -> Optional[float]:
    """The trial's metric as a float, or None when it is missing, NaN or infinite."""
    if trial.metric is None:
        return None
    value = float(trial.metric)
    return value if math.isfinite(value) else None


def param_keys(trials: Sequence[TrialRecord]) -> list[str]:
    """Every parameter key of ``trials``, in the order they first appear."""
    keys: dict[str, None] = {}
    for t in trials:
        keys.update(dict.fromkeys(t.params))
    return list(keys)


def label(value: Any) -> str:
    """Short text for a parameter value (floats with 4 significant digits; '-' for missing)."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(float(value)))


@dataclass(frozen=True)
class ParamAxis:
    """How the values of one parameter are placed on a numeric axis.

    Attributes:
        key: the dotted parameter key.
        kind: ``"log"`` (position = log10 of the value), ``"linear"`` (the value itself) or
            ``"categorical"`` (position = index into ``categories``).
        categories: the category labels in axis order (``categorical`` only, else empty).
        low, high: smallest and largest position of the values seen (NaN when none).
    """

    key: str
    kind: str
    categories: tuple[str, ...]
    low: float
    high: float

    def position(self, value: Any) -> float:
        """Axis position of ``value``; NaN for a missing value (None) or an unseen category."""
        if value is None:
            return math.nan
        if self.kind == "categorical":
            text = label(value)
            return float(self.categories.index(text)) if text in self.categories else math.nan
        return math.log10(float(value)) if self.kind == "log" else float(value)

    def unit(self, value: Any) -> float:
        """Position of ``value`` scaled to [0, 1] over the values seen (0.5 when they are all
        equal); NaN for a missing value."""
        pos = self.position(value)
        if self.high > self.low:
            return (pos - self.low) / (self.high - self.low)
        return 0.5 if math.isfinite(pos) else math.nan

    @property
    def varies(self) -> bool:
        """True when the trials used more than one value."""
        return self.high > self.low


def param_axis(key: str, values: Sequence[Any]) -> ParamAxis:
    """The axis of parameter ``key`` given the value of each trial (None: trial lacks it)."""
    present = [v for v in values if v is not None]
    if present and all(_is_number(v) for v in present):
        nums = [float(v) for v in present]
        lo, hi = min(nums), max(nums)
        if lo > 0 and hi / lo >= 10 ** LOG_DECADES:
            return ParamAxis(key, "log", (), math.log10(lo), math.log10(hi))
        return ParamAxis(key, "linear", (), lo, hi)
    cats = sorted({label(v) for v in present})
    if present and all(isinstance(v, bool) for v in present):
        cats = [c for c in ("False", "True") if c in cats]
    if not cats:
        return ParamAxis(key, "categorical", (), math.nan, math.nan)
    return ParamAxis(key, "categorical", tuple(cats), 0.0, float(len(cats) - 1))


def param_axes(trials: Sequence[TrialRecord]) -> list[ParamAxis]:
    """One :class:`ParamAxis` per parameter key of ``trials`` (see :func:`param_keys`)."""
    return [param_axis(k, [t.params.get(k) for t in trials]) for k in param_keys(trials)]


def best_first(trials: Sequence[TrialRecord], mode: str,
               best_run_id: str = "") -> list[TrialRecord]:
    """``trials`` ordered best first: the trial whose run id is ``best_run_id`` (if any), then
    the others by metric (``mode`` ``"min"``: ascending), then those without a metric, ties
    kept in their given order."""
    check_mode(mode)
    sign = 1.0 if mode == "min" else -1.0

    def key(t: TrialRecord) -> tuple[int, float]:
        m = finite_metric(t)
        if best_run_id and t.run_id == best_run_id:
            return (0, 0.0)
        return (1, sign * m) if m is not None else (2, 0.0)

    return sorted(trials, key=key)


def find_best(trials: Sequence[TrialRecord], mode: str,
              best_run_id: str) -> Optional[TrialRecord]:
    """The trial with run id ``best_run_id``; when none has it, the trial with the best
    finite metric; None when there is neither."""
    ordered = best_first(trials, mode, best_run_id)
    if ordered and (ordered[0].run_id == best_run_id or finite_metric(ordered[0]) is not None):
        return ordered[0]
    return None


def pareto_front(costs: Sequence[float], metrics: Sequence[float], mode: str) -> list[int]:
    """Indices of the cost/quality Pareto front, cheapest first.

    A point is on the front when every cheaper-or-equal point has a worse metric (lower for
    ``mode="max"``, higher for ``"min"``). Non-finite costs or metrics are ignored.
    """
    check_mode(mode)
    sign = 1.0 if mode == "min" else -1.0  # minimise sign * metric
    idx = [i for i in range(len(costs))
           if math.isfinite(costs[i]) and math.isfinite(metrics[i])]
    idx.sort(key=lambda i: (costs[i], sign * metrics[i]))
    front: list[int] = []
    best = math.inf
    for i in idx:
        if sign * metrics[i] < best:
            best = sign * metrics[i]
            front.append(i)
    return front
