"""Model Registry references against a real sqlite store (no Ray, no model): parsing,
versions, aliases and the errors that name what exists."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ecglm import checkpoint as ck
from ecglm.config import ExperimentConfig, apply_overrides
from ecglm.config.paths import resolve_paths
from ecglm.tracking import mlflow_run, registry
from ecglm.tracking.registry import ModelRef, RegistryRefError, parse_ref


@pytest.mark.parametrize("ref, expected", [
    ("models:/ecg-qa@champion", ModelRef("ecg-qa", alias="champion")),
    ("models:/tiny served@staging", ModelRef("tiny served", alias="staging")),
    ("models:/ecg-qa/12", ModelRef("ecg-qa", version="12")),
])
def test_parse_ref(ref: str, expected: ModelRef) -> None:
    assert parse_ref(ref) == expected
    assert str(parse_ref(ref)) == ref


@pytest.mark.parametrize("ref", ["models:/ecg-qa", "models:/ecg-qa@", "models:/@champion",
                                 "models:/ecg-qa/latest", "models:/a/b/1", "runs:/abc/model",
                                 "models:/a@b@c"])
def test_parse_ref_rejects_other_forms(ref: str) -> None:
    with pytest.raises(RegistryRefError, match="expected models:/NAME@ALIAS or "
                                               "models:/NAME/VERSION"):
        parse_ref(ref)


@pytest.fixture()
def store(tmp_path: Path) -> tuple[ExperimentConfig, str, str]:
    """A sqlite store with two runs; the first registered twice as ``ecg-qa`` (v1, v2 ->
    ``champion``)."""
    cfg = resolve_paths(apply_overrides(ExperimentConfig(), {"name": "reg"}), tmp_path)
    uri = cfg.tracking.tracking_uri
    first = mlflow_run.start_run(cfg, "first")
    second = mlflow_run.start_run(cfg, "second")
    v1 = registry.register_version(uri, first, "ecg-qa")
    v2 = registry.register_version(uri, second, "ecg-qa", "champion")
    assert (v1.version, v2.version) == ("1", "2")
    return cfg, first, second


def test_resolve_alias_and_version(store) -> None:
    cfg, first, second = store
    uri = cfg.tracking.tracking_uri
    champ = registry.resolve(uri, "models:/ecg-qa@champion")
    assert (champ.version, champ.run_id, champ.aliases) == ("2", second, ("champion",))
    assert champ.source == f"runs:/{second}/model" and champ.run_artifact_path == "model"
    v1 = registry.resolve(uri, "models:/ecg-qa/1")
    assert (v1.version, v1.run_id) == ("1", first)
    assert registry.aliases(uri, "ecg-qa") == {"champion": "2"}
    # moving the alias re-points the reference
    registry.register_version(uri, first, "ecg-qa", "champion")
    assert registry.resolve(uri, "models:/ecg-qa@champion").version == "3"
    client = MlflowClient(uri)
    assert client.get_registered_model("ecg-qa").aliases == {"champion": 3}


def test_errors_name_what_exists(store) -> None:
    cfg, first, _ = store
    uri = cfg.tracking.tracking_uri
    with pytest.raises(RegistryRefError, match=r"models:/ecg-qa@prod: model 'ecg-qa' has no "
                                               r"alias 'prod' \(aliases: champion -> version 2\)"):
        registry.resolve(uri, "models:/ecg-qa@prod")
    with pytest.raises(RegistryRefError, match=r"has no version 7 \(versions: 1, 2\)"):
        registry.resolve(uri, "models:/ecg-qa/7")
    with pytest.raises(RegistryRefError, match=r"registered model 'nope' not found .*"
                                               r"\(registered: ecg-qa\)"):
        registry.resolve(uri, "models:/nope@champion")
    # through the checkpoint resolver (ecglm serve/eval --checkpoint) the same errors surface
    with pytest.raises(RegistryRefError, match="no alias 'prod'"):
        ck.resolve_checkpoint(cfg, "models:/ecg-qa@prod")
    with pytest.raises(RegistryRefError, match="expected models:/NAME@ALIAS"):
        ck.resolve_checkpoint(cfg, "models:/ecg-qa")
    with pytest.raises(RegistryRefError, match="name: expected a model name without"):
        registry.register_version(uri, first, "a/b")
    with pytest.raises(RegistryRefError, match="alias: expected"):
        registry.register_version(uri, first, "ecg-qa", "x@y")


def test_register_run_without_model_or_checkpoint_is_refused(store, tmp_path: Path) -> None:
    from ecglm.serving.pyfunc import register_run

    cfg, first, _ = store
    with pytest.raises(ck.CheckpointFileError, match=f"MLflow run {first}: no 'model' artifact, "
                                                     "and no 'checkpoint' artifact"):
        register_run(cfg.tracking.tracking_uri, first, "ecg-qa", "champion", tmp_path / "dl")
