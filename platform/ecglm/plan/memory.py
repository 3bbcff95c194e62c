"""Memory formulas: model states (parameters, gradients, optimizer) and activations.

Notation: ``N`` data-parallel workers (one GPU each), ``G`` GPUs per node, ``n`` nodes,
``T`` trainable parameters (LoRA + trainable ECG side), ``F`` frozen parameters, ``Lp`` the
largest layer's parameters, ``w`` the bytes of the working copy of a parameter (2 under
``train.precision`` bf16/fp16 with DeepSpeed, which casts the whole module; 4 under fp32).

Model states per GPU, bytes (the frozen base pays only its own copy, never optimizer state):

* ZeRO-0 (DDP, autocast for bf16/fp16): frozen ``F_llm * bytes(llm.dtype) + F_ecg * 4``;
  trainable ``4T`` fp32 weights ``+ 4T`` grads ``+ 4T`` DDP bucket copy (``N > 1``) ``+ 8T``
  Adam ``m, v`` ``+ 2T`` autocast's cached bf16 weights (bf16/fp16): 16-22 bytes/param.
* ZeRO-1: ``F w + T w`` params, ``T w`` grads, ``16T / N`` fp32 master + fp32 grad + Adam.
* ZeRO-2: ``F w + T w`` params, ``T w / N`` grads, ``16T / N`` optimizer.
* ZeRO-3: ``(F + T) w / N`` params ``+ 2 w Lp`` (the gathered largest layer and its grads),
  ``16T / N`` optimizer (16-bit gradients live in bounded reduce buckets).
* ``offload_optimizer``: the ``16T / N`` (and ZeRO-2's grad partition) move to host RAM or
  NVMe; ``offload_params`` (ZeRO-3): the ``(F + T) w / N`` partition moves too.

With every parameter trainable (``F = 0``, ``w = 2``) these are DeepSpeed's own estimators:
ZeRO-2 ``2P + 18P/N`` (offload: ``2P``), ZeRO-3 ``4Lp + 18P/N`` (offload ``4Lp + 2P/N``,
offload params too ``4Lp``); :func:`deepspeed_compatible` returns them and ``tests/plan``
checks them against ``estimate_zero2/3_model_states_mem_needs`` within 1%.

Host RAM per node for model states, as DeepSpeed estimates it (buffer factor 1.5):
``1.5 * max(load, offloaded)``, where ``load`` is every local process holding its model
while it is built (``G (F_llm bytes(llm.dtype) + F_ecg 4 + 4T)``; ZeRO-3 builds under
``zero.Init``: ``G * 4 Lp``) and ``offloaded`` is the node's share of offloaded states
(``16T / n`` optimizer; plus ``(F + T) w / n`` offloaded parameters). One deliberate
difference: DeepSpeed's ZeRO-2 offload figure uses all GPUs of the cluster and the full
``16P`` for a per-node number; this module uses the node's ``G`` and its ``1/n`` share.

Activations per micro-batch ``b`` (bytes), Llama decoder, sequence ``s`` = ``llm.max_length``
+ prefix tokens (``input_prefix``; ``kv_prefix`` adds the prefix only as keys/values),
hidden ``h``, MLP width ``i``, heads ``a``, head dim ``d``, element bytes ``e`` (4 fp32, 2
bf16/fp16), saved for backward per layer per token (only what autograd keeps: frozen linears
keep no input, a LoRA linear keeps its input and its ``r``-wide ``A`` output):

* two RMSNorms: ``2 (h + 1) 4`` (input and ``rsqrt``, always fp32);
* attention, sdpa/flash: ``e (2 a d + 2 d a_kv')`` for q, out, k, v (``a_kv' = a`` when
  transformers repeats k/v for sdpa with a padding mask, the key/value heads for flash)
  ``+ 4a`` (log-sum-exp); eager: ``e (a d + 2 d a_kv')`` for q, k, v plus the
  probabilities ``a s_kv (4 + e)`` per token (softmax output in fp32 and its 16-bit cast;
  ``4 a s_kv`` in fp32), and its output ``a d e`` only when ``o_proj`` is adapted;
* SwiGLU MLP: ``3 i e`` (gate, SiLU output, up);
* LoRA: per adapted linear ``r e``, plus its input when nothing else keeps it (the
  attention/MLP norm output ``h e``, the MLP product ``i e`` for ``down_proj``), or with
  ``lora.dropout > 0`` the dropout output and its mask (kept in the input's dtype)
  ``2 in e`` per adapted linear.

With gradient checkpointing a layer keeps only its input ``h e_r`` (``e_r`` = 4 when the
residual stream is fp32: DDP autocast or fp32) and one layer is rebuilt in full during
backward. Outside the layers: final norm ``(h + 1) 4``, the logits and cross-entropy peak
``V (e + 12)`` per token (logits, fp32 log-softmax output, and the two fp32 gradient
buffers of backward), the padding mask ``s e`` per token (sdpa/eager), the backward working
set ``8h + 3 i e`` per token (residual-stream gradient and one MLP's gradients), plus the
ECG front end's traced activations (:mod:`ecglm.plan.front`).

These are saved-tensor counts; ``tests/plan`` checks the per-layer formula against autograd's
saved tensors on small Llamas, and ``jobs/bench/plan_memory.py`` checks whole runs against
peak RSS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ecglm.plan.arch import LLMArch

GIB = 1024**3
DS_BUFFER_FACTOR = 1.5
"""DeepSpeed's ``additional_buffer_factor`` on host memory."""
GPU_RUNTIME_BYTES = int(1.5 * GIB)
"""Per GPU beyond tensors: CUDA context (~0.5 GiB), NCCL and cuBLAS workspaces and allocator
fragmentation (an assumption, not measured here: no GPU)."""
Offload = Literal["none", "cpu", "nvme"]
Precision = Literal["fp32", "bf16", "fp16"]
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class ModelSizes:
    """Parameter counts that decide model-state memory.

    Attributes:
        frozen_llm: frozen LLM parameters (stored at ``llm.dtype``).
        frozen_ecg: frozen ECG-side parameters (fp32, e.g. a frozen vision tower).
        trainable: trainable parameters (LoRA, trainable encoder, mapper).
        largest_layer: parameters of the largest single module.
    """

    frozen_llm: int
    frozen_ecg: int
    trainable: int
    largest_layer: int

    @classmethod
    def full_finetune(cls, params: int, largest_layer: int) -> "ModelSizes":
        """Every parameter trainable (what DeepSpeed's estimators assume)."""
        return cls(0, 0, params, largest_layer)

    @property
    def total(self) -> int:
        return self.frozen_llm + self.frozen_ecg + self.trainable


@dataclass(frozen=True)
class Setting:
    """One training setting to size.

    Attributes:
        zero_stage: 0 (DDP) or DeepSpeed ZeRO 1, 2, 3.
        offload_optimizer: ``none | cpu | nvme`` (stage >= 1).
        offload_params: ``none | cpu | nvme`` (stage 3).
        micro_batch: examples per worker per forward (``train.batch_size``).
        gradient_checkpointing: recompute decoder layers in backward.
        precision: ``train.precision``.
        llm_dtype: ``llm.dtype`` of the frozen base.
    """

    zero_stage: int
    offload_optimizer: Offload = "none"
    offload_params: Offload = "none"
    micro_batch: int = 1
    gradient_checkpointing: bool = False
    precision: Precision = "bf16"
    llm_dtype: str = "bfloat16"

    @property
    def mixed(self) -> bool:
        return self.precision != "fp32"

    @property
    def n_offloads(self) -> int:
        """Offloaded state kinds, NVMe counting double (slower than host RAM)."""
        cost = {"none": 0, "cpu": 1, "nvme": 2}
        return cost[self.offload_optimizer] + cost[self.offload_params]

    def label(self) -> str:
        """``ddp``, ``zero2``, ``zero3+opt:cpu+param:cpu``, with ``+ckpt``."""
        out = "ddp" if self.zero_stage == 0 else f"zero{self.zero_stage}"
        if self.offload_optimizer != "none":
            out += f"+opt:{self.offload_optimizer}"
        if self.offload_params != "none":
            out += f"+param:{self.offload_params}"
        return out + ("+ckpt" if self.gradient_checkpointing else "")


@dataclass(frozen=True)
class States:
    """Model-state bytes of one setting.

    Attributes:
        params: parameters on each device.
        grads: gradients on each device.
        optimizer: optimizer states (fp32 master, fp32 grads, Adam) on each device.
        host_per_node: host RAM per node (DeepSpeed-style, buffer factor included).
        nvme_per_node: bytes offloaded to NVMe per node.
    """

    params: int
    grads: int
    optimizer: int
    host_per_node: int
    nvme_per_node: int

    @property
    def device(self) -> int:
        return self.params + self.grads + self.optimizer


def model_states(sizes: ModelSizes, setting: Setting, gpus_per_node: int,
                 nodes: int = 1) -> States:
    """Model-state bytes per device and host bytes per node (formulas in the module doc)."""
    world = gpus_per_node * nodes
    t, stage = sizes.trainable, setting.zero_stage
    dtype_b = DTYPE_BYTES[setting.llm_dtype]
    load_one = sizes.frozen_llm * dtype_b + sizes.frozen_ecg * 4 + 4 * t
    if stage == 0:
        params = sizes.frozen_llm * dtype_b + sizes.frozen_ecg * 4 + 4 * t
        params += 2 * t if setting.mixed else 0  # autocast's cached 16-bit weights
        grads = 4 * t + (4 * t if world > 1 else 0)  # .grad + DDP bucket copy
        host = int(DS_BUFFER_FACTOR * gpus_per_node * load_one)
        return States(params, grads, 8 * t, host, 0)
    w = 2 if setting.mixed else 4
    frozen = (sizes.frozen_llm * (w if setting.mixed else dtype_b)
              + sizes.frozen_ecg * w)
    opt = 16 * t // world
    if stage == 3:
        partition = (frozen + w * t) // world
        params, grads = partition + 2 * w * sizes.largest_layer, 0
        load = gpus_per_node * 4 * sizes.largest_layer  # zero.Init: one layer at a time
    else:
        partition = 0
        params = frozen + w * t
        grads = w * t if stage == 1 else w * t // world
        load = gpus_per_node * load_one
    host_share, nvme_share = 0, 0
    if setting.offload_optimizer != "none":
        moved = 16 * t // nodes
        if setting.offload_optimizer == "cpu":
            host_share += moved
        else:
            nvme_share += moved
        opt = 0
        if stage == 2:
            grads = 0
    if stage == 3 and setting.offload_params != "none":
        moved = partition * world // nodes
        if setting.offload_params == "cpu":
            host_share += moved
        else:
            nvme_share += moved
        params -= partition
    host = int(DS_BUFFER_FACTOR * max(load, host_share))
    return States(params, grads, opt, host, nvme_share)


def deepspeed_compatible(params: int, largest_layer: int, stage: int, gpus_per_node: int,
                         nodes: int, offload_optimizer: bool,
                         offload_params: bool = False) -> tuple[int, int]:
    """``(host bytes per node, bytes per GPU)`` of full fine-tuning in bf16: the numbers
    DeepSpeed's ``estimate_zero2_model_states_mem_needs`` / ``..._zero3_...`` return
    (``zero_init=True`` for ZeRO-3)."""
    setting = Setting(zero_stage=stage, precision="bf16",
                      offload_optimizer="cpu" if offload_optimizer else "none",
                      offload_params="cpu" if offload_params else "none")
    states = model_states(ModelSizes.full_finetune(params, largest_layer), setting,
                          gpus_per_node, nodes)
    return states.host_per_node, states.device


@dataclass(frozen=True)
class Workload:
    """What the activation formula needs (see the module doc).

    Attributes:
        arch: LLM geometry.
        text_tokens: ``llm.max_length``.
        prefix_tokens: ECG prefix tokens per example (slots x tokens per ECG).
        kv_prefix: the prefix enters as keys/values only (``fusion.name: kv_prefix``).
        lora_modules: adapted decoder-layer linears.
        lora_r: LoRA rank.
        lora_dropout: LoRA dropout probability.
        attn: ``llm.attn_implementation``.
        ecg_bytes_fp32: the ECG side's saved activations per example at fp32.
    """

    arch: LLMArch
    text_tokens: int
    prefix_tokens: int
    kv_prefix: bool
    lora_modules: tuple[str, ...]
    lora_r: int
    lora_dropout: float
    attn: str = "sdpa"
    ecg_bytes_fp32: int = 0

    @property
    def seq(self) -> int:
        """Tokens through every decoder layer per example."""
        return self.text_tokens + (0 if self.kv_prefix else self.prefix_tokens)

    @property
    def kv_len(self) -> int:
        """Keys/values each query attends to."""
        return self.text_tokens + self.prefix_tokens


def layer_bytes_per_token(wl: Workload, e: int) -> float:
    """Bytes one decoder layer saves for backward per token (module doc, "Activations")."""
    arch = wl.arch
    h, i, a, d = arch.hidden_size, arch.intermediate_size, arch.n_heads, arch.head_dim
    shapes = arch.linear_shapes()
    mods = set(wl.lora_modules)
    kv_heads = arch.n_kv_heads if wl.attn == "flash_attention_2" else a
    out = 2 * (h + 1) * 4.0  # RMSNorm inputs + rsqrt, fp32
    if wl.attn == "eager":  # q, k, v, softmax output (fp32) and its cast for probs @ v
        out += e * (a * d + 2 * d * kv_heads) + a * wl.kv_len * (4 + (e if e != 4 else 0))
    else:  # sdpa/flash: q, k, v, output, log-sum-exp
        out += e * (2 * a * d + 2 * d * kv_heads) + 4 * a
    out += 3 * i * e  # gate, silu(gate), up
    out += wl.lora_r * e * len(mods)
    if wl.lora_dropout > 0:
        out += sum(shapes[m][0] * 2 * e for m in mods)  # dropout output + mask (dtype e)
    else:
        if mods & {"q_proj", "k_proj", "v_proj"}:
            out += h * e  # attention norm output, shared by q/k/v adapters
        if mods & {"gate_proj", "up_proj"}:
            out += h * e  # MLP norm output
        if "down_proj" in mods:
            out += i * e  # gate * up product
        if "o_proj" in mods and wl.attn == "eager":
            out += a * d * e  # sdpa keeps its output anyway; eager does not
    return out


def kv_prefix_bytes_per_example(wl: Workload, e: int) -> float:
    """kv_prefix: the prefix's keys and values in every layer (repeated to ``a`` heads)."""
    if not wl.kv_prefix:
        return 0.0
    arch = wl.arch
    return arch.n_layers * wl.prefix_tokens * 2 * arch.n_heads * arch.head_dim * e


def other_bytes_per_token(wl: Workload, e: int) -> float:
    """Outside the layers: final norm, logits + cross-entropy peak, padding mask, backward
    working set."""
    arch = wl.arch
    mask = wl.kv_len * e if wl.attn != "flash_attention_2" else 0
    return ((arch.hidden_size + 1) * 4 + arch.vocab_size * (e + 12) + mask
            + 8 * arch.hidden_size + 3 * arch.intermediate_size * e)


def activation_bytes(wl: Workload, setting: Setting) -> int:
    """Activation bytes per device for ``setting.micro_batch`` examples."""
    e = 2 if setting.mixed else 4
    s = wl.seq
    layer = layer_bytes_per_token(wl, e) * s + kv_prefix_bytes_per_example(wl, e) / max(
        1, wl.arch.n_layers)
    if setting.gradient_checkpointing:
        resid = 4 if (setting.zero_stage == 0 or not setting.mixed) else 2
        layers = wl.arch.n_layers * wl.arch.hidden_size * resid * s + layer
    else:
        layers = wl.arch.n_layers * layer
    per_example = layers + other_bytes_per_token(wl, e) * s + wl.ecg_bytes_fp32 * e / 4
    return int(setting.micro_batch * per_example)
