"""A failed run is visible: ``error.txt`` (the traceback) beside the FAILED status and error
tags, and the latest resumable checkpoint tagged and printed with the resume command. Checked
against a real sqlite MLflow store; the Ray folder holds checkpoints written by the real
checkpoint writer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from ecglm import checkpoint
from ecglm.config import ExperimentConfig, apply_overrides
from ecglm.config.paths import resolve_paths
from ecglm.tracking import tracked
from ecglm.tracking.tracked import tracked_run
from ecglm.train.failure import (PARTIAL_CHECKPOINT_TAG, PARTIAL_STEP_TAG, announce,
                                 partial_checkpoint_on_failure)


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> ExperimentConfig:
    """One sqlite store for the module (creating one takes seconds)."""
    root = tmp_path_factory.mktemp("failure")
    return resolve_paths(apply_overrides(ExperimentConfig(), {"name": "fail"}), root)


def _client(cfg: ExperimentConfig) -> MlflowClient:
    return MlflowClient(cfg.tracking.tracking_uri)


def _error_txt(cfg: ExperimentConfig, run_id: str, tmp_path: Path) -> str:
    path = _client(cfg).download_artifacts(run_id, tracked.ERROR_ARTIFACT, str(tmp_path))
    return Path(path).read_text()


def _failing_step() -> None:
    raise RuntimeError("worker group failed at step 3")


def test_failed_run_has_error_txt_with_the_traceback(cfg: ExperimentConfig,
                                                      tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with tracked_run(cfg, "bad") as run:
            try:
                _failing_step()
            except RuntimeError as exc:
                raise RuntimeError("training failed") from exc
    got = _client(cfg).get_run(run.run_id)
    assert got.info.status == "FAILED"
    assert got.data.tags[tracked.ERROR_TAG] == "training failed"
    text = _error_txt(cfg, run.run_id, tmp_path / "dl")
    assert text.startswith("Traceback (most recent call last):")
    assert "in _failing_step" in text and "worker group failed at step 3" in text
    assert text.rstrip().endswith("RuntimeError: training failed")


def test_finished_and_killed_runs_have_no_error_txt(cfg: ExperimentConfig) -> None:
    with tracked_run(cfg, "ok") as ok:
        pass
    with pytest.raises(KeyboardInterrupt):
        with tracked_run(cfg, "stopped") as stopped:
            raise KeyboardInterrupt
    for run in (ok, stopped):
        names = [a.path for a in _client(cfg).list_artifacts(run.run_id)]
        assert tracked.ERROR_ARTIFACT not in names


def test_unloggable_error_artifact_keeps_the_original_error(
        cfg: ExperimentConfig, capsys: pytest.CaptureFixture) -> None:
    assert not tracked.log_error(cfg.tracking.tracking_uri, "0" * 32, RuntimeError("x"))
    assert "could not log error.txt" in capsys.readouterr().err


def _ray_folder(cfg: ExperimentConfig, root: Path, steps: dict[int, bool]) -> Path:
    """A Ray Train run folder with ``checkpoint_<i>`` folders at ``steps`` (resumable or not)."""
    state = {"w": torch.zeros(2)}
    for i, (step, resumable) in enumerate(steps.items()):
        checkpoint.write_checkpoint(root / f"checkpoint_{i:06d}", state, cfg, step, {},
                                    {"world_size": 2} if resumable else None)
    return root


def test_failure_tags_and_prints_the_latest_resumable_checkpoint(
        cfg: ExperimentConfig, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ray_dir = _ray_folder(cfg, tmp_path / "ray" / "fail-1", {2: True, 4: True, 5: False})
    with pytest.raises(RuntimeError, match="worker died"):
        with tracked_run(cfg, "partial") as run:
            with partial_checkpoint_on_failure(run, str(ray_dir)):
                raise RuntimeError("worker died")
    got = _client(cfg).get_run(run.run_id)
    assert got.info.status == "FAILED"
    latest = str(ray_dir / "checkpoint_000001")
    assert got.data.tags[PARTIAL_CHECKPOINT_TAG] == latest
    assert got.data.tags[PARTIAL_STEP_TAG] == "4"
    err = capsys.readouterr().err
    assert f"training failed (RuntimeError) after step 4: latest resumable checkpoint {latest}" \
        in err
    assert f"resume with: ecglm train CONFIG --resume {run.run_id}" in err


def test_failure_without_checkpoint_says_nothing_to_resume(
        cfg: ExperimentConfig, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with tracked_run(cfg, "early") as run:
        assert announce(run, str(tmp_path / "ray" / "missing"), ValueError("x")) is None
    assert "before any resumable checkpoint was written" in capsys.readouterr().err
    assert PARTIAL_CHECKPOINT_TAG not in _client(cfg).get_run(run.run_id).data.tags
