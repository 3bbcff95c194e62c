"""tracked_run: the MLflow run closes FINISHED / FAILED (with the error) / KILLED, checked
against a real sqlite store through the MLflow client."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ecglm.config import ExperimentConfig, apply_overrides, flatten
from ecglm.config.paths import resolve_paths
from ecglm.tracking import mlflow_run, tracked
from ecglm.tracking.tracked import close_stopped_trial, tracked_run


@pytest.fixture()
def cfg(tmp_path: Path) -> ExperimentConfig:
    return resolve_paths(apply_overrides(ExperimentConfig(), {"name": "ctx"}), tmp_path)


def _run(cfg: ExperimentConfig, run_id: str):
    return MlflowClient(cfg.tracking.tracking_uri).get_run(run_id)


def test_normal_exit_is_finished(cfg: ExperimentConfig) -> None:
    parent = None
    with tracked_run(cfg, "parent") as p:
        parent = p.run_id
        assert _run(cfg, parent).info.status == "RUNNING"
    with tracked_run(cfg, "child", tags={"k": "v"}, parent_run_id=parent) as run:
        run.log_metrics({"loss": 2.0}, step=3)
        run.set_tags({"ecglm.stage": "trained"})
    child = _run(cfg, run.run_id)
    assert child.info.status == "FINISHED" and _run(cfg, parent).info.status == "FINISHED"
    assert child.data.tags["k"] == "v" and child.data.tags["mlflow.parentRunId"] == parent
    assert child.data.tags["ecglm.stage"] == "trained"
    assert tracked.ERROR_TYPE_TAG not in child.data.tags
    assert set(child.data.params) == set(flatten(cfg))
    assert child.data.metrics["loss"] == 2.0


def test_exception_is_failed_with_error_tags(cfg: ExperimentConfig) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with tracked_run(cfg, "bad") as run:
            raise RuntimeError("boom: workers could not be placed")
    got = _run(cfg, run.run_id)
    assert got.info.status == "FAILED"
    assert got.data.tags[tracked.ERROR_TYPE_TAG] == "RuntimeError"
    assert got.data.tags[tracked.ERROR_TAG] == "boom: workers could not be placed"


def test_reopened_run_retires_the_failure_tags(cfg: ExperimentConfig) -> None:
    """A failed run resumed to the end reads FINISHED without its old error tags; the earlier
    failure stays visible under ``ecglm.previous_*``."""
    with pytest.raises(RuntimeError):
        with tracked_run(cfg, "failing") as run:
            run.set_tags({tracked.PARTIAL_CHECKPOINT_TAG: "/ckpt/step2",
                          tracked.PARTIAL_STEP_TAG: "2"})
            raise RuntimeError("worker died")
    with tracked_run(cfg, "ignored", run_id=run.run_id, tags={"resumed": "yes"}):
        pass
    got = _run(cfg, run.run_id)
    assert got.info.status == "FINISHED" and got.data.tags["resumed"] == "yes"
    assert not set(tracked.FAILURE_TAGS) & set(got.data.tags)
    assert got.data.tags["ecglm.previous_error"] == "worker died"
    assert got.data.tags["ecglm.previous_error_type"] == "RuntimeError"
    assert got.data.tags["ecglm.previous_partial_checkpoint"] == "/ckpt/step2"


def test_keyboard_interrupt_is_killed(cfg: ExperimentConfig) -> None:
    with pytest.raises(KeyboardInterrupt):
        with tracked_run(cfg, "interrupted") as run:
            raise KeyboardInterrupt
    got = _run(cfg, run.run_id)
    assert got.info.status == "KILLED"
    assert got.data.tags[tracked.ERROR_TYPE_TAG] == "KeyboardInterrupt"


def test_stopped_trial_is_killed_and_tagged(cfg: ExperimentConfig) -> None:
    """A trial's run left RUNNING (its actor was stopped inside the block) or closed FAILED
    (the stop surfaced as an error) ends KILLED with ``ecglm.early_stopped``."""
    uri = cfg.tracking.tracking_uri
    left_running = mlflow_run.start_run(cfg, "trial-a")  # the block never exited
    with pytest.raises(RuntimeError):
        with tracked_run(cfg, "trial-b") as failed:
            raise RuntimeError("trial stopped")
    assert _run(cfg, failed.run_id).info.status == "FAILED"
    for run_id in (left_running, failed.run_id):
        close_stopped_trial(uri, run_id)
        got = _run(cfg, run_id)
        assert got.info.status == "KILLED"
        assert got.data.tags[tracked.EARLY_STOPPED_TAG] == "true"


def test_unknown_status_is_rejected(cfg: ExperimentConfig) -> None:
    with pytest.raises(ValueError, match="status"):
        tracked.close_run(cfg.tracking.tracking_uri, "x", "DONE")
