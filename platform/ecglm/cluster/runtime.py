"""The runtime env and entrypoint of a submitted job.

Working dir: the repo (``jobs/``, ``platform/``, ``serve/``, configs) without
``cluster.excludes``. Ray puts that copy first on ``PYTHONPATH`` and starts the driver and
every worker (Train workers, evaluation tasks, Serve replicas) in it; ``PYTHONPATH=platform``
(relative to that cwd) then makes them import the uploaded ``platform/ecglm`` rather than
whatever ``ecglm`` the nodes have installed.

A config inside the uploaded repo is named by its path there; one outside it (or in an
excluded folder) travels as YAML text in the job's env (:data:`CONFIG_ENV`) and the job reads
it back (:func:`ecglm.cli.run_job`).
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any, Optional, Sequence

import ecglm
from ecglm.config import ExperimentConfig

CONFIG_ENV = "ECGLM_CONFIG_YAML"
"""Job env var holding the config YAML when the config file is not in the uploaded repo."""
CONFIG_FROM_ENV = f"@{CONFIG_ENV}"
"""Config argument of the job's command line meaning "the YAML in :data:`CONFIG_ENV`"."""
CONFIG_NAME_ENV = "ECGLM_CONFIG_NAME"
"""File name of that config (its stem is kept for messages)."""

SCRIPTS = {"train": "train.py", "tune": "tune.py", "eval": "eval.py", "pretrain": "pretrain.py",
           "shard": "shard.py", "serve": "serve.py", "demo": "demo.py"}
"""``ecglm submit`` command -> its entry point under ``jobs/``."""


class RepoNotFound(RuntimeError):
    """No ecglm checkout (``jobs/`` + ``platform/ecglm``) to upload as the working dir."""


def _is_repo(folder: Path) -> bool:
    return (folder / "jobs").is_dir() and (folder / "platform" / "ecglm").is_dir()


def find_repo(cwd: Optional[Path] = None) -> Path:
    """The checkout uploaded as the job's working dir: the one this ``ecglm`` is imported from
    (editable install or ``PYTHONPATH=<repo>/platform``), else ``cwd`` or one of its parents.

    Raises:
        RepoNotFound: neither is an ecglm checkout.
    """
    here = Path(ecglm.__file__).resolve().parents[2]
    if _is_repo(here):
        return here
    start = (cwd or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if _is_repo(folder):
            return folder
    raise RepoNotFound(f"no ecglm checkout (jobs/ and platform/ecglm/) above {start} nor at "
                       f"{here}: run `ecglm submit` from a clone of the repo")


def _excluded(rel: Path, excludes: Sequence[str]) -> bool:
    """True when ``rel`` (inside the repo) falls under one of ``excludes`` (gitignore-style
    names or patterns, matched on every path component)."""
    for pattern in excludes:
        stripped = pattern.strip("/").removeprefix("**/")
        if any(part == stripped or Path(part).match(stripped) for part in rel.parts):
            return True
    return False


def config_argument(config: Path, repo: Path, excludes: Sequence[str]
                    ) -> tuple[str, dict[str, str]]:
    """How the job names its config: (command-line argument, extra env vars).

    A config uploaded with the repo: its path relative to the repo. Otherwise
    :data:`CONFIG_FROM_ENV` and its YAML text in :data:`CONFIG_ENV`.
    """
    path = config.resolve()
    try:
        rel = path.relative_to(repo)
    except ValueError:
        rel = None
    if rel is not None and not _excluded(rel, excludes):
        return rel.as_posix(), {}
    return CONFIG_FROM_ENV, {CONFIG_ENV: path.read_text(), CONFIG_NAME_ENV: path.name}


def job_env(cfg: ExperimentConfig) -> dict[str, str]:
    """Environment variables of every process of the job (driver and workers)."""
    offline = "1" if cfg.cluster.hub_offline else "0"
    return {
        "RAY_USAGE_STATS_ENABLED": "0",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": offline,
        "TRANSFORMERS_OFFLINE": offline,
        "PYTHONUNBUFFERED": "1",  # log lines reach `ecglm jobs logs` as they are printed
        # the uploaded code before any installed ecglm (relative to the job's cwd, which Ray
        # sets to the working-dir copy for the driver and for every worker)
        "PYTHONPATH": "platform",
        **cfg.cluster.env_vars,
    }


def runtime_env(cfg: ExperimentConfig, repo: Path, extra_env: dict[str, str]
                ) -> dict[str, Any]:
    """Ray runtime env: ``working_dir`` = ``repo`` minus ``cluster.excludes``, env vars."""
    return {"working_dir": str(repo), "excludes": list(cfg.cluster.excludes),
            "env_vars": {**job_env(cfg), **extra_env}}


def entrypoint(command: str, config_arg: str, job_args: Sequence[str],
               python: str = "python") -> str:
    """Shell command the job runs in its working dir:
    ``python jobs/<script> CONFIG [options] [key=value ...]``."""
    return shlex.join([python, f"jobs/{SCRIPTS[command]}", config_arg, *job_args])
