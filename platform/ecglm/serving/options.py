"""Ray Serve ``.options(...)`` of one deployment from its :class:`DeploymentConfig`
(``serve.ingress``, ``serve.encoder``, ``serve.retriever``, ``serve.llm``)."""

from __future__ import annotations

from typing import Any

import torch

from ecglm.config.schema import DeploymentConfig


class DeviceUnavailable(RuntimeError):
    """A replica was given a GPU by ``serve.<deployment>.num_gpus`` but sees no CUDA device."""


def deployment_options(dep: DeploymentConfig) -> dict[str, Any]:
    """Keyword arguments of ``Deployment.options``: resources, autoscaling, admission limit
    and health checks. Batching is applied inside the replica (:func:`apply_batching`)."""
    return {
        "ray_actor_options": {"num_cpus": dep.num_cpus, "num_gpus": dep.num_gpus},
        "autoscaling_config": dep.autoscaling,
        "max_ongoing_requests": dep.max_ongoing_requests,
        "health_check_period_s": dep.health_check_period_s,
        "health_check_timeout_s": dep.health_check_timeout_s,
    }


def apply_batching(batched_method: Any, dep: DeploymentConfig) -> None:
    """Set the size and wait of a ``@serve.batch`` method (bound to a replica) from the
    config."""
    batched_method.set_max_batch_size(dep.max_batch_size)
    batched_method.set_batch_wait_timeout_s(dep.batch_wait_timeout_s)


def replica_device(dep: DeploymentConfig) -> torch.device:
    """``cuda`` when the deployment asks for a GPU (Ray sets ``CUDA_VISIBLE_DEVICES`` for the
    replica), else ``cpu``.

    Raises:
        DeviceUnavailable: ``num_gpus > 0`` but CUDA is not available in the replica.
    """
    if dep.num_gpus <= 0:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DeviceUnavailable(f"num_gpus={dep.num_gpus} but torch sees no CUDA device in this "
                                "replica (CPU-only torch build or no GPU on the node)")
    return torch.device("cuda")
