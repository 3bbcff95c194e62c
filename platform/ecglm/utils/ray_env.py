"""Start or join Ray with settings that work on a 2-core laptop and on a cluster.

Ray Data needs CPUs besides the Train workers (with ``num_cpus == workers`` a dataset never
yields a row), so a local instance declares ``train.ray_num_cpus`` logical CPUs.

The DeepSpeed accelerator (``DS_ACCELERATOR``) is *not* part of the environment the driver
hands to Ray: every process picks it from its own resources in :func:`set_process_env`
(a GPU worker on a cluster whose head has no GPU must run DeepSpeed on CUDA, not on the
head's CPU choice).
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional, Sequence

import ray
from ray.data import DataContext

#: Environment every ecglm process (driver and Ray workers) runs with; the driver sends it to
#: every Ray worker through the job's runtime env (:func:`runtime_env`).
WORKER_ENV: dict[str, str] = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "OMP_NUM_THREADS": "1",
    "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
    # Ray Train's print patch tees every worker print into its logger, whose console handler
    # prints it again: each worker line reached the terminal twice.
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
}

DS_ACCELERATOR = "DS_ACCELERATOR"
"""DeepSpeed reads its accelerator from this variable once, when first asked for it."""
CHOSEN_ACCELERATORS = ("cpu", "cuda")
"""The values :func:`choose_ds_accelerator` picks from; any other value already in the
environment (``xpu``, ``npu``, ``hpu``...) is a user's explicit choice and is kept."""


def choose_ds_accelerator(cuda_available: bool, ray_gpu_ids: Optional[Sequence[Any]],
                          current: Optional[str] = None) -> str:
    """DeepSpeed accelerator of one process, from that process's own resources.

    Args:
        cuda_available: ``torch.cuda.is_available()`` in this process.
        ray_gpu_ids: ``ray.get_gpu_ids()`` inside a Ray task or actor (the GPUs Ray assigned
            it; empty: none); None outside a Ray worker (a driver, a plain script).
        current: the value already in the environment (inherited from a driver, a raylet or
            the user); only a non-``cpu``/``cuda`` value is kept.

    Returns:
        ``current`` when it names another accelerator; ``"cuda"`` when CUDA is available and,
        inside a Ray worker, Ray assigned it at least one GPU; ``"cpu"`` otherwise (a CPU-only
        Train worker on a GPU node runs gloo on the CPU).
    """
    if current and current not in CHOSEN_ACCELERATORS:
        return current
    if cuda_available and (ray_gpu_ids is None or len(ray_gpu_ids) > 0):
        return "cuda"
    return "cpu"


def _ray_gpu_ids() -> Optional[list[Any]]:
    """The GPU ids Ray assigned to this process when it is a Ray task/actor, else None."""
    if not ray.is_initialized() or ray.get_runtime_context().worker.mode != ray.WORKER_MODE:
        return None
    return list(ray.get_gpu_ids())


def _has_cuda() -> bool:
    try:
        import torch  # deferred on purpose: a ~2 s import only to probe for a GPU

        return bool(torch.cuda.is_available())
    except ImportError:  # pragma: no cover
        return False


def set_process_env() -> str:
    """Put :data:`WORKER_ENV` defaults into this process's environment (explicit values win)
    and set ``DS_ACCELERATOR`` from this process's own resources
    (:func:`choose_ds_accelerator`). Call it before ``deepspeed`` is first imported.

    Returns:
        The ``DS_ACCELERATOR`` now in the environment.
    """
    for key, value in WORKER_ENV.items():
        os.environ.setdefault(key, value)
    chosen = choose_ds_accelerator(_has_cuda(), _ray_gpu_ids(), os.environ.get(DS_ACCELERATOR))
    os.environ[DS_ACCELERATOR] = chosen
    return chosen


JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"
"""Set by Ray in a submitted job's driver: the job's config, runtime env included (JSON)."""


def _job_env_keys() -> set[str]:
    """Env var names a submitted job's runtime env already sets (``ecglm submit``,
    ``ray job submit --runtime-env``); empty outside a Ray job."""
    raw = os.environ.get(JOB_CONFIG_ENV)
    if not raw:
        return set()
    try:
        env = ((json.loads(raw) or {}).get("runtime_env") or {}).get("env_vars") or {}
    except (ValueError, AttributeError):
        return set()
    return set(env)


def runtime_env() -> dict[str, Any]:
    """The job-level runtime env the driver passes to ``ray.init``: :data:`WORKER_ENV` as set
    in this process. ``DS_ACCELERATOR`` is never in it (each worker chooses its own).

    Inside a submitted job, variables the job's own runtime env sets are left out: Ray refuses
    a driver runtime env that repeats a key of the job's (and the job's value, e.g.
    ``HF_HUB_OFFLINE=0`` from ``cluster.hub_offline: false``, already reaches every worker)."""
    skip = _job_env_keys()
    return {"env_vars": {k: os.environ[k] for k in WORKER_ENV
                         if k in os.environ and k not in skip}}


def joined_runtime_env(address: str) -> dict[str, Any]:
    """:func:`runtime_env` for a driver joining the cluster at ``address`` (``RAY_ADDRESS``):
    workers also get ``RAY_ADDRESS``, because Ray Train's placement-group cleaner (an actor)
    finds the State API through it; without it, on a machine running several Ray instances,
    the cleaner dies ("Found multiple active Ray instances") and a finished Tune trial's
    worker bundles are never freed, so the next trial's workers never start. A Ray Client
    address (``ray://``) means nothing to a worker and is not passed."""
    env = runtime_env()
    if not address.startswith("ray://") and "RAY_ADDRESS" not in _job_env_keys():
        env["env_vars"]["RAY_ADDRESS"] = address
    return env


def init_ray(num_cpus: int, object_store_bytes: int = 1 << 30) -> None:
    """Join the cluster named by ``RAY_ADDRESS`` or start a new local instance (no-op if
    running). Without ``RAY_ADDRESS`` a ``ray start`` head left on the machine is not joined:
    the local instance is this process's own (``address="local"``).

    Args:
        num_cpus: logical CPUs of a *local* instance (ignored when joining a cluster).
        object_store_bytes: object store size of a local instance, bytes.
    """
    set_process_env()
    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            ray.init(runtime_env=joined_runtime_env(os.environ["RAY_ADDRESS"]),
                     log_to_driver=True)
        else:
            ray.init(
                address="local",
                num_cpus=num_cpus,
                object_store_memory=object_store_bytes,
                # The dashboard serves the State API, which Ray Train's placement-group
                # cleaner needs to free a finished trial's workers inside Ray Tune.
                include_dashboard=True,
                dashboard_host="127.0.0.1",
                runtime_env=runtime_env(),
                log_to_driver=True,
            )
    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
