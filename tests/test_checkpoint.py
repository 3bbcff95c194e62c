"""ecglm.checkpoint: write -> read round trip, clear errors, and the resolver (folder, MLflow
run id and registry reference against a real sqlite store)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ecglm import checkpoint as ck
from ecglm.config import ExperimentConfig, apply_overrides, from_dict
from ecglm.config.paths import resolve_paths
from ecglm.tracking import mlflow_run, registry


@pytest.fixture()
def cfg(tmp_path: Path) -> ExperimentConfig:
    return resolve_paths(apply_overrides(ExperimentConfig(), {"name": "ck", "lora.r": 3}),
                         tmp_path)


def _state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, generator=g)
    # a transposed view (non-contiguous) and an integer buffer, as trainable_state_dict gives
    return {"mapper.w": base.t(), "mapper.b": torch.randn(3, generator=g),
            "encoder.bn.num_batches_tracked": torch.tensor(7)}


def test_write_read_round_trip(tmp_path: Path, cfg: ExperimentConfig) -> None:
    state = _state()
    folder = ck.write_checkpoint(tmp_path / "a" / "checkpoint", state, cfg, 12,
                                 {"val_loss": 0.5, "step": 12})
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [ck.TRAINABLE_FILE, ck.CONFIG_FILE, ck.STATE_FILE])
    got = ck.read_trainable(folder)
    assert set(got) == set(state)
    for k, v in state.items():
        assert torch.equal(got[k], v) and got[k].dtype == v.dtype, k
    assert from_dict(ck.read_config(folder)) == cfg
    assert ck.read_state(folder) == ck.CheckpointState(12, {"val_loss": 0.5, "step": 12})
    assert ck.check_checkpoint(folder) == folder


def test_missing_files_name_folder_and_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ck.CheckpointFileError,
                       match=f"{empty}: missing {ck.TRAINABLE_FILE}"):
        ck.read_trainable(empty)
    with pytest.raises(FileNotFoundError, match=f"{empty}: missing {ck.CONFIG_FILE}"):
        ck.read_config(empty)
    assert ck.read_state(empty) == ck.CheckpointState()  # state.json is optional
    with pytest.raises(ck.CheckpointFileError, match=ck.PRETRAIN_MODEL_FILE):
        ck.read_pretrain_checkpoint(empty)


def test_pretrain_checkpoint_round_trip(tmp_path: Path) -> None:
    state = _state()
    history = {"steps": [[1, 2.5]], "epochs": [{"epoch": 1, "valid_loss": None}]}
    folder = ck.write_pretrain_checkpoint(tmp_path / "p", state, history)
    got, hist = ck.read_pretrain_checkpoint(folder)
    assert all(torch.equal(got[k], v) for k, v in state.items()) and hist == history


def test_resolve_folder(tmp_path: Path, cfg: ExperimentConfig) -> None:
    folder = ck.write_checkpoint(tmp_path / "run" / "checkpoint", _state(), cfg, 1, {})
    assert ck.resolve_checkpoint(cfg, str(folder)) == (folder, None)
    (folder / ck.TRAINABLE_FILE).unlink()
    with pytest.raises(ck.CheckpointFileError, match=f"{folder}: missing {ck.TRAINABLE_FILE}"):
        ck.resolve_checkpoint(cfg, str(folder))
    with pytest.raises(ck.CheckpointFileError, match="folder .*nope.* not found"):
        ck.resolve_checkpoint(cfg, str(tmp_path / "nope" / "checkpoint"))


def test_resolve_mlflow_run_id(tmp_path: Path, cfg: ExperimentConfig) -> None:
    state = _state()
    folder = ck.write_checkpoint(tmp_path / "local", state, cfg, 5, {"val_loss": 1.0})
    uri = cfg.tracking.tracking_uri
    run_id = mlflow_run.start_run(cfg, "ck-run")
    mlflow_run.log_artifacts(uri, run_id, folder, ck.ARTIFACT_PATH)
    bare = mlflow_run.start_run(cfg, "no-checkpoint")
    mlflow_run.log_dict(uri, bare, {"x": 1}, f"{ck.ARTIFACT_PATH}/other.json")

    local, got_id = ck.resolve_checkpoint(cfg, run_id)
    assert got_id == run_id
    assert local.is_relative_to(Path(cfg.output_dir) / "downloads" / run_id)
    got = ck.read_trainable(local)
    assert all(torch.equal(got[k], v) for k, v in state.items())
    assert ck.read_state(local).step == 5
    with pytest.raises(ck.CheckpointFileError,
                       match=f"MLflow run {bare}: artifact 'checkpoint' is not a checkpoint"):
        ck.resolve_checkpoint(cfg, bare)


def test_registry_ref_resolves_to_the_version_run_checkpoint(tmp_path: Path,
                                                             cfg: ExperimentConfig) -> None:
    """``models:/NAME@ALIAS`` and ``models:/NAME/VERSION`` -> the checkpoint of the version's
    run (here a run without a logged model: its own ``checkpoint`` artifact)."""
    state = _state()
    folder = ck.write_checkpoint(tmp_path / "local", state, cfg, 3, {})
    uri = cfg.tracking.tracking_uri
    run_id = mlflow_run.start_run(cfg, "registered")
    mlflow_run.log_artifacts(uri, run_id, folder, ck.ARTIFACT_PATH)
    registry.register_version(uri, run_id, "ecg-qa", "champion")
    for ref in ("models:/ecg-qa@champion", "models:/ecg-qa/1"):
        local, got_id = ck.resolve_checkpoint(cfg, ref)
        assert got_id == run_id
        assert (local / ck.TRAINABLE_FILE).read_bytes() == (folder / ck.TRAINABLE_FILE).read_bytes()
    with pytest.raises(registry.RegistryRefError, match=r"no alias 'prod' \(aliases: "
                                                        r"champion -> version 1\)"):
        ck.resolve_checkpoint(cfg, "models:/ecg-qa@prod")
