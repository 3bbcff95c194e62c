"""Structure guards: one TorchTrainer set-up, one place that closes MLflow runs, one
checkpoint writer (so training and pretraining cannot drift apart again)."""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "platform" / "ecglm"


def _users(pattern: str) -> list[str]:
    rx = re.compile(pattern)
    return sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                  if rx.search(p.read_text()))


def test_one_torch_trainer_setup() -> None:
    assert _users(r"TorchTrainer\(") == ["train/runner.py"]
    assert _users(r"TuneReportCallback\(") == ["train/runner.py"]
    assert _users(r"ray\.train\.report\(") == ["train/worker.py"]


def test_runs_are_closed_in_one_place() -> None:
    assert _users(r"\bend_run\(") == ["tracking/mlflow_run.py", "tracking/tracked.py"]
    assert _users(r"set_terminated\(") == ["tracking/mlflow_run.py"]


def test_one_training_checkpoint_writer() -> None:
    assert _users(r"trainable\.safetensors\"") == ["checkpoint.py"]
    assert _users(r"def save_trainable\(|\.save_trainable\(") == []  # the model writes no file
