"""The memory check ``ecglm train`` and ``ecglm tune`` run before any Train worker starts.

Hardware comes from the running Ray cluster when the driver is connected (``ray.nodes()``:
GPUs and CPUs per node, the node's memory, ``accelerator_type:*`` for the GPU memory) and
from this machine otherwise (``psutil``, ``torch.cuda``). GPU memory: ``train.gpu_mem_gib``,
else the driver's own CUDA device, else the accelerator type's known size
(:data:`GPU_MEMORY_GIB`), else the GPU check is skipped with a printed warning.
"""

from __future__ import annotations

import math
import sys
from typing import Any, Optional

import psutil
import ray
import torch

from ecglm.config.schema import ConfigError, ExperimentConfig
from ecglm.plan.arch import ArchError
from ecglm.plan.memory import GIB
from ecglm.plan.planner import Hardware, Plan, make_plan, setting_json

GPU_MEMORY_GIB = {"H200": 141.0, "H100": 80.0, "A100-80G": 80.0, "A100-40G": 40.0,
                  "A100": 40.0, "L40S": 48.0, "L40": 48.0, "A10G": 24.0, "A10": 24.0,
                  "L4": 24.0, "V100": 16.0, "T4": 16.0}
"""GiB per device of the accelerator types Ray reports (``accelerator_type:<name>``); the
smaller size where a name covers two (A100, V100)."""


class MemoryPlanError(ConfigError):
    """The configured training setting cannot fit the hardware (the message has the
    numbers and the cheapest setting that fits)."""


def _alive_nodes() -> list[dict[str, Any]]:
    return [n for n in ray.nodes() if n.get("Alive")] if ray.is_initialized() else []


def _gpu_mem_from_nodes(nodes: list[dict[str, Any]]) -> Optional[float]:
    sizes = [GPU_MEMORY_GIB[k.split(":", 1)[1]] for n in nodes for k in n["Resources"]
             if k.startswith("accelerator_type:") and k.split(":", 1)[1] in GPU_MEMORY_GIB]
    return min(sizes) if sizes else None


def detect_hardware(cfg: ExperimentConfig) -> tuple[Hardware, list[str]]:
    """Hardware of the run of ``cfg`` (module doc) and notes on what was assumed."""
    t = cfg.train
    notes: list[str] = []
    nodes = _alive_nodes()
    host_gib = psutil.virtual_memory().total / GIB
    if len(nodes) > 1:
        host_gib = min((n["Resources"].get("memory", 0) + n["Resources"].get(
            "object_store_memory", 0)) / GIB for n in nodes)
    if not t.use_gpu:
        cpus = max((n["Resources"].get("CPU", 0) for n in nodes), default=psutil.cpu_count())
        per_node = max(1, min(t.num_workers, int(cpus // t.cpus_per_worker) or 1))
        return Hardware(math.ceil(t.num_workers / per_node), per_node, None, host_gib,
                        use_gpu=False), notes
    gpus = max((int(n["Resources"].get("GPU", 0)) for n in nodes), default=0)
    if gpus == 0 and torch.cuda.is_available():
        gpus = torch.cuda.device_count()
    if gpus == 0:
        gpus = t.num_workers
        notes.append(f"no GPU node seen: assuming all {t.num_workers} workers on one node")
    per_node = min(gpus, t.num_workers)
    mem = t.gpu_mem_gib
    if mem is None and torch.cuda.is_available():
        mem = torch.cuda.get_device_properties(0).total_memory / GIB
    if mem is None:
        mem = _gpu_mem_from_nodes(nodes)
    if mem is None:
        notes.append("GPU memory unknown (set train.gpu_mem_gib): GPU memory check skipped")
    return Hardware(math.ceil(t.num_workers / per_node), per_node, mem, host_gib), notes


def refusal(plan: Plan) -> str:
    """The error text of a setting that cannot fit: what it needs, what there is, and the
    cheapest setting that fits."""
    conf, hw = plan.configured, plan.hardware
    parts = conf.breakdown_gib()
    where = "GPU" if hw.use_gpu else "worker"
    lines = [f"train.memory_check: {conf.setting.label()} with train.batch_size="
             f"{conf.setting.micro_batch} does not fit: needs {parts['total']:.2f} GiB per "
             f"{where} (params {parts['params']:.2f}, grads {parts['grads']:.2f}, optimizer "
             f"{parts['optimizer']:.2f}, activations {parts['activations']:.2f}, runtime "
             f"{parts['runtime']:.2f}) and {conf.host_per_node / GIB:.2f} GiB host RAM per "
             f"node; available: "
             f"{'?' if hw.gpu_mem_gib is None else f'{hw.gpu_mem_gib:.2f}'} GiB per GPU, "
             f"{'?' if hw.cpu_mem_gib is None else f'{hw.cpu_mem_gib:.2f}'} GiB host per node "
             f"({hw.nodes} node(s) x {hw.gpus_per_node} worker(s))"]
    if plan.recommended is not None:
        rec = setting_json(plan.recommended.setting, plan.recommended_grad_accum)
        lines.append("cheapest setting that fits: " + " ".join(
            f"{k}={v}" for k, v in rec.items() if k != "label" and v is not None)
            + f" ({plan.recommended.per_device / GIB:.2f} GiB per {where})")
    else:
        lines.append("no setting fits this hardware: more or larger devices are needed")
    lines.append("(`ecglm plan CONFIG` shows every setting; train.memory_check=false skips "
                 "this check)")
    return "\n".join(lines)


def check_memory(cfg: ExperimentConfig, hardware: Optional[Hardware] = None) -> Optional[Plan]:
    """Refuse ``cfg`` when its setting cannot fit (``train.memory_check``; None when off, or
    when the LLM is not a family the planner counts: then a warning is printed).

    Args:
        hardware: the hardware to check against (default: :func:`detect_hardware`).

    Raises:
        MemoryPlanError: it does not fit (message from :func:`refusal`).
    """
    if not cfg.train.memory_check:
        return None
    notes: list[str] = []
    if hardware is None:
        hardware, notes = detect_hardware(cfg)
    for note in notes:
        print(f"memory check: {note}", file=sys.stderr)
    try:
        plan = make_plan(cfg, hardware)
    except ArchError as exc:  # e.g. a GPT-2-style LLM: warn, do not block the run
        print(f"memory check skipped: {exc}", file=sys.stderr)
        return None
    if not plan.fits:
        raise MemoryPlanError(refusal(plan))
    return plan
