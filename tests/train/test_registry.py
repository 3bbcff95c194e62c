"""MLflow as the system of record for one tiny training run (shared by every test here):
system metrics from the workers, the pyfunc model answering like evaluation, the Model
Registry (``tracking.register_as`` at the end of training, ``ecglm register``) and
``models:/NAME@ALIAS`` resolved to the same checkpoint."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterator

import mlflow.pyfunc
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from ecglm import cli
from ecglm.checkpoint import TRAINABLE_FILE, resolve_checkpoint
from ecglm.data.rows import QARow
from ecglm.models.from_checkpoint import load_model
from ecglm.serving.pyfunc import REGISTERED_NAME_TAG, REGISTERED_VERSION_TAG
from ecglm.tasks import get_task
from ecglm.tasks.qa import predict
from ecglm.tracking import registry
from ecglm.train.run import TrainResult, run_training, split_rows
from tests.helpers import tiny_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

NAME = "tiny-registry"


@pytest.fixture(scope="module")
def trained(ray_session, tiny_root: Path) -> Iterator[TrainResult]:
    """One tiny training run that logs its pyfunc and registers it as ``tiny-registry``
    (alias ``champion``), sampling system metrics every second."""
    cfg = tiny_config(tiny_root, "train.max_steps=2", "train.eval_every=0",
                      f"tracking.register_as={NAME}", "tracking.system_metrics_interval_s=1")
    t0 = time.perf_counter()
    res = run_training(cfg, run_name="registry")
    print(f"\n[registry] tiny training run with model logging + registration: "
          f"{time.perf_counter() - t0:.1f} s")
    yield res


@pytest.fixture()
def tracking_uri(trained: TrainResult, monkeypatch: pytest.MonkeyPatch) -> str:
    """The run's tracking URI, also as ``MLFLOW_TRACKING_URI`` for ``mlflow.pyfunc``'s
    ``runs:/``/``models:/`` resolution (the code under test never sets global MLflow state)."""
    uri = trained.prepared.cfg.tracking.tracking_uri
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def _qa_rows(res: TrainResult, n: int) -> list[QARow]:
    rows = [r for r in split_rows(res.prepared, "test") if r.n_ecg == 1]
    assert len(rows) >= n, f"tiny data set: fewer than {n} single-ECG test rows"
    return rows[:n]


def _frame(rows: list[QARow], fs: int) -> pd.DataFrame:
    return pd.DataFrame([{"ecg": r.ecgs()[0], "fs": float(fs), "question": r.question,
                          "options": list(r.options)} for r in rows])


def test_system_metrics_logged_from_the_workers(trained: TrainResult) -> None:
    client = MlflowClient(trained.prepared.cfg.tracking.tracking_uri)
    metrics = client.get_run(trained.run_id).data.metrics
    for name in ("system/cpu_utilization_percentage", "system/system_memory_usage_megabytes",
                 "system/system_memory_usage_percentage"):
        assert name in metrics, sorted(metrics)
        history = client.get_metric_history(trained.run_id, name)
        assert len(history) >= 1
    assert metrics["system/system_memory_usage_megabytes"] > 0
    assert 0 <= metrics["system/cpu_utilization_percentage"] <= 100


def test_pyfunc_answers_like_evaluation(trained: TrainResult, tracking_uri: str) -> None:
    cfg = trained.prepared.cfg
    client = MlflowClient(tracking_uri)
    model_files = {a.path for a in client.list_artifacts(trained.run_id, "model")}
    assert {"model/MLmodel", "model/artifacts", "model/requirements.txt"} <= model_files
    requirements = client.download_artifacts(trained.run_id, "model/requirements.txt",
                                             str(Path(cfg.output_dir) / "req"))
    assert "ecglm==" in Path(requirements).read_text()

    rows = _qa_rows(trained, 4)
    model = mlflow.pyfunc.load_model(f"runs:/{trained.run_id}/model")
    assert {c.name for c in model.metadata.signature.inputs.inputs} == {
        "ecg", "fs", "question", "options"}
    got = model.predict(_frame(rows, cfg.data.fs))
    expected = predict(get_task("qa"), load_model(cfg, trained.checkpoint_dir), rows, cfg)
    assert got["generated"].tolist() == [e.generated for e in expected]
    assert [list(a) for a in got["answer"]] == [sorted(e.parsed) for e in expected]
    # the reports in the prompt are the offline neighbours (own record and patient excluded)
    for reports, row in zip(got["retrieved_reports"], rows):
        assert [h["report"] for h in reports] == list(row.retrieved_reports)

    # bad input is refused naming the row and the field, as the HTTP endpoint would
    bad = _frame(rows[:2], cfg.data.fs)
    bad.at[1, "ecg"] = rows[1].ecgs()[0][:11]
    with pytest.raises(Exception, match="row 1: ecg: expected 12 leads, got 11"):
        model.predict(bad)


def test_registered_at_the_end_of_training(trained: TrainResult, tracking_uri: str) -> None:
    cfg = trained.prepared.cfg
    version = registry.resolve(tracking_uri, f"models:/{NAME}@champion")
    assert version.run_id == trained.run_id
    assert version.source == f"runs:/{trained.run_id}/model"
    tags = MlflowClient(tracking_uri).get_run(trained.run_id).data.tags
    assert tags[REGISTERED_NAME_TAG] == NAME
    assert tags[REGISTERED_VERSION_TAG] == version.version

    folder, run_id = resolve_checkpoint(cfg, f"models:/{NAME}@champion")
    assert run_id == trained.run_id
    assert (folder / TRAINABLE_FILE).read_bytes() == (
        trained.checkpoint_dir / TRAINABLE_FILE).read_bytes()

    rows = _qa_rows(trained, 2)
    by_alias = mlflow.pyfunc.load_model(f"models:/{NAME}@champion").predict(
        _frame(rows, cfg.data.fs))
    by_run = mlflow.pyfunc.load_model(f"runs:/{trained.run_id}/model").predict(
        _frame(rows, cfg.data.fs))
    assert by_alias["generated"].tolist() == by_run["generated"].tolist()


def test_register_command(trained: TrainResult, tracking_uri: str,
                          capsys: pytest.CaptureFixture[str]) -> None:
    """``ecglm register`` (the CLI's main, in-process: a subprocess costs ~10 s of imports)."""
    argv = ["register", trained.run_id, "--name", "tiny-cli", "--alias", "staging",
            "--tracking-uri", tracking_uri]
    assert cli.main(argv) == 0
    data: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert data["name"] == "tiny-cli" and data["alias"] == "staging"
    assert data["run_id"] == trained.run_id and data["model_uri"] == "models:/tiny-cli@staging"
    resolved = registry.resolve(tracking_uri, "models:/tiny-cli@staging")
    assert (resolved.version, resolved.run_id) == (data["version"], trained.run_id)

    assert cli.main(["register", trained.run_id, "--name", "a/b", "--tracking-uri",
                     tracking_uri]) == 2
    assert "name: expected a model name" in capsys.readouterr().err
    assert cli.main(["register", "no-such-run", "--name", "x", "--tracking-uri",
                     tracking_uri]) == 2
    assert "Run with id=no-such-run not found" in capsys.readouterr().err


def test_winner_without_artifacts_is_completed_logged_and_registered(
        trained: TrainResult, tracking_uri: str) -> None:
    """A sweep winner ASHA stopped before it logged anything but its Ray folder tag: the sweep
    logs the latest checkpoint of that folder and the retrieval folder
    (:func:`ecglm.tuning.sweep._complete_winner`), then the pyfunc, then registers it."""
    from dataclasses import replace

    from ecglm.checkpoint import RAY_RUN_DIR_TAG
    from ecglm.tracking import mlflow_run
    from ecglm.tuning.sweep import _complete_winner, _publish_winner

    cfg = trained.prepared.cfg
    ray_dir = MlflowClient(tracking_uri).get_run(trained.run_id).data.tags[RAY_RUN_DIR_TAG]
    trial = mlflow_run.start_run(cfg, "trial-like", tags={RAY_RUN_DIR_TAG: ray_dir})
    mlflow_run.end_run(tracking_uri, trial, "KILLED")
    assert not registry.has_artifact(tracking_uri, trial, "checkpoint")
    _complete_winner(trained.prepared, trial, {})
    sweep_cfg = replace(cfg, tracking=replace(cfg.tracking, register_as="tiny-winner"))
    version = _publish_winner(sweep_cfg, trial)
    assert version is not None and version.run_id == trial
    assert registry.has_artifact(tracking_uri, trial, "model")
    folder, _ = resolve_checkpoint(cfg, "models:/tiny-winner@champion")
    assert (folder / TRAINABLE_FILE).read_bytes() == (
        trained.checkpoint_dir / TRAINABLE_FILE).read_bytes()  # one checkpoint: the latest
    rows = _qa_rows(trained, 2)
    got = mlflow.pyfunc.load_model("models:/tiny-winner@champion").predict(
        _frame(rows, cfg.data.fs))
    expected = mlflow.pyfunc.load_model(f"runs:/{trained.run_id}/model").predict(
        _frame(rows, cfg.data.fs))
    assert got["generated"].tolist() == expected["generated"].tolist()
