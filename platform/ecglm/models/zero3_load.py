"""ZeRO-3 partitioned loading of a Hugging Face causal LM: no rank ever holds the full model.

Two steps, both inside the Ray Train worker (after ``torch.distributed`` is up):

1. **Build partitioned** (:func:`build_partitioned`): ``from_config`` inside
   ``deepspeed.zero.Init`` with weight initialisation off (what transformers itself does under
   ``HfDeepSpeedConfig``, minus its random init of every gathered module). Every parameter is
   created and at once partitioned: each rank keeps ``numel / world_size`` elements
   (``param.ds_tensor``).
2. **Load shard by shard** (:func:`load_shards_partitioned`): for each safetensors file of the
   folder and each tensor in it, every rank gathers that one parameter
   (``deepspeed.zero.GatheredParameters(..., modifier_rank=0)``), rank 0 copies the tensor
   from the memory-mapped file (mapped for that tensor only), and DeepSpeed broadcasts and
   re-partitions it on exit. Peak memory per rank is its partition plus transient buffers of
   the order of one full parameter.

Why not ``from_pretrained`` under ``HfDeepSpeedConfig``: transformers 5.23
(``_load_pretrained_model``) has rank 0 read *every* shard into one CPU state dict before
copying, so rank 0 would hold the whole checkpoint (read in its source).

The parameter dtype under ZeRO-3 is DeepSpeed's (``bf16``/``fp16`` section of the config, else
float32): ``zero.Init`` casts every floating parameter it creates to it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn

from ecglm.config.schema import ConfigError

SAFE_INDEX = "model.safetensors.index.json"
SAFE_SINGLE = "model.safetensors"
HF_DS_CONFIG_ATTR = "_ecglm_hf_deepspeed_config"
"""Attribute of the loaded model holding its :class:`HfDeepSpeedConfig`: transformers reads
ZeRO-3 state through a weak reference to it (``is_deepspeed_zero3_enabled``, used e.g. by
``generate`` to keep ranks in step), so it must live as long as the model."""


class PartitionedLoadError(RuntimeError):
    """The checkpoint does not match the partitioned model (names the tensors)."""


def zero_stage(ds_config: dict[str, Any] | None) -> int:
    """ZeRO stage of a DeepSpeed config dict (0 when absent or None)."""
    if not ds_config:
        return 0
    return int((ds_config.get("zero_optimization") or {}).get("stage", 0))


def deepspeed_param_dtype(ds_config: dict[str, Any]) -> torch.dtype:
    """The dtype ``zero.Init`` gives parameters for ``ds_config``: bfloat16 when its ``bf16``
    section is enabled, float16 for ``fp16``, else float32.

    Raises:
        ConfigError: both enabled.
    """
    bf16 = bool((ds_config.get("bf16") or ds_config.get("bfloat16") or {}).get("enabled"))
    fp16 = bool((ds_config.get("fp16") or {}).get("enabled"))
    if bf16 and fp16:
        raise ConfigError("train.precision: the DeepSpeed config enables both bf16 and fp16")
    return torch.bfloat16 if bf16 else torch.float16 if fp16 else torch.float32


def ensure_distributed() -> None:
    """Initialise ``deepspeed.comm`` on top of the running ``torch.distributed`` group (gloo on
    CPU, nccl on GPU, as created by Ray Train); ``zero.Init`` needs it. Idempotent: a later
    ``deepspeed.init_distributed`` (the DeepSpeed strategy) is then a no-op.

    Raises:
        ConfigError: ``torch.distributed`` is not initialised (ZeRO-3 loading runs inside the
            training workers).
    """
    import deepspeed  # deferred: ~3 s import, and DS_ACCELERATOR must be set first

    if deepspeed.comm.is_initialized():
        return
    if not torch.distributed.is_initialized():
        raise ConfigError("train.zero_stage=3: partitioned loading needs torch.distributed "
                          "initialised (it runs inside the Ray Train workers)")
    deepspeed.init_distributed(dist_backend=torch.distributed.get_backend())


def checkpoint_files(folder: Path) -> list[Path]:
    """The safetensors files of an HF model folder (sharded via its index, or single).

    Raises:
        PartitionedLoadError: no safetensors weights in ``folder``.
    """
    index = folder / SAFE_INDEX
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return [folder / name for name in sorted(set(weight_map.values()))]
    if (folder / SAFE_SINGLE).is_file():
        return [folder / SAFE_SINGLE]
    raise PartitionedLoadError(f"llm folder {folder}: ZeRO-3 loading needs safetensors weights "
                               f"({SAFE_INDEX} or {SAFE_SINGLE})")


def build_partitioned(config: Any, ds_config: dict[str, Any],
                      attn_implementation: str) -> nn.Module:
    """An uninitialised causal LM for ``config`` whose parameters are ZeRO-3 partitioned.

    Built by ``from_config`` inside ``deepspeed.zero.Init`` (parameters in
    :func:`deepspeed_param_dtype`), with transformers' ``no_init_weights`` (no random init:
    every weight is loaded afterwards) and ``prevent_arange_dtype_change`` (RoPE tables keep
    their float32 arange, as transformers does under ZeRO-3). The :class:`HfDeepSpeedConfig`
    is created after construction (with it alive, ``from_config`` would also run
    ``initialize_weights_zero3``, gathering every module to random-init it on rank 0) and stored
    on the returned model (:data:`HF_DS_CONFIG_ATTR`) so transformers sees ZeRO-3 for the
    model's lifetime.
    """
    import deepspeed  # deferred (see ensure_distributed)
    from transformers import AutoModelForCausalLM
    from transformers.initialization import no_init_weights
    from transformers.integrations import HfDeepSpeedConfig
    from transformers.integrations.deepspeed import prevent_arange_dtype_change

    ensure_distributed()
    dtype = deepspeed_param_dtype(ds_config)
    # no explicit dtype= for zero.Init: DeepSpeed 0.19.8 ignores it on accelerators without
    # fp16 (CPU: bfloat16 whatever is passed); from the config it is deepspeed_param_dtype
    with no_init_weights(), prevent_arange_dtype_change(), \
            deepspeed.zero.Init(config_dict_or_path=ds_config):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype,
                                                 attn_implementation=attn_implementation)
    model.__dict__[HF_DS_CONFIG_ATTR] = HfDeepSpeedConfig(ds_config)
    return model


def _copy_from_file(param: nn.Parameter, file: Path, name: str) -> None:
    """``param.data <- file[name]`` (cast to the parameter dtype). The file is mapped for this
    one tensor only, so its pages leave the process's RSS right after (mapping a whole shard
    for the loop would keep up to ``max_shard_size`` of file pages resident on rank 0)."""
    with safe_open(str(file), framework="pt") as single, torch.no_grad():
        param.data.copy_(single.get_tensor(name))


def load_shards_partitioned(model: nn.Module, files: list[Path]) -> None:
    """Copy the checkpoint tensors of ``files`` into the partitioned ``model``, one parameter
    at a time (collective: every rank calls it with the same files).

    Shapes are checked on every rank from the safetensors headers before any collective, so a
    mismatch raises everywhere instead of hanging. Tied parameters (an ``lm_head`` sharing the
    embedding) load once. Buffers are not read (they are computed at construction).

    Raises:
        PartitionedLoadError: a checkpoint tensor with no parameter, a shape mismatch, or a
            parameter no file provides.
    """
    import deepspeed  # deferred (see ensure_distributed)

    rank = deepspeed.comm.get_rank()
    params = dict(model.named_parameters(remove_duplicate=False))
    buffers = {name for name, _ in model.named_buffers(remove_duplicate=False)}
    loaded: set[int] = set()
    for file in files:
        with safe_open(str(file), framework="pt") as shard:
            names = list(shard.keys())
            unknown = [n for n in names if n not in params and n not in buffers]
            if unknown:
                raise PartitionedLoadError(f"{file.name}: tensors with no model parameter: "
                                           f"{unknown[:5]}")
            for name in names:
                if name in buffers:
                    continue
                param = params[name]
                if id(param) in loaded:  # tied alias already loaded
                    continue
                shape = tuple(shard.get_slice(name).get_shape())
                expected = tuple(getattr(param, "ds_shape", param.shape))
                if shape != expected:
                    raise PartitionedLoadError(f"{file.name}: {name} has shape {shape}, the "
                                               f"model expects {expected}")
                with deepspeed.zero.GatheredParameters([param], modifier_rank=0):
                    if rank == 0:
                        _copy_from_file(param, file, name)
                loaded.add(id(param))
    missing = sorted({name for name, p in params.items() if id(p) not in loaded})
    if missing:
        raise PartitionedLoadError(f"parameters missing from the checkpoint: {missing[:5]}"
                                   f"{' ...' if len(missing) > 5 else ''}")
