"""Each preset at tiny size: exactly the intended parameters train; forward, backward and
generate run; the ECG changes the logits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ecglm.config import ExperimentConfig, load_config
from ecglm.models.ecg_lm import build_ecg_lm

REPO = Path(__file__).resolve().parents[2]
LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _cfg(preset: str, models_cache: Path) -> ExperimentConfig:
    return load_config(REPO / "jobs" / "configs" / f"{preset}.yaml",
                       [f"llm.cache_dir={models_cache}"], tiny=True)


def _trainable(model: torch.nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def _lora_modules(names: set[str]) -> set[str]:
    return {part for n in names for part in LINEAR_NAMES if f".{part}.lora_" in n}


@pytest.fixture(scope="module")
def models(models_cache: Path) -> dict[str, torch.nn.Module]:
    return {p: build_ecg_lm(_cfg(p, models_cache))
            for p in ("qheart_ecgqa", "meit_reports", "gem_grounding")}


def test_qheart_trains_encoder_mapper_and_attention_lora(models) -> None:
    m = models["qheart_ecgqa"]
    names = _trainable(m)
    assert {n for n, _ in m.encoder.named_parameters()} <= {n[len("encoder."):] for n in names
                                                             if n.startswith("encoder.")}
    assert all(p.requires_grad for p in m.mapper.parameters())
    llm = {n for n in names if n.startswith("llm.")}
    assert llm and all("lora_" in n for n in llm)
    assert _lora_modules(llm) == {"q_proj", "k_proj", "v_proj", "o_proj"}


def test_meit_has_no_mapper_params_and_lora_on_all_linear(models) -> None:
    m = models["meit_reports"]
    names = _trainable(m)
    assert sum(p.numel() for p in m.mapper.parameters()) == 0  # head_tile: no new parameters
    assert all(p.requires_grad for p in m.encoder.parameters())  # random init, trained
    llm = {n for n in names if n.startswith("llm.")}
    assert all("lora_" in n for n in llm)
    assert _lora_modules(llm) == set(LINEAR_NAMES)


def test_gem_freezes_both_encoders_and_trains_projectors(models) -> None:
    m = models["gem_grounding"]
    names = _trainable(m)
    assert not any(n.startswith("encoder.") for n in names)  # time series + image frozen
    assert sum(p.numel() for p in m.encoder.parameters()) > 0
    assert all(p.requires_grad for p in m.mapper.parameters())
    llm = {n for n in names if n.startswith("llm.")}
    assert llm and all("lora_" in n for n in llm)


@pytest.mark.parametrize("preset", ["qheart_ecgqa", "meit_reports", "gem_grounding"])
def test_forward_backward_generate_and_ecg_dependence(models, preset: str) -> None:
    m = models[preset]
    cfg = m.cfg
    n = int(cfg.data.fs * cfg.data.seconds)
    gen = torch.Generator().manual_seed(0)
    signals = torch.randn(2, 1, 12, n, generator=gen) * 0.3
    ids = torch.randint(5, 100, (2, 7), generator=gen)
    mask = torch.ones_like(ids)
    labels = ids.clone()
    labels[:, :3] = -100
    m.train()
    out = m(signals, None, ids, mask, labels)
    out.loss.backward()
    grads = [p.grad for p in m.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and any(float(g.abs().sum()) > 0 for g in grads)
    m.zero_grad(set_to_none=True)
    m.eval()
    with torch.no_grad():
        a = m(signals, None, ids, mask).logits[:, -ids.shape[1]:]
        b = m(signals.flip(0), None, ids, mask).logits[:, -ids.shape[1]:]
    assert not torch.allclose(a[0], b[0])  # another ECG, same text -> other logits
    texts = m.generate(signals, None, ids, mask, max_new_tokens=3)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
