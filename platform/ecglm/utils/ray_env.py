"""Start or join Ray with settings that work on a 2-core laptop and on a cluster.

Ray Data needs CPUs besides the Train workers (with ``num_cpus == workers`` a dataset never
yields a row), so a local instance declares ``train.ray_num_cpus`` logical CPUs.
"""

from __future__ import annotations

import os

import ray
from ray.data import DataContext

#: Environment every ecglm process (driver and Ray workers) runs with.
WORKER_ENV: dict[str, str] = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "DS_ACCELERATOR": "cpu",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "OMP_NUM_THREADS": "1",
    "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
    # Ray Train's print patch tees every worker print into its logger, whose console handler
    # prints it again: each worker line reached the terminal twice.
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
}


def set_process_env() -> None:
    """Put :data:`WORKER_ENV` defaults into this process's environment (explicit values win)."""
    for key, value in WORKER_ENV.items():
        if key == "DS_ACCELERATOR" and _has_cuda():
            continue
        os.environ.setdefault(key, value)


def _has_cuda() -> bool:
    try:
        import torch  # deferred on purpose: a ~2 s import only to probe for a GPU

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False


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
        env_vars = {k: os.environ[k] for k in WORKER_ENV if k in os.environ}
        if os.environ.get("RAY_ADDRESS"):
            ray.init(runtime_env={"env_vars": env_vars}, log_to_driver=True)
        else:
            ray.init(
                address="local",
                num_cpus=num_cpus,
                object_store_memory=object_store_bytes,
                # The dashboard serves the State API, which Ray Train's placement-group
                # cleaner needs to free a finished trial's workers inside Ray Tune.
                include_dashboard=True,
                dashboard_host="127.0.0.1",
                runtime_env={"env_vars": env_vars},
                log_to_driver=True,
            )
    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
