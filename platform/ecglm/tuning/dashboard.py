"""The sweep's parent run as a dashboard: what people open to pick a winner.

After the trials end, :func:`publish_dashboard` reads every trial back from MLflow (learning
curve of the sweep metric, throughput) and Tune (seconds), and logs to the parent run:

* ``best_config.yaml``: the full config of the best trial (``ecglm train`` takes it as is);
* ``sweep_report/sweep_report.html`` and its PNGs (:mod:`ecglm.tuning.report`): parallel
  coordinates, the metric against each hyper-parameter, all learning curves, parameter
  importance and quality against cost (worker-hours, tokens/s);
* metrics ``importance/<key>`` (the parameter importances) and ``sweep/worker_hours``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from ecglm.config import ExperimentConfig, apply_overrides, dump_yaml
from ecglm.tracking import mlflow_run
from ecglm.tuning.report import TrialRecord, write_sweep_report
from ecglm.tuning.trial import TRIAL_TAG
from ecglm.tuning.trial_metric import SweepMetric

REPORT_ARTIFACT = "sweep_report"
"""Artifact folder of the parent run holding ``sweep_report.html`` and the PNGs."""


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def trial_records(cfg: ExperimentConfig, table: Sequence[Mapping[str, Any]],
                  metric: SweepMetric) -> list[TrialRecord]:
    """One :class:`TrialRecord` per row of the sweep table (rows without an MLflow run are
    left out: the trial never started training)."""
    uri = cfg.tracking.tracking_uri
    keys = list(cfg.tune.search_space)
    records = []
    for row in table:
        run_id = row.get("mlflow_run_id")
        if not run_id:
            continue
        overrides = {k: row[k] for k in keys if k in row}
        workers = int(overrides.get("train.num_workers", cfg.train.num_workers))
        wall = float(row.get("time_total_s") or 0.0)
        tokens = mlflow_run.metric_history(uri, run_id, "tokens_per_s")
        name = mlflow_run.run_tags(uri, run_id).get(TRIAL_TAG, run_id[:8])
        records.append(TrialRecord(
            name=name, run_id=run_id, params=overrides, metric=_finite(row.get(metric.name)),
            status=str(row.get("status") or ""),
            curve=tuple(mlflow_run.metric_history(uri, run_id, metric.name)),
            wall_s=wall, worker_hours=workers * wall / 3600.0,
            tokens_per_s=tokens[-1][1] if tokens else None, steps=int(row.get("step") or 0)))
    return records


def publish_dashboard(cfg: ExperimentConfig, parent_run: Any,
                      table: Sequence[Mapping[str, Any]], metric: SweepMetric, best_run: str,
                      best_overrides: Mapping[str, Any]) -> Path:
    """Write and log the parent run's dashboard (module docstring); returns the local path of
    ``sweep_report.html``."""
    out = Path(cfg.output_dir) / cfg.name / parent_run.run_id / REPORT_ARTIFACT
    out.mkdir(parents=True, exist_ok=True)
    best_cfg = apply_overrides(cfg, dict(best_overrides)) if best_overrides else cfg
    records = trial_records(cfg, table, metric)
    report = write_sweep_report(out, records, metric=metric.name, mode=metric.mode,
                                space=cfg.tune.search_space, best_run_id=best_run,
                                title=f"{cfg.name}: sweep of {len(records)} trials on "
                                      f"{metric.name} ({metric.mode})")
    parent_run.log_artifacts(out, REPORT_ARTIFACT)
    mlflow_run.log_text(cfg.tracking.tracking_uri, parent_run.run_id, dump_yaml(best_cfg),
                        "best_config.yaml")
    parent_run.log_metrics({**{f"importance/{k}": v for k, v in report.importance.items()},
                            "sweep/worker_hours": sum(r.worker_hours for r in records)})
    return report.html

