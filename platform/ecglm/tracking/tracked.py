"""The MLflow run as a context manager that owns its terminal status.

::

    with tracked_run(cfg, "my-run", tags={...}, parent_run_id=parent) as run:
        run.log_metrics({"val_loss": 1.2}, step=10)
        ...

creates the run (flattened config as params, ``config.yaml``; see
:func:`ecglm.tracking.mlflow_run.start_run`) and closes it exactly once:

* ``FINISHED`` when the block exits normally;
* ``KILLED`` on ``KeyboardInterrupt`` (the user stopped it);
* ``FAILED`` on any other exception, with tags ``ecglm.error_type`` (exception class) and
  ``ecglm.error`` (its message, truncated), and the artifact ``error.txt``: the full traceback
  (a Ray worker's remote traceback included), logged best-effort before the status is set.

A Tune trial stopped by the scheduler dies with its actor, so its block never exits; the sweep
driver closes such runs afterwards with :func:`close_stopped_trial`. Every terminal status goes
through :func:`close_run`.
"""

from __future__ import annotations

import sys
import tempfile
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

from ecglm.config import ExperimentConfig
from ecglm.tracking import mlflow_run

FINISHED = "FINISHED"
FAILED = "FAILED"
KILLED = "KILLED"

ERROR_TYPE_TAG = "ecglm.error_type"
ERROR_TAG = "ecglm.error"
EARLY_STOPPED_TAG = "ecglm.early_stopped"
ERROR_ARTIFACT = "error.txt"
"""Artifact of a FAILED run: the traceback of the exception that ended it."""
PARTIAL_CHECKPOINT_TAG = "ecglm.partial_checkpoint"
"""Tag of a failed training run: its latest resumable checkpoint (folder or URI)."""
PARTIAL_STEP_TAG = "ecglm.partial_checkpoint_step"
"""Tag of a failed training run: the optimizer step of that checkpoint."""
PREVIOUS_PREFIX = "ecglm.previous_"
"""A reopened (resumed) run keeps the tags of its earlier failure under this prefix
(``ecglm.previous_error``...), so the current tags describe the current attempt only."""
FAILURE_TAGS = (ERROR_TYPE_TAG, ERROR_TAG, PARTIAL_CHECKPOINT_TAG, PARTIAL_STEP_TAG)
"""Tags that describe a failed attempt (moved under :data:`PREVIOUS_PREFIX` on reopen)."""
MAX_ERROR_CHARS = 5000
"""The error message kept in the ``ecglm.error`` tag (MLflow caps tag values)."""

class Interrupted(Exception):
    """Work stopped on purpose and resumable (e.g. a sweep interrupted with Ctrl-C): the run
    ends ``KILLED``; the message says how to continue."""


KILLING_EXCEPTIONS: tuple[type[BaseException], ...] = (KeyboardInterrupt, Interrupted)
"""Exceptions that mean "stopped on purpose" (``KILLED``) rather than ``FAILED``."""


@dataclass(frozen=True)
class TrackedRun:
    """Handle on one MLflow run (an explicit run id; no global MLflow state)."""

    tracking_uri: str
    run_id: str

    def log_metrics(self, metrics: Mapping[str, float], step: Optional[int] = None) -> None:
        """Log the finite numeric ``metrics`` at ``step``."""
        mlflow_run.log_metrics(self.tracking_uri, self.run_id, metrics, step)

    def log_dict(self, data: Any, name: str) -> None:
        """Store ``data`` as the JSON artifact ``name``."""
        mlflow_run.log_dict(self.tracking_uri, self.run_id, data, name)

    def log_artifacts(self, folder: str | Path, artifact_path: str) -> None:
        """Copy ``folder`` into the run's artifacts under ``artifact_path``."""
        mlflow_run.log_artifacts(self.tracking_uri, self.run_id, folder, artifact_path)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        mlflow_run.set_tags(self.tracking_uri, self.run_id, tags)


def close_run(tracking_uri: str, run_id: str, status: str,
              tags: Optional[Mapping[str, str]] = None) -> None:
    """Set ``tags`` then mark the run ``status`` (``FINISHED``, ``FAILED`` or ``KILLED``)."""
    if status not in (FINISHED, FAILED, KILLED):
        raise ValueError(f"status: expected FINISHED, FAILED or KILLED, got {status!r}")
    if tags:
        mlflow_run.set_tags(tracking_uri, run_id, tags)
    mlflow_run.end_run(tracking_uri, run_id, status)


def error_tags(exc: BaseException) -> dict[str, str]:
    """``ecglm.error_type`` and ``ecglm.error`` for ``exc``."""
    return {ERROR_TYPE_TAG: type(exc).__name__, ERROR_TAG: str(exc)[:MAX_ERROR_CHARS]}


def error_text(exc: BaseException) -> str:
    """The full traceback of ``exc`` (chained causes included) as logged in ``error.txt``."""
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def log_error(tracking_uri: str, run_id: str, exc: BaseException) -> bool:
    """Log :func:`error_text` of ``exc`` as the run's ``error.txt`` artifact. Best-effort: a
    store that cannot take it prints a warning (the original error must still surface); False
    then."""
    try:
        with tempfile.TemporaryDirectory(prefix="ecglm-error-") as folder:
            path = Path(folder) / ERROR_ARTIFACT
            path.write_text(error_text(exc), encoding="utf-8")
            mlflow_run.log_artifacts(tracking_uri, run_id, folder, "")
        return True
    except Exception as err:  # noqa: BLE001 - never mask the run's own error
        print(f"[ecglm] could not log {ERROR_ARTIFACT} to MLflow run {run_id}: "
              f"{type(err).__name__}: {err}", file=sys.stderr)
        return False


def close_stopped_trial(tracking_uri: str, run_id: str) -> None:
    """Close the run of a Tune trial its scheduler stopped: ``KILLED``, ``ecglm.early_stopped``."""
    close_run(tracking_uri, run_id, KILLED, {EARLY_STOPPED_TAG: "true"})


def _retire_failure_tags(tracking_uri: str, run_id: str) -> None:
    """Move the failure tags of an earlier attempt (:data:`FAILURE_TAGS`) of a reopened run
    under :data:`PREVIOUS_PREFIX`: a resumed run that then finishes must not still read as
    failed."""
    old = mlflow_run.run_tags(tracking_uri, run_id)
    stale = {k: v for k, v in old.items() if k in FAILURE_TAGS}
    if not stale:
        return
    mlflow_run.set_tags(tracking_uri, run_id, {
        PREVIOUS_PREFIX + k.removeprefix("ecglm."): v for k, v in stale.items()})
    mlflow_run.delete_tags(tracking_uri, run_id, list(stale))


@contextmanager
def tracked_run(cfg: ExperimentConfig, run_name: str, *,
                tags: Optional[Mapping[str, str]] = None,
                parent_run_id: Optional[str] = None,
                run_id: Optional[str] = None) -> Iterator[TrackedRun]:
    """Create an MLflow run for ``cfg`` and close it by how the block ends (module docstring).

    Args:
        cfg: its ``tracking`` section names the store and experiment; flattened into params.
        run_name: MLflow run name.
        tags: extra tags (``ecglm.name`` is always set).
        parent_run_id: makes the run a child (``mlflow.parentRunId``).
        run_id: resume this existing run instead (marked RUNNING again, ``tags`` set; params
            and name untouched) so a resumed training logs into the same run.
    """
    uri = cfg.tracking.tracking_uri
    if run_id:
        mlflow_run.reopen_run(uri, run_id)
        _retire_failure_tags(uri, run_id)
        if tags:
            mlflow_run.set_tags(uri, run_id, tags)
        run = TrackedRun(uri, run_id)
    else:
        run = TrackedRun(uri, mlflow_run.start_run(cfg, run_name, tags=tags,
                                                   parent_run_id=parent_run_id))
    try:
        yield run
    except KILLING_EXCEPTIONS as exc:
        close_run(uri, run.run_id, KILLED, error_tags(exc))
        raise
    except BaseException as exc:
        log_error(uri, run.run_id, exc)
        close_run(uri, run.run_id, FAILED, error_tags(exc))
        raise
    close_run(uri, run.run_id, FINISHED)
