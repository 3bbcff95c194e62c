"""The planner's model-state formulas against DeepSpeed's own estimators, and the per-layer
activation formula against the tensors autograd really saves."""

from __future__ import annotations

import pytest
import torch
from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from ecglm.config.schema import LoRAConfig
from ecglm.plan.arch import LLMArch, lora_modules
from ecglm.plan.front import saved_tensor_bytes
from ecglm.plan.memory import (
    ModelSizes,
    Setting,
    Workload,
    activation_bytes,
    deepspeed_compatible,
    layer_bytes_per_token,
    model_states,
)

# (params, largest layer, gpus per node, nodes): 1B, 8B, 70B-like and a small model
COMBOS = [(1_235_814_400, 262_668_288, 8, 1), (8_030_261_248, 525_336_576, 8, 1),
          (8_030_261_248, 525_336_576, 8, 4), (70_553_706_496, 1_050_673_152, 8, 2),
          (70_553_706_496, 1_050_673_152, 4, 16), (135_000_000, 28_000_000, 1, 1),
          (500_000_000, 50_000_000, 2, 1)]


def _close(ours: int, theirs: int) -> bool:
    return abs(ours - theirs) <= 0.01 * max(theirs, 1)


@pytest.mark.parametrize("params,largest,gpus,nodes", COMBOS)
@pytest.mark.parametrize("offload", [False, True])
def test_zero2_matches_deepspeed(params: int, largest: int, gpus: int, nodes: int,
                                 offload: bool) -> None:
    ds_cpu, ds_gpu = estimate_zero2_model_states_mem_needs(params, gpus, nodes,
                                                           cpu_offload=offload)
    cpu, gpu = deepspeed_compatible(params, largest, 2, gpus, nodes, offload)
    assert _close(gpu, ds_gpu), (gpu, ds_gpu)
    if nodes == 1:  # DeepSpeed's offload host figure counts every GPU of the cluster
        assert _close(cpu, ds_cpu), (cpu, ds_cpu)


@pytest.mark.parametrize("params,largest,gpus,nodes", COMBOS)
@pytest.mark.parametrize("offload,offload_params", [(False, False), (True, False),
                                                    (True, True)])
def test_zero3_matches_deepspeed(params: int, largest: int, gpus: int, nodes: int,
                                 offload: bool, offload_params: bool) -> None:
    ds_cpu, ds_gpu, _ = estimate_zero3_model_states_mem_needs(
        params, largest, gpus, nodes, cpu_offload=offload, cpu_offload_params=offload_params,
        zero_init=True)
    cpu, gpu = deepspeed_compatible(params, largest, 3, gpus, nodes, offload, offload_params)
    assert _close(gpu, ds_gpu), (gpu, ds_gpu)
    assert _close(cpu, ds_cpu), (cpu, ds_cpu)


def test_lora_pays_optimizer_state_only_for_trainable() -> None:
    """8B frozen in bf16 + 20M trainable: params ~2 bytes/param, the rest ~18 bytes/trainable."""
    sizes = ModelSizes(frozen_llm=8_000_000_000, frozen_ecg=0, trainable=20_000_000,
                       largest_layer=525_336_576)
    z2 = model_states(sizes, Setting(zero_stage=2), gpus_per_node=8)
    assert z2.params == 2 * 8_020_000_000
    assert z2.grads + z2.optimizer == (2 + 16) * 20_000_000 // 8
    z3 = model_states(sizes, Setting(zero_stage=3), gpus_per_node=8)
    assert z3.params == 2 * 8_020_000_000 // 8 + 4 * 525_336_576
    ddp = model_states(sizes, Setting(zero_stage=0), gpus_per_node=8)
    # fp32 weights 4 + autocast copy 2 + grad 4 + DDP bucket 4 + Adam 8 per trainable param
    assert ddp.device == 2 * 8_000_000_000 + 22 * 20_000_000
    fp32 = model_states(sizes, Setting(zero_stage=0, precision="fp32", llm_dtype="float32"),
                        gpus_per_node=1)
    assert fp32.device == 4 * 8_000_000_000 + 16 * 20_000_000  # one worker: no DDP bucket
    off = model_states(sizes, Setting(zero_stage=3, offload_optimizer="nvme",
                                      offload_params="cpu"), gpus_per_node=8)
    assert off.optimizer == 0 and off.nvme_per_node == 16 * 20_000_000
    assert off.params == 4 * 525_336_576


def _tiny_llama(attn: str, layers: int, targets: list[str] | str, dropout: float,
                dtype: torch.dtype) -> torch.nn.Module:
    cfg = LlamaConfig(hidden_size=96, intermediate_size=200, num_attention_heads=6,
                      num_key_value_heads=2, head_dim=16, num_hidden_layers=layers,
                      vocab_size=300, attn_implementation=attn)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(dtype)
    model.requires_grad_(False)
    return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout,
                                            target_modules=targets))


def _saved_per_layer(attn: str, targets: list[str] | str, dropout: float,
                     batch: int, seq: int) -> float:
    totals = {}
    for layers in (1, 3):
        model = _tiny_llama(attn, layers, targets, dropout, torch.float32).train()
        ids = torch.randint(0, 300, (batch, seq), generator=torch.Generator().manual_seed(1))
        mask = torch.ones(batch, seq, dtype=torch.long)
        mask[0, :5] = 0  # padding: sdpa gets a mask (k/v repeated to every head)
        embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)
        totals[layers] = saved_tensor_bytes(
            lambda: model(inputs_embeds=embeds, attention_mask=mask, labels=ids), model)
    return (totals[3] - totals[1]) / 2


ARCH = LLMArch(vocab_size=300, hidden_size=96, intermediate_size=200, n_layers=1, n_heads=6,
               n_kv_heads=2, head_dim=16, tie_word_embeddings=False)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("targets", [["q_proj", "v_proj"], ["all-linear"],
                                     ["q_proj", "k_proj", "v_proj", "o_proj"]])
@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_layer_activation_formula_matches_autograd(attn: str, targets: list[str],
                                                   dropout: float) -> None:
    batch, seq = 2, 40
    peft_targets = "all-linear" if targets == ["all-linear"] else targets
    measured = _saved_per_layer(attn, peft_targets, dropout, batch, seq)
    wl = Workload(arch=ARCH, text_tokens=seq, prefix_tokens=0, kv_prefix=False,
                  lora_modules=lora_modules(LoRAConfig(r=4, target_modules=targets)),
                  lora_r=4, lora_dropout=dropout, attn=attn)
    predicted = layer_bytes_per_token(wl, 4) * batch * seq
    assert predicted == pytest.approx(measured, rel=0.05)


def test_checkpointing_shrinks_activations_and_scales_with_batch() -> None:
    wl = Workload(arch=LLMArch(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                               n_layers=32, n_heads=32, n_kv_heads=8, head_dim=128,
                               tie_word_embeddings=False),
                  text_tokens=256, prefix_tokens=12, kv_prefix=False,
                  lora_modules=("q_proj", "v_proj"), lora_r=8, lora_dropout=0.0)
    full = activation_bytes(wl, Setting(zero_stage=2, micro_batch=4))
    ckpt = activation_bytes(wl, Setting(zero_stage=2, micro_batch=4, gradient_checkpointing=True))
    assert ckpt < full / 2  # the logits (128k vocabulary) are not checkpointed
    assert activation_bytes(wl, Setting(zero_stage=2, micro_batch=8)) == pytest.approx(
        2 * full, rel=1e-6)
