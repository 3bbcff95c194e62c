"""Gradient checkpointing of the LLM for both fusions: loss and every trainable gradient equal
those without checkpointing (fp32, dropout 0), and the ECG prefix still reaches the logits."""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import pytest
import torch
from torch import Tensor, nn

from ecglm.config.schema import (
    ConfigError,
    EncoderConfig,
    ExperimentConfig,
    FusionConfig,
    MapperConfig,
    TemporalConvConfig,
)
from ecglm.models import ECGLanguageModel, build_ecg_lm, collate

CfgFactory = Callable[..., ExperimentConfig]

PROMPTS = ["Question: does this ECG show st elevation? Answer: yes",
           "Which leads show t wave inversion? Answer: V1"]


def fusion_cfg(make_cfg: CfgFactory, fusion: str) -> ExperimentConfig:
    base = make_cfg(seed=3)
    lora = replace(base.lora, dropout=0.0, target_modules=["all-linear"])
    if fusion == "input_prefix":
        return replace(base, fusion=FusionConfig(name=fusion), lora=lora)
    # kv_prefix as in MEIT: temporal_conv encoder, one head-tiled vector per ECG
    encoder = EncoderConfig(name="temporal_conv", temporal_conv=TemporalConvConfig(
        channels=[8, 8], kernel=7, pool=2, proj_hidden=32))
    return replace(base, fusion=FusionConfig(name=fusion), lora=lora, encoder=encoder,
                   mapper=MapperConfig(name="head_tile", n_tokens=1))


def build(cfg: ExperimentConfig) -> ECGLanguageModel:
    """Model with every dropout at 0 and non-zero LoRA B (zero at init, as before training)."""
    model = build_ecg_lm(cfg)
    gen = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Dropout):
                module.p = 0.0
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(0.05 * torch.randn(param.shape, generator=gen))
    return model.train()


def batch(model: ECGLanguageModel) -> dict[str, Tensor]:
    tok = model.tokenizer
    rows = collate([{"input_ids": tok(t, add_special_tokens=False)["input_ids"]}
                    for t in PROMPTS], tok.pad_token_id)
    labels = rows["input_ids"].masked_fill(rows["attention_mask"] == 0, -100)
    return {**rows, "labels": labels}


def loss_and_grads(model: ECGLanguageModel, signals: Tensor,
                   text: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
    """Loss and trainable gradients of one step; the RNG is reseeded first because the ECG
    front end draws random numbers in training mode."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(123)
    out = model(signals, None, **text)
    out.loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()
             if p.requires_grad}
    return out.loss.detach(), grads


def checkpointed_layers(model: ECGLanguageModel) -> list[bool]:
    return [bool(layer.gradient_checkpointing)
            for layer in model.llm.get_base_model().model.layers]


@pytest.mark.parametrize("fusion", ["input_prefix", "kv_prefix"])
def test_checkpointing_gives_the_same_loss_and_gradients(
        make_cfg: CfgFactory, make_signals: Callable[..., Tensor], fusion: str) -> None:
    cfg = fusion_cfg(make_cfg, fusion)
    plain, ckpt = build(cfg), build(cfg)
    ckpt.enable_gradient_checkpointing()
    assert all(checkpointed_layers(ckpt)) and not any(checkpointed_layers(plain))
    signals = make_signals(2, 1, seed=5)
    text = batch(plain)

    loss_ref, grads_ref = loss_and_grads(plain, signals, text)
    loss_ck, grads_ck = loss_and_grads(ckpt, signals, text)

    torch.testing.assert_close(loss_ck, loss_ref, rtol=1e-6, atol=1e-6)
    assert grads_ck.keys() == grads_ref.keys()
    for name, ref in grads_ref.items():
        torch.testing.assert_close(grads_ck[name], ref, rtol=1e-5, atol=1e-7, msg=name)
    # the gradients reaching the ECG side (through the prefix) and LoRA are not zero
    ecg_side = [g for n, g in grads_ck.items() if n.split(".", 1)[0] in ("encoder", "mapper")]
    lora = [g for n, g in grads_ck.items() if n.startswith("llm.")]
    assert ecg_side and lora
    assert sum(float(g.norm()) for g in ecg_side) > 0.0
    assert sum(float(g.norm()) for g in lora) > 0.0


@pytest.mark.parametrize("fusion", ["input_prefix", "kv_prefix"])
def test_prefix_still_changes_the_logits_under_checkpointing(
        make_cfg: CfgFactory, make_signals: Callable[..., Tensor], fusion: str) -> None:
    model = build(fusion_cfg(make_cfg, fusion))
    model.enable_gradient_checkpointing()
    text = batch(model)
    with torch.no_grad():  # training mode, so the checkpointed path runs
        a = model.text_logits(model(make_signals(2, 1, seed=1), None, **text).logits,
                              text["input_ids"])
        b = model.text_logits(model(make_signals(2, 1, seed=2), None, **text).logits,
                              text["input_ids"])
    assert (a - b).abs().max() > 1e-4


def test_kv_prefix_checkpointed_training_then_generation(
        make_cfg: CfgFactory, make_signals: Callable[..., Tensor]) -> None:
    """Generation (eval mode, a writable cache) still works after enabling checkpointing and
    matches the same model without it."""
    cfg = fusion_cfg(make_cfg, "kv_prefix")
    plain, ckpt = build(cfg), build(cfg)
    ckpt.enable_gradient_checkpointing()
    signals = make_signals(2, 1, seed=4)
    text = batch(plain)
    ids, mask = text["input_ids"], text["attention_mask"]
    assert ckpt.generate_ids(signals, None, ids, mask, 4) == \
        plain.generate_ids(signals, None, ids, mask, 4)
    assert ckpt.training  # the previous mode is restored


def test_kv_prefix_still_refuses_checkpointing_enabled_on_the_llm_directly(
        make_cfg: CfgFactory, make_signals: Callable[..., Tensor]) -> None:
    model = build(fusion_cfg(make_cfg, "kv_prefix"))
    model.llm.get_base_model().activation_checkpointing_enable()
    with pytest.raises(ConfigError, match="enable_gradient_checkpointing"):
        model(make_signals(2, 1), None, **batch(model))
