"""Compose the Serve application (shared by :func:`ecglm.serving.launch.start` and
``serve run serve/serve_config.yaml``).

``build_app`` is the Serve application builder; its ``args``::

    config:     experiment YAML (path)
    checkpoint: checkpoint folder (holding trainable.safetensors), an MLflow run id or a
                registered model ``models:/NAME@ALIAS`` / ``models:/NAME/VERSION``
    retrieval:  optional retrieval folder (default: <checkpoint>/../retrieval, or the MLflow
                run's "retrieval" artifact)
    overrides:  optional dotted overrides, a list or one whitespace-separated string

Relative paths are taken from the current directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from ray.serve import Application

from ecglm.checkpoint import REGISTRY_SCHEME, REQUIRED_FILES, resolve_checkpoint
from ecglm.config import ExperimentConfig, load_config
from ecglm.config.paths import resolve_paths
from ecglm.serving.auth import load_secret
from ecglm.serving.catalog import MAIN_MODEL, model_infos, resolve_models
from ecglm.serving.deployments import LLM, ECGEncoder, Retriever
from ecglm.serving.ingress import Ingress
from ecglm.serving.options import deployment_options
from ecglm.tracking import mlflow_run

CHECKPOINT_FILES = REQUIRED_FILES
RETRIEVAL_FILES = ("index.faiss", "reports.json", "encoder.safetensors", "encoder.json")
ALLOWED_ARGS = frozenset({"config", "checkpoint", "retrieval", "overrides"})


class AppArgsError(ValueError):
    """Application arguments or the folders they name are missing or malformed."""


def _check_folder(folder: Path, files: tuple[str, ...], what: str) -> None:
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise AppArgsError(f"{what}: {folder} lacks {', '.join(missing)} (is it an ecglm {what} "
                           f"folder? pass {what}=<folder>)")


def build_application(cfg: ExperimentConfig, checkpoint_dir: Path,
                      retrieval_dir: Path) -> Application:
    """The bound deployment graph Ingress -> ECGEncoder -> Retriever -> LLM, each deployment
    with the resources, autoscaling, batching and health checks of its ``serve.<name>``
    config; the adapters of ``serve.adapters`` resolved and checked here; the bearer token
    (``ECGLM_SERVE_TOKEN`` or ``serve.token_file``) read here and handed to the ingress.

    Args:
        cfg: experiment config (``data``, ``encoder``, ``mapper``, ``llm``, ``lora``,
            ``retrieval``, ``prompt``, ``serve`` used); relative paths are made absolute
            against the current directory, so replicas with another cwd see the same files.
        checkpoint_dir: folder holding ``trainable.safetensors``.
        retrieval_dir: folder holding ``index.faiss``, ``reports.json``, ``encoder.*``.

    Raises:
        AppArgsError: a folder lacks one of its files.
        ecglm.serving.catalog.AdapterError: an adapter does not fit the main model.
        ecglm.serving.auth.TokenError: the token file is missing, unreadable or empty.
    """
    cfg = resolve_paths(cfg)
    ckpt = Path(checkpoint_dir).resolve()
    retr = Path(retrieval_dir).resolve()
    _check_folder(ckpt, CHECKPOINT_FILES, "checkpoint")
    _check_folder(retr, RETRIEVAL_FILES, "retrieval")
    models = resolve_models(cfg, ckpt)
    for name, model in models.items():
        if name != MAIN_MODEL:  # the main checkpoint was checked above
            _check_folder(model.checkpoint_dir, CHECKPOINT_FILES, "checkpoint")
    token = load_secret(cfg.serve, os.environ)
    srv = cfg.serve
    encoder = ECGEncoder.options(**deployment_options(srv.encoder)).bind(models, str(retr),
                                                                         srv.encoder)
    retriever = Retriever.options(**deployment_options(srv.retriever)).bind(
        str(retr), cfg.retrieval, srv.retriever)
    llm = LLM.options(**deployment_options(srv.llm)).bind(models, srv.llm)
    return Ingress.options(**deployment_options(srv.ingress)).bind(
        encoder, retriever, llm, srv, cfg.data, model_infos(models), token)


def _overrides(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return value.split()
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise AppArgsError(f"overrides: expected a list of 'dotted.key=value' strings, got {value!r}")


def default_retrieval_dir(cfg: ExperimentConfig, checkpoint_dir: Path,
                          run_id: Optional[str]) -> Path:
    """``<checkpoint>/../retrieval``, or the ``retrieval`` artifact of MLflow run ``run_id``
    (downloaded under ``<output_dir>/downloads/<run_id>``)."""
    if run_id is None:
        return checkpoint_dir.parent / "retrieval"
    dst = Path(cfg.output_dir) / "downloads" / run_id
    return mlflow_run.download_artifacts(cfg.tracking.tracking_uri, run_id, "retrieval", dst)


@dataclass(frozen=True)
class AppSpec:
    """What :func:`build_application` needs, resolved from ``serve run`` arguments."""

    cfg: ExperimentConfig
    checkpoint_dir: Path
    retrieval_dir: Path


def resolve_app_args(args: Mapping[str, Any]) -> AppSpec:
    """Load the config (paths made absolute), resolve the checkpoint (folder or MLflow run id)
    and the retrieval folder.

    Raises:
        AppArgsError: unknown/missing arguments or a checkpoint path that does not exist.
        ecglm.config.ConfigError: the config or an override is invalid.
    """
    unknown = sorted(set(args) - ALLOWED_ARGS)
    if unknown:
        raise AppArgsError(f"unknown argument(s) {unknown}; allowed: {sorted(ALLOWED_ARGS)}")
    for key in ("config", "checkpoint"):
        if not args.get(key):
            raise AppArgsError(f"{key}: required (config=<yaml> checkpoint=<folder, MLflow "
                               "run id or models:/NAME@ALIAS>)")
    cfg = resolve_paths(load_config(Path(str(args["config"])), _overrides(args.get("overrides"))))
    given = str(args["checkpoint"])
    if "/" in given and not given.startswith(REGISTRY_SCHEME) and not Path(given).is_dir():
        raise AppArgsError(f"checkpoint: folder {given} not found (pass a checkpoint folder or "
                           "an MLflow run id)")
    checkpoint, run_id = resolve_checkpoint(cfg, given)
    checkpoint = Path(checkpoint).resolve()
    retrieval = (Path(str(args["retrieval"])) if args.get("retrieval")
                 else default_retrieval_dir(cfg, checkpoint, run_id))
    return AppSpec(cfg, checkpoint, retrieval.resolve())


def build_app(args: Mapping[str, Any]) -> Application:
    """Serve application builder for ``serve run`` (see the module docstring for ``args``).

    Raises:
        AppArgsError: unknown/missing arguments or incomplete folders.
        ecglm.config.ConfigError: the config or an override is invalid.
    """
    spec = resolve_app_args(args)
    return build_application(spec.cfg, spec.checkpoint_dir, spec.retrieval_dir)
