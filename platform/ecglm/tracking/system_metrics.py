"""System metrics (CPU, memory, disk, network; GPU where NVML is present) of a training run,
sampled where training runs.

MLflow's :class:`mlflow.system_metrics.system_metrics_monitor.SystemMetricsMonitor` does the
sampling (psutil; ``nvidia-ml-py`` for NVIDIA GPUs, skipped when absent) and logs
``system/<metric>`` (``system/<node id>/<metric>`` with a node id) to the run given by id,
through an explicit tracking URI: no fluent MLflow state. One monitor per node: each Ray Train
worker with local rank 0 starts one (:func:`node_monitor`); on a multi-node run its metrics are
``system/node_<node rank>/...`` so nodes do not collide.

MLflow's monitor publishes one aggregated sample every ``interval_s`` and drops the pending
samples when stopped; :meth:`NodeMetrics.stop` publishes them (plus one last sample), so even a
run shorter than the interval gets its CPU and memory numbers.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any, Iterator, Optional

logger = logging.getLogger(__name__)

PREFIX = "system/"
"""Prefix of the metric names MLflow's monitor logs."""


class NodeMetrics:
    """A started system-metrics monitor for one node; :meth:`stop` it at the end."""

    def __init__(self, tracking_uri: str, run_id: str, interval_s: float,
                 node_id: Optional[str] = None) -> None:
        """Start sampling every ``interval_s`` seconds into run ``run_id`` (steps continue
        after the run's last ``system/`` step: a resumed or restarted run appends)."""
        # deferred on purpose: importing mlflow takes seconds (see ecglm.tracking.mlflow_run)
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        self.node_id = node_id
        self.monitor: Any = SystemMetricsMonitor(run_id, sampling_interval=interval_s,
                                                 resume_logging=True, node_id=node_id,
                                                 tracking_uri=tracking_uri)
        self.monitor.start()

    def stop(self) -> None:
        """Stop the sampling thread, then log the samples it held back plus a last one."""
        monitor = self.monitor
        monitor.finish()
        try:
            monitor.collect_metrics()
            monitor.publish_metrics(monitor.aggregate_metrics())
            monitor.mlflow_logger.flush()
        except Exception as exc:  # noqa: BLE001 - metrics must never fail a training run
            logger.warning("system metrics: final sample not logged: %s", exc)


def node_id(node_rank: int, single_node: bool) -> Optional[str]:
    """``None`` on a single-node run (metrics ``system/<name>``), else ``node_<node_rank>``."""
    return None if single_node else f"node_{int(node_rank)}"


def node_monitor(tracking_uri: str, run_id: Optional[str], enabled: bool, interval_s: float,
                 local_rank: int, node_rank: int, single_node: bool) -> Optional[NodeMetrics]:
    """A started :class:`NodeMetrics` on the worker with local rank 0 of each node when
    ``enabled`` and the run is tracked; None elsewhere. A monitor that cannot start logs a
    warning and returns None (never fails the training)."""
    if not enabled or not run_id or local_rank != 0:
        return None
    try:
        return NodeMetrics(tracking_uri, run_id, interval_s, node_id(node_rank, single_node))
    except Exception as exc:  # noqa: BLE001 - metrics must never fail a training run
        logger.warning("system metrics: monitor not started: %s", exc)
        return None


@contextmanager
def train_worker_metrics(tracking: Any, run_id: Optional[str]) -> Iterator[Optional[NodeMetrics]]:
    """Inside a Ray Train worker: sample this node's system metrics into ``run_id`` while the
    block runs (local rank 0 of each node only; ``tracking`` is the config's ``tracking``
    section: ``system_metrics``, ``system_metrics_interval_s``, ``tracking_uri``)."""
    import ray.train  # deferred on purpose: only Train workers call this

    ctx = ray.train.get_context()
    monitor = node_monitor(tracking.tracking_uri, run_id, tracking.system_metrics,
                           tracking.system_metrics_interval_s, ctx.get_local_rank(),
                           ctx.get_node_rank(),
                           ctx.get_local_world_size() == ctx.get_world_size())
    try:
        yield monitor
    finally:
        if monitor is not None:
            monitor.stop()
