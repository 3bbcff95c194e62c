"""``ecglm serve CONFIG --checkpoint X`` (folder, MLflow run id or ``models:/NAME@ALIAS``), or
``ecglm serve models:/NAME@ALIAS`` (config and retrieval index from the registered model's
run): deploy encoder -> retriever -> LLM with Ray Serve and block until Ctrl-C."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

from mlflow import MlflowClient

from ecglm.checkpoint import CONFIG_FILE, REGISTRY_SCHEME, resolve_checkpoint
from ecglm.config import ExperimentConfig, apply_overrides, load_config, parse_cli_overrides
from ecglm.config.paths import resolve_paths
from ecglm.recipes.common import ray_lifecycle
from ecglm.serving.pyfunc import RETRIEVAL_ARTIFACT, RETRIEVAL_RUN_ARTIFACT
from ecglm.tracking import mlflow_run, registry
from ecglm.serving.launch import start, stop
from ecglm.train.run import Prepared, prepare


def start_prepared(prep: Prepared, checkpoint: str,
                   timeout_s: Optional[float] = None) -> tuple[str, Path]:
    """Resolve ``checkpoint`` (folder, MLflow run id, ``models:/NAME@ALIAS`` or
    ``models:/NAME/VERSION``) and deploy it with the retrieval index of ``prep``; returns
    ``(url, checkpoint folder)``. Ray must be running."""
    ckpt, _ = resolve_checkpoint(prep.cfg, checkpoint)
    if timeout_s is None:
        return start(prep.cfg, ckpt, prep.retrieval.folder), ckpt
    return start(prep.cfg, ckpt, prep.retrieval.folder, timeout_s=timeout_s), ckpt


def _block(url: str) -> None:
    print(f"[serve] {url}docs (API), POST {url}v1/<answer|report|classify> - Ctrl-C to stop",
          flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        stop()


def run(cfg: ExperimentConfig, checkpoint: str) -> None:
    """Serve ``checkpoint`` (folder, MLflow run id or ``models:/...``) until interrupted."""
    with ray_lifecycle(cfg):
        prep = prepare(cfg)
        url, _ = start_prepared(prep, checkpoint)
        _block(url)


def registered_config(ref: str, tracking_uri: str, overrides: list[str]
                      ) -> tuple[ExperimentConfig, Path, Path]:
    """A registered model ``models:/NAME@ALIAS`` (or ``/VERSION``) on ``tracking_uri`` ->
    (its training config with ``overrides`` applied and this tracking URI, its checkpoint
    folder, its run's retrieval index folder), all downloaded under the default output dir.

    Raises:
        ecglm.tracking.registry.RegistryRefError: unknown model, alias or version.
    """
    if not ref.startswith(REGISTRY_SCHEME):
        raise ValueError(f"{ref}: expected {REGISTRY_SCHEME}NAME@ALIAS or "
                         f"{REGISTRY_SCHEME}NAME/VERSION")
    base = resolve_paths(apply_overrides(ExperimentConfig(), parse_cli_overrides(
        [f"tracking.tracking_uri={tracking_uri}", *overrides])))
    folder, _ = resolve_checkpoint(base, ref)
    cfg = load_config(Path(folder) / CONFIG_FILE,
                      [f"tracking.tracking_uri={tracking_uri}", *overrides])
    return resolve_paths(cfg), Path(folder), registered_retrieval(base, ref)


def _model_retrieval_path(uri: str, run_id: str, inner: Optional[str]) -> Optional[str]:
    """The retrieval folder inside a logged pyfunc model (MLflow names it after the source
    folder, ``retrieval`` or ``retrieval-<hash>``), or None."""
    if not inner:
        return None
    found = [a.path for a in MlflowClient(uri).list_artifacts(run_id, f"{inner}/artifacts")
             if a.is_dir and Path(a.path).name.split("-")[0] == RETRIEVAL_ARTIFACT]
    return found[0] if len(found) == 1 else None


def registered_retrieval(cfg: ExperimentConfig, ref: str) -> Path:
    """The retrieval index registered with ``ref``: the logged model's own copy, else its
    run's ``retrieval`` artifact; downloaded under
    ``<output_dir>/downloads/models/<NAME>/<VERSION>/``."""
    uri = cfg.tracking.tracking_uri
    version = registry.resolve(uri, ref)
    path = (_model_retrieval_path(uri, version.run_id, version.run_artifact_path)
            or RETRIEVAL_RUN_ARTIFACT)
    dst = Path(cfg.output_dir) / "downloads" / "models" / version.name / version.version
    return mlflow_run.download_artifacts(uri, version.run_id, path, dst)


def run_registered(ref: str, tracking_uri: str, overrides: list[str]) -> None:
    """``ecglm serve models:/NAME@ALIAS``: serve a registered model with the config it was
    trained with (no data preparation: the index comes from its run) until interrupted."""
    cfg, folder, retrieval = registered_config(ref, tracking_uri, overrides)
    with ray_lifecycle(cfg):
        _block(start(cfg, folder, retrieval))
