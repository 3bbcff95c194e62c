"""ZeRO-3 partitioned loading (``build_ecg_lm(cfg, ds_config=...)``) on 2 gloo ranks.

A small Llama (~3.6M parameters, 4 layers, two safetensors shards) is written with
``save_pretrained``; two processes started with ``torch.multiprocessing`` (CPU, gloo,
``DS_ACCELERATOR=cpu``) each build the ECG-LM under a ZeRO-3 config. Each rank must hold about
half of the LLM's parameter elements, the gathered weights must equal the saved ones, the LoRA
adapters stay float32, and the seeded ECG front end is identical on both ranks.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM

from ecglm.config.schema import ConfigError, ExperimentConfig, LLMConfig
from ecglm.models import load_tokenizer, prepare_llm_dir
from ecglm.models.llm import base_dtype
from ecglm.models.zero3_load import SAFE_INDEX
from tests.helpers import free_port

WORLD = 2
CfgFactory = Callable[..., ExperimentConfig]


def zero3_config() -> dict[str, Any]:
    """ZeRO-3, fp32 (CPU); persistence threshold 0 so even small tensors are partitioned."""
    return {"train_micro_batch_size_per_gpu": 1,
            "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0},
            "bf16": {"enabled": False}, "fp16": {"enabled": False}}


@pytest.fixture(scope="module")
def small_llama(tmp_path_factory: pytest.TempPathFactory, models_cache: Path) -> Path:
    """A 4-layer Llama (hidden 256) with the tiny tokenizer, saved in 2+ safetensors shards."""
    tiny_dir = prepare_llm_dir(LLMConfig(source="tiny", cache_dir=str(models_cache)))
    out = tmp_path_factory.mktemp("small-llama")
    for item in tiny_dir.iterdir():
        if "token" in item.name:
            shutil.copy(item, out / item.name)
    tok = load_tokenizer(out)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=256, intermediate_size=512,
                         num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
                         tie_word_embeddings=False, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(7)
    LlamaForCausalLM(config).save_pretrained(str(out), max_shard_size="8MB")
    assert (out / SAFE_INDEX).is_file()  # sharded: the shard-by-shard path is exercised
    return out


def _rank_main(rank: int, port: int, cfg_dict: dict[str, Any], llm_dir: str,
               out_dir: str) -> None:
    """One gloo rank: build under ZeRO-3, write what it holds to ``out_dir/rank<r>.json``."""
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                       "RANK": str(rank), "WORLD_SIZE": str(WORLD), "LOCAL_RANK": str(rank),
                       "DS_ACCELERATOR": "cpu"})
    torch.distributed.init_process_group("gloo", rank=rank, world_size=WORLD)
    import deepspeed

    from ecglm.config.overrides import from_dict
    from ecglm.models import build_ecg_lm

    deepspeed.init_distributed(dist_backend="gloo")
    model = build_ecg_lm(from_dict(cfg_dict), ds_config=zero3_config())
    base = model.llm.get_base_model()
    local = full = 0
    for param in base.parameters():
        if param.requires_grad:
            continue
        full += int(param.ds_numel)
        local += int(param.ds_tensor.numel())
    saved: dict[str, torch.Tensor] = {}
    index = json.loads((Path(llm_dir) / SAFE_INDEX).read_text())
    for shard in sorted(set(index["weight_map"].values())):
        saved.update(load_file(str(Path(llm_dir) / shard)))
    # LoRA wraps the targeted linears: their weight is at <name>.base_layer.weight
    params = {n.replace(".base_layer", ""): p for n, p in base.named_parameters()
              if not p.requires_grad}
    mismatched = []
    with deepspeed.zero.GatheredParameters(list(params.values()), modifier_rank=None):
        for name, tensor in saved.items():
            if name not in params or not torch.equal(params[name].detach(), tensor):
                mismatched.append(name)
    lora = {n: p for n, p in model.named_parameters() if "lora_" in n}
    front = torch.cat([p.detach().flatten() for n, p in model.named_parameters()
                       if n.split(".", 1)[0] in ("encoder", "mapper")])
    result = {"local": local, "full": full, "n_saved": len(saved), "mismatched": mismatched,
              "lora_dtypes": sorted({str(p.dtype) for p in lora.values()}),
              "lora_partitioned": any(hasattr(p, "ds_id") for p in lora.values()),
              "base_dtypes": sorted({str(p.dtype) for p in params.values()}),
              "front_sum": float(front.double().sum()), "front_n": int(front.numel())}
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_zero3_build_partitions_the_llm_across_two_ranks(
        make_cfg: CfgFactory, small_llama: Path, tmp_path: Path) -> None:
    from ecglm.config.overrides import to_dict

    base = make_cfg(seed=5)
    cfg = replace(base, llm=replace(base.llm, source="path", path=str(small_llama)))
    n_params = sum(t.numel() for shard in small_llama.glob("*.safetensors")
                   for t in load_file(str(shard)).values())
    mp.spawn(_rank_main, args=(free_port(), to_dict(cfg), str(small_llama),
                               str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]
    for res in ranks:
        assert res["full"] == n_params
        # each rank keeps ~1/2 of every parameter (partitions are padded to a multiple of 2)
        assert abs(res["local"] / res["full"] - 1 / WORLD) < 0.01, res
        assert res["mismatched"] == [] and res["n_saved"] > 0
        assert res["base_dtypes"] == ["torch.float32"]
        assert res["lora_dtypes"] == ["torch.float32"] and not res["lora_partitioned"]
    assert ranks[0]["front_n"] == ranks[1]["front_n"] > 0
    assert ranks[0]["front_sum"] == ranks[1]["front_sum"]  # seeded front end, same everywhere


def test_zero3_dtype_rule(tiny_cfg: ExperimentConfig) -> None:
    """Under ZeRO-3 the base takes DeepSpeed's dtype; an llm.dtype it cannot honour fails."""
    ds = zero3_config()
    bf16 = {**ds, "bf16": {"enabled": True}}
    assert base_dtype(tiny_cfg.llm, None) == torch.float32
    assert base_dtype(tiny_cfg.llm, bf16) == torch.bfloat16
    llm_bf16 = replace(tiny_cfg.llm, dtype="bfloat16")
    assert base_dtype(llm_bf16, {**ds, "zero_optimization": {"stage": 2}}) == torch.bfloat16
    assert base_dtype(llm_bf16, bf16) == torch.bfloat16
    with pytest.raises(ConfigError, match="llm.dtype"):
        base_dtype(llm_bf16, ds)
