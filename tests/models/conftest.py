"""Fixtures for the model-layer tests: a tiny encoder/mapper config and the tiny random LLM."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
import torch

from ecglm.config.schema import (
    EncoderConfig,
    ExperimentConfig,
    LLMConfig,
    LoRAConfig,
    MapperConfig,
)
from ecglm.models import ECGLanguageModel, build_ecg_lm

N_SAMPLES = 500
"""Samples per lead in test ECGs (1 s at 500 Hz keeps the tests fast)."""


@pytest.fixture(scope="session")
def models_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One LLM cache folder per test session (the tiny LLM is written once)."""
    return tmp_path_factory.mktemp("models-cache")


@pytest.fixture(scope="session")
def make_cfg(models_cache: Path) -> Callable[..., ExperimentConfig]:
    """Factory for a small config: tiny encoder, 1-layer mapper, tiny Llama with LoRA."""

    def _make(seed: int = 0, encoder_trainable: bool = True, n_tokens: int = 4,
              lead_skip: bool = True, lead_mask_prob: float = 0.0) -> ExperimentConfig:
        return ExperimentConfig(
            seed=seed,
            encoder=EncoderConfig(d_model=32, n_layers=2, n_heads=2, conv_channels=[16, 16],
                                  conv_kernels=[10, 5], conv_strides=[5, 5],
                                  trainable=encoder_trainable, lead_mask_prob=lead_mask_prob),
            mapper=MapperConfig(n_tokens=n_tokens, n_layers=1, n_heads=2, lead_skip=lead_skip),
            llm=LLMConfig(source="tiny", cache_dir=str(models_cache), max_length=64,
                          max_new_tokens=6),
            lora=LoRAConfig(r=4, alpha=8),
        )

    return _make


@pytest.fixture
def tiny_cfg(make_cfg: Callable[..., ExperimentConfig]) -> ExperimentConfig:
    return make_cfg()


@pytest.fixture
def tiny_model(tiny_cfg: ExperimentConfig) -> ECGLanguageModel:
    """Tiny ECG-LM in eval mode (no dropout)."""
    return build_ecg_lm(tiny_cfg).eval()


@pytest.fixture
def make_signals() -> Callable[..., torch.Tensor]:
    """``(B, E, 12, N_SAMPLES)`` random ECG-like signals in mV from a seeded generator."""

    def _make(batch: int, n_ecg: int, seed: int = 0, n_samples: int = N_SAMPLES) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        t = torch.arange(n_samples, dtype=torch.float32) / 500.0
        base = torch.sin(2 * torch.pi * 1.2 * t)  # ~72 bpm fundamental
        noise = 0.2 * torch.randn(batch, n_ecg, 12, n_samples, generator=gen)
        gain = 0.5 + torch.rand(batch, n_ecg, 12, 1, generator=gen)
        return gain * base + noise

    return _make
