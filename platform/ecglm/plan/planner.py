"""A memory plan of one config on given hardware: every setting sized, the cheapest one that
fits recommended.

"Cheapest" means the least extra work per step, in this order: fewest offloaded state kinds
(NVMe counts double: host/NVMe traffic every step), then the lowest ZeRO stage (DDP <
ZeRO-1 < 2 < 3: more partitioning, more communication), then no gradient checkpointing
(it recomputes every layer's forward, about a third more compute), then the largest
micro-batch. The recommended micro-batch is the configured per-worker batch
(``train.batch_size * train.grad_accum_steps``) or the largest that fits, whichever is
smaller, with ``grad_accum_steps`` raised so the effective batch stays at least as large.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Optional

from ecglm.config.schema import ExperimentConfig
from ecglm.plan.arch import LLMArch, llm_arch, lora_modules, lora_params
from ecglm.plan.front import ECG_SLOTS, front_end_size
from ecglm.plan.memory import (
    GIB,
    GPU_RUNTIME_BYTES,
    ModelSizes,
    Setting,
    States,
    Workload,
    activation_bytes,
    model_states,
)

WORKER_HOST_BYTES = 1 * GIB
"""Host RAM of one Ray Train worker process before any model (Python, torch, transformers,
peft, DeepSpeed and Ray imported: 0.58 GiB measured here; plus Ray's core worker and data
buffers)."""
CPU_RUNTIME_FRACTION = 0.6
"""Extra host memory of CPU training beyond the planned tensors, as a fraction of them:
glibc's allocator keeps freed activation and gradient blocks. ``jobs/bench/plan_memory.py``
measured peak RSS at 1.45-1.55x the tensors for three model sizes (20M-220M parameters) with
the default allocator, and at 0.99-1.00x with ``--malloc-mmap`` (freed blocks returned to the
OS). The value is fitted from the default-allocator run. GPU runs do not use it."""

MAX_MICRO_BATCH = 4096


@dataclass(frozen=True)
class Hardware:
    """Where the run goes.

    Attributes:
        nodes: machines.
        gpus_per_node: GPUs (= Train workers) per machine; for CPU runs, workers per machine.
        gpu_mem_gib: memory of one GPU (None: unknown, GPU check skipped).
        cpu_mem_gib: host RAM of one machine (None: unknown, host check skipped).
        use_gpu: GPU run (False: everything lives in host RAM).
    """

    nodes: int
    gpus_per_node: int
    gpu_mem_gib: Optional[float]
    cpu_mem_gib: Optional[float]
    use_gpu: bool = True

    @property
    def world(self) -> int:
        return self.nodes * self.gpus_per_node


@dataclass(frozen=True)
class Estimate:
    """One setting sized on one hardware.

    Attributes:
        setting: what was sized.
        states: model states.
        activations: activation bytes per device at ``setting.micro_batch``.
        per_device: bytes per GPU (GPU runs) or per worker process (CPU runs).
        host_per_node: host RAM per node.
        fits_device: per-device check (None: memory unknown).
        fits_host: per-node host check (None: memory unknown).
        max_micro_batch: the largest micro-batch that fits (0: none; None: unknown).
    """

    setting: Setting
    states: States
    activations: int
    per_device: int
    host_per_node: int
    fits_device: Optional[bool]
    fits_host: Optional[bool]
    max_micro_batch: Optional[int]

    @property
    def fits(self) -> bool:
        """Fits wherever the memory is known (unknown memory does not refuse)."""
        return self.fits_device is not False and self.fits_host is not False

    def breakdown_gib(self) -> dict[str, float]:
        """Per-device parts in GiB."""
        runtime = self.per_device - self.states.device - self.activations
        return {k: round(v / GIB, 3) for k, v in (
            ("params", self.states.params), ("grads", self.states.grads),
            ("optimizer", self.states.optimizer), ("activations", self.activations),
            ("runtime", runtime), ("total", self.per_device))}


@dataclass
class Plan:
    """A config's memory plan (see the module doc for "cheapest")."""

    name: str
    arch: LLMArch
    sizes: ModelSizes
    counts: dict[str, int]
    workload: Workload
    hardware: Hardware
    configured: Estimate
    candidates: list[Estimate]
    recommended: Optional[Estimate]
    recommended_grad_accum: Optional[int]
    warnings: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return self.configured.fits


def setting_of(cfg: ExperimentConfig) -> Setting:
    """The setting ``cfg.train`` asks for."""
    t = cfg.train
    return Setting(zero_stage=0 if t.strategy == "ddp" else t.zero_stage,
                   offload_optimizer=t.offload_optimizer, offload_params=t.offload_params,
                   micro_batch=t.batch_size, gradient_checkpointing=t.gradient_checkpointing,
                   precision=t.precision, llm_dtype=cfg.llm.dtype)


def workload_and_sizes(cfg: ExperimentConfig, model: Optional[str] = None
                       ) -> tuple[LLMArch, Workload, ModelSizes, dict[str, int]]:
    """Geometry, activation workload, parameter sizes and counts of ``cfg`` (``model``: a
    built-in architecture replacing the config's LLM)."""
    arch = llm_arch(cfg.llm, model)
    front = front_end_size(cfg, arch)
    slots = ECG_SLOTS.get(cfg.task, 1)
    lora = lora_params(arch, cfg.lora)
    llm = arch.params()
    wl = Workload(arch=arch, text_tokens=cfg.llm.max_length,
                  prefix_tokens=slots * front.tokens_per_ecg,
                  kv_prefix=cfg.fusion.name == "kv_prefix", lora_modules=lora_modules(cfg.lora),
                  lora_r=cfg.lora.r, lora_dropout=cfg.lora.dropout,
                  attn=cfg.llm.attn_implementation,
                  ecg_bytes_fp32=slots * front.act_bytes_per_ecg)
    sizes = ModelSizes(frozen_llm=llm, frozen_ecg=front.total - front.trainable,
                       trainable=lora + front.trainable, largest_layer=arch.largest_layer())
    counts = {"llm": llm, "lora": lora, "ecg_side": front.total,
              "ecg_side_trainable": front.trainable, "trainable": sizes.trainable,
              "total": sizes.total, "largest_layer": sizes.largest_layer,
              "prefix_tokens": wl.prefix_tokens, "seq_tokens": wl.seq}
    return arch, wl, sizes, counts


def estimate(sizes: ModelSizes, wl: Workload, setting: Setting, hw: Hardware) -> Estimate:
    """Size ``setting`` on ``hw`` (and find its largest micro-batch that fits)."""
    per_node = hw.gpus_per_node
    states = model_states(sizes, setting, per_node, hw.nodes)

    def device_bytes(batch: int) -> int:
        act = activation_bytes(wl, replace(setting, micro_batch=batch))
        if hw.use_gpu:
            return states.device + act + GPU_RUNTIME_BYTES
        return int((states.device + act) * (1 + CPU_RUNTIME_FRACTION))

    def host_bytes(batch: int) -> int:
        if hw.use_gpu:
            return states.host_per_node + per_node * WORKER_HOST_BYTES
        return per_node * (device_bytes(batch) + WORKER_HOST_BYTES)

    def fits(batch: int) -> tuple[Optional[bool], Optional[bool]]:
        dev = (None if not hw.use_gpu or hw.gpu_mem_gib is None
               else device_bytes(batch) <= hw.gpu_mem_gib * GIB)
        host = None if hw.cpu_mem_gib is None else host_bytes(batch) <= hw.cpu_mem_gib * GIB
        return dev, host

    def ok(batch: int) -> bool:
        return all(x is not False for x in fits(batch))

    limits_known = any(x is not None for x in fits(1))
    max_batch: Optional[int] = None
    if limits_known:
        lo, hi = 0, MAX_MICRO_BATCH  # activations grow with the batch: binary search
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if ok(mid) else (lo, mid - 1)
        max_batch = lo
    b = setting.micro_batch
    dev_fit, host_fit = fits(b)
    return Estimate(setting=setting, states=states,
                    activations=activation_bytes(wl, setting), per_device=device_bytes(b),
                    host_per_node=host_bytes(b), fits_device=dev_fit, fits_host=host_fit,
                    max_micro_batch=max_batch)


def candidate_settings(base: Setting, use_gpu: bool) -> list[Setting]:
    """Every setting the planner compares, cheapest first (module doc)."""
    stages = [(0, "none", "none"), (1, "none", "none"), (2, "none", "none"),
              (3, "none", "none")]
    if use_gpu:
        stages += [(1, "cpu", "none"), (2, "cpu", "none"), (3, "cpu", "none"),
                   (3, "cpu", "cpu"), (3, "nvme", "none"), (3, "nvme", "nvme")]
    out = [replace(base, zero_stage=z, offload_optimizer=o, offload_params=p,
                   gradient_checkpointing=ck)
           for z, o, p in stages for ck in (False, True)]
    return sorted(out, key=lambda s: (s.n_offloads, s.zero_stage, s.gradient_checkpointing))


def make_plan(cfg: ExperimentConfig, hw: Hardware, model: Optional[str] = None) -> Plan:
    """Size ``cfg``'s own setting and every candidate on ``hw``; recommend the cheapest that
    fits (module doc)."""
    arch, wl, sizes, counts = workload_and_sizes(cfg, model)
    base = setting_of(cfg)
    configured = estimate(sizes, wl, base, hw)
    candidates = [estimate(sizes, wl, s, hw) for s in candidate_settings(base, hw.use_gpu)]
    warnings: list[str] = []
    if hw.use_gpu and hw.gpu_mem_gib is None:
        warnings.append("GPU memory unknown (train.gpu_mem_gib / --gpu-mem-gib): GPU check "
                        "skipped")
    if hw.cpu_mem_gib is None:
        warnings.append("host memory unknown (--cpu-mem-gib): host check skipped")
    wanted = cfg.train.batch_size * cfg.train.grad_accum_steps
    recommended, accum = None, None
    for cand in candidates:
        if cand.max_micro_batch:  # known limits and at least one example fits
            micro = min(cand.max_micro_batch, wanted)
            recommended = estimate(sizes, wl, replace(cand.setting, micro_batch=micro), hw)
            accum = math.ceil(wanted / micro)
            break
    return Plan(name=cfg.name, arch=arch, sizes=sizes, counts=counts, workload=wl,
                hardware=hw, configured=configured, candidates=candidates,
                recommended=recommended, recommended_grad_accum=accum, warnings=warnings)


def setting_json(setting: Setting, grad_accum: Optional[int] = None) -> dict[str, Any]:
    """The config keys of a setting (``train.*``)."""
    out: dict[str, Any] = {
        "label": setting.label(),
        "train.strategy": "ddp" if setting.zero_stage == 0 else "deepspeed",
        "train.zero_stage": setting.zero_stage or None,
        "train.offload_optimizer": setting.offload_optimizer,
        "train.offload_params": setting.offload_params,
        "train.gradient_checkpointing": setting.gradient_checkpointing,
        "train.batch_size": setting.micro_batch}
    if grad_accum is not None:
        out["train.grad_accum_steps"] = grad_accum
    return out
