"""``load_llm`` honours ``llm.dtype`` (frozen base) and ``llm.attn_implementation``; LoRA and
the ECG side stay float32 and a bf16 base trains (forward + backward) for both fusions."""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import pytest
import torch

from ecglm.config.schema import ConfigError, ExperimentConfig
from ecglm.models import build_ecg_lm, collate, load_llm
from ecglm.models.llm import check_attn_implementation
from tests.models.test_gradient_checkpointing import fusion_cfg

CfgFactory = Callable[..., ExperimentConfig]


def test_default_load_is_float32_sdpa(tiny_cfg: ExperimentConfig) -> None:
    model, _ = load_llm(tiny_cfg.llm, tiny_cfg.lora, seed=0)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert model.get_base_model().config._attn_implementation == "sdpa"


@pytest.mark.parametrize("dtype,torch_dtype", [("bfloat16", torch.bfloat16),
                                                ("float16", torch.float16)])
def test_frozen_base_in_llm_dtype_lora_in_float32(tiny_cfg: ExperimentConfig, dtype: str,
                                                  torch_dtype: torch.dtype) -> None:
    model, _ = load_llm(replace(tiny_cfg.llm, dtype=dtype), tiny_cfg.lora, seed=0)
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    trainable = {p.dtype for p in model.parameters() if p.requires_grad}
    assert frozen == {torch_dtype}
    assert trainable == {torch.float32}


def test_eager_attention_is_passed_and_agrees_with_sdpa(tiny_cfg: ExperimentConfig) -> None:
    eager, tok = load_llm(replace(tiny_cfg.llm, attn_implementation="eager"), tiny_cfg.lora, 0)
    sdpa, _ = load_llm(tiny_cfg.llm, tiny_cfg.lora, 0)
    assert eager.get_base_model().config._attn_implementation == "eager"
    ids = torch.tensor([tok("Does this ECG show st elevation?")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(eager(input_ids=ids).logits, sdpa(input_ids=ids).logits,
                                   rtol=1e-4, atol=1e-5)


def test_flash_attention_2_without_cuda_is_a_config_error(tiny_cfg: ExperimentConfig) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA present: flash_attention_2 may be valid here")
    llm = replace(tiny_cfg.llm, attn_implementation="flash_attention_2", dtype="bfloat16")
    with pytest.raises(ConfigError, match="llm.attn_implementation.*CUDA"):
        load_llm(llm, tiny_cfg.lora, seed=0)
    check_attn_implementation(tiny_cfg.llm, torch.float32)  # sdpa: always fine


@pytest.mark.parametrize("fusion", ["input_prefix", "kv_prefix"])
def test_bf16_base_with_fp32_lora_and_prefix_trains(
        make_cfg: CfgFactory, make_signals: Callable[..., torch.Tensor], fusion: str) -> None:
    base = fusion_cfg(make_cfg, fusion)
    cfg = replace(base, llm=replace(base.llm, dtype="bfloat16"))
    model = build_ecg_lm(cfg).train()
    assert model.embed_dtype == torch.bfloat16
    ecg_side = [p for n, p in model.named_parameters()
                if n.split(".", 1)[0] in ("encoder", "mapper")]
    assert ecg_side and {p.dtype for p in ecg_side} == {torch.float32}
    tok = model.tokenizer
    text = collate([{"input_ids": tok(t, add_special_tokens=False)["input_ids"]}
                    for t in ("Answer: yes", "Answer: no")], tok.pad_token_id)
    labels = text["input_ids"].masked_fill(text["attention_mask"] == 0, -100)
    out = model(make_signals(2, 1), None, **text, labels=labels)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and g.dtype == torch.float32 for g in grads)
    assert sum(float(g.norm()) for g in grads if g is not None) > 0.0
