"""``ecglm plan CONFIG``: the memory plan of a config (no Ray, no weights loaded)."""

from __future__ import annotations

from typing import Any, Optional

import psutil

from ecglm.config import ExperimentConfig
from ecglm.plan.memory import GIB
from ecglm.plan.planner import Hardware, make_plan
from ecglm.plan.report import render, to_json

DEFAULT_GPU_MEM_GIB = 80.0
"""GPU memory assumed when neither ``--gpu-mem-gib`` nor ``train.gpu_mem_gib`` is set."""


def hardware_of(cfg: ExperimentConfig, nodes: Optional[int] = None,
                gpus_per_node: Optional[int] = None, gpu_mem_gib: Optional[float] = None,
                cpu_mem_gib: Optional[float] = None) -> Hardware:
    """Hardware from the flags, defaulting to the config: one node with
    ``train.num_workers`` GPUs of ``train.gpu_mem_gib`` (else 80 GiB); CPU runs: this
    machine's RAM."""
    use_gpu = cfg.train.use_gpu
    if cpu_mem_gib is None and not use_gpu:
        cpu_mem_gib = round(psutil.virtual_memory().total / GIB, 1)
    if gpu_mem_gib is None and use_gpu:
        gpu_mem_gib = cfg.train.gpu_mem_gib or DEFAULT_GPU_MEM_GIB
    return Hardware(nodes=nodes or 1, gpus_per_node=gpus_per_node or cfg.train.num_workers,
                    gpu_mem_gib=gpu_mem_gib, cpu_mem_gib=cpu_mem_gib, use_gpu=use_gpu)


def run(cfg: ExperimentConfig, hardware: Hardware, model: Optional[str] = None
        ) -> tuple[str, dict[str, Any]]:
    """The plan as text and as the JSON dict (``fits``, ``per_gpu_gib``, ``recommended``,
    ...)."""
    plan = make_plan(cfg, hardware, model)
    return render(plan), to_json(plan)
