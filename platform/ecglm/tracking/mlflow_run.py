"""MLflow bookkeeping: one run per training run, flattened config as params.

Everything goes through :class:`mlflow.tracking.MlflowClient` with an explicit run id, so the
driver, Ray Train rank 0 and Tune trials can all write to the same run without global state.
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path
from typing import Any, Mapping, Optional

from ecglm.config import ExperimentConfig, dump_yaml, flatten

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]+:")
"""A URI scheme (two characters at least, so a Windows drive letter is not one)."""

#: MLflow rejects param values longer than this many characters.
MAX_PARAM_CHARS = 6000


# mlflow is imported inside the functions on purpose: its import takes seconds, and the modules
# that import this one (ecglm.checkpoint, hence models and the Serve replicas) mostly never
# talk to a tracking server.


def _client(tracking_uri: str):
    from mlflow.tracking import MlflowClient  # deferred on purpose (see above)

    return MlflowClient(tracking_uri=tracking_uri)


def is_server_uri(tracking_uri: str) -> bool:
    """True for a tracking server (``http://`` / ``https://``)."""
    return tracking_uri.startswith(("http://", "https://"))


def artifact_location(cfg: ExperimentConfig) -> Optional[str]:
    """Where a new experiment of ``cfg`` keeps its artifacts.

    * ``tracking.artifact_root`` given as a URI (``s3://``, ``gs://``, ``mlflow-artifacts:``,
      ``file://``): that URI;
    * a tracking server and a local folder: None, so the server assigns its proxied location
      (``mlflow-artifacts:/<experiment id>``) and every node logs through the server; a
      folder on whichever machine created the experiment would strand artifacts there;
    * a local store: the folder as a ``file://`` URI (created).
    """
    root = cfg.tracking.artifact_root
    if _SCHEME.match(root):
        return root
    if is_server_uri(cfg.tracking.tracking_uri):
        return None
    folder = Path(root)
    folder.mkdir(parents=True, exist_ok=True)
    return folder.resolve().as_uri()


EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
"""Experiment tag the MLflow UI reads to pick the page it opens on."""
MODEL_TRAINING_KIND = "custom_model_development"
"""That tag's value for model-training experiments: the UI opens on the runs table (without it
MLflow 3 may infer a GenAI experiment and open on traces)."""


def ensure_experiment(cfg: ExperimentConfig) -> str:
    """Id of experiment ``tracking.experiment``, created at :func:`artifact_location`; the
    experiment is marked as a model-training experiment (:data:`EXPERIMENT_KIND_TAG`) when it
    is created, and when an existing one has no kind yet."""
    client = _client(cfg.tracking.tracking_uri)
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    if exp is not None:
        if EXPERIMENT_KIND_TAG not in exp.tags:
            client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
        return exp.experiment_id
    return client.create_experiment(cfg.tracking.experiment,
                                    artifact_location=artifact_location(cfg),
                                    tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND})


def param_dict(cfg: ExperimentConfig) -> dict[str, str]:
    """Flattened config as MLflow params: ``{"train.max_steps": "20", ...}``."""
    out = {}
    for k, v in flatten(cfg).items():
        text = json.dumps(v) if isinstance(v, (list, dict)) else str(v)
        out[k] = text[:MAX_PARAM_CHARS]
    return out


def start_run(
    cfg: ExperimentConfig,
    run_name: str,
    tags: Optional[Mapping[str, str]] = None,
    parent_run_id: Optional[str] = None,
) -> str:
    """Create a run holding the flattened config as params and ``config.yaml``; return its id."""
    from mlflow.entities import Param  # deferred on purpose (see above)

    client = _client(cfg.tracking.tracking_uri)
    exp_id = ensure_experiment(cfg)
    all_tags = {"ecglm.name": cfg.name, **(tags or {})}
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    run = client.create_run(exp_id, run_name=run_name, tags=all_tags)
    run_id = run.info.run_id
    params = [Param(k, v) for k, v in param_dict(cfg).items()]
    for i in range(0, len(params), 100):
        client.log_batch(run_id, params=params[i : i + 100])
    client.log_text(run_id, dump_yaml(cfg), "config.yaml")
    client.set_tag(run_id, "ecglm.stage", "started")
    return run_id


def log_metrics(
    tracking_uri: str, run_id: str, metrics: Mapping[str, float], step: Optional[int] = None
) -> None:
    """Log finite numeric ``metrics`` at ``step``."""
    from mlflow.entities import Metric  # deferred on purpose (see above)

    now = int(time.time() * 1000)
    batch = [
        Metric(k, float(v), now, step or 0)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and math.isfinite(float(v))
    ]
    if batch:
        _client(tracking_uri).log_batch(run_id, metrics=batch)


def log_artifacts(tracking_uri: str, run_id: str, folder: str | Path, artifact_path: str) -> None:
    """Copy ``folder`` into the run's artifacts under ``artifact_path``."""
    _client(tracking_uri).log_artifacts(run_id, str(folder), artifact_path)


def log_dict(tracking_uri: str, run_id: str, data: Any, name: str) -> None:
    """Store ``data`` as a JSON artifact ``name``."""
    _client(tracking_uri).log_dict(run_id, data, name)


def log_text(tracking_uri: str, run_id: str, text: str, name: str) -> None:
    """Store ``text`` as the artifact file ``name``."""
    _client(tracking_uri).log_text(run_id, text, name)


def set_tags(tracking_uri: str, run_id: str, tags: Mapping[str, str]) -> None:
    client = _client(tracking_uri)
    for k, v in tags.items():
        client.set_tag(run_id, k, v)


def delete_tags(tracking_uri: str, run_id: str, keys: list[str]) -> None:
    """Remove tags ``keys`` from run ``run_id``."""
    client = _client(tracking_uri)
    for key in keys:
        client.delete_tag(run_id, key)


def run_tags(tracking_uri: str, run_id: str) -> dict[str, str]:
    """The tags of run ``run_id``."""
    return dict(_client(tracking_uri).get_run(run_id).data.tags)


def reopen_run(tracking_uri: str, run_id: str) -> str:
    """Mark the existing run ``run_id`` RUNNING again (a resumed training run logs into the run
    it resumes); returns ``run_id``."""
    _client(tracking_uri).update_run(run_id, status="RUNNING")
    return run_id


def run_status(tracking_uri: str, run_id: str) -> str:
    """``RUNNING``, ``FINISHED``, ``FAILED`` or ``KILLED``."""
    return str(_client(tracking_uri).get_run(run_id).info.status)


def end_run(tracking_uri: str, run_id: str, status: str = "FINISHED") -> None:
    """Mark the run ``FINISHED``, ``FAILED`` or ``KILLED`` (low level: runs are closed through
    :func:`ecglm.tracking.tracked.close_run`)."""
    _client(tracking_uri).set_terminated(run_id, status=status)


def download_artifacts(tracking_uri: str, run_id: str, path: str, dst: str | Path) -> Path:
    """Fetch artifact folder ``path`` of ``run_id`` into ``dst``; returns the local folder."""
    Path(dst).mkdir(parents=True, exist_ok=True)
    local = _client(tracking_uri).download_artifacts(run_id, path, str(dst))
    return Path(local)


def search_child_runs(tracking_uri: str, parent_run_id: str,
                      tags: Optional[Mapping[str, str]] = None) -> list[str]:
    """Ids of the runs whose parent is ``parent_run_id`` (in its experiment) and whose tags
    include ``tags``, oldest first."""
    client = _client(tracking_uri)
    exp_id = client.get_run(parent_run_id).info.experiment_id
    clauses = [f"tags.`mlflow.parentRunId` = '{parent_run_id}'"]
    clauses += [f"tags.`{k}` = '{v}'" for k, v in (tags or {}).items()]
    runs = client.search_runs([exp_id], " and ".join(clauses), max_results=10000,
                              order_by=["attributes.start_time ASC"])
    return [r.info.run_id for r in runs]


def metric_history(tracking_uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    """``(step, value)`` of every logged value of metric ``key``, step-ordered (the last
    value logged at a step wins)."""
    points: dict[int, tuple[int, float]] = {}
    for m in _client(tracking_uri).get_metric_history(run_id, key):
        if m.step not in points or m.timestamp >= points[m.step][0]:
            points[m.step] = (m.timestamp, float(m.value))
    return sorted((step, value) for step, (_, value) in points.items())
