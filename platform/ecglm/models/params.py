"""Parameter counts per part (ECG encoder, mapper, LLM, LoRA) of a config, at any size.

Tiny configs are built for real (:func:`ecglm.models.ecg_lm.build_ecg_lm`). Full-size presets
name hub models that are not available offline, so their LLM and vision tower are instantiated
on PyTorch's ``meta`` device from the architecture hyper-parameters of the public
``config.json`` files (:data:`REFERENCE_CONFIGS`), LoRA is attached with peft on that meta
model, and the ECG encoder and mapper are built for real on the CPU with the LLM's widths.
Nothing is downloaded and no weights are allocated for the meta parts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from peft import get_peft_model
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig

from ecglm.config import ExperimentConfig
from ecglm.models.dims import dims_from_config
from ecglm.models.encoders import encoder_spec
from ecglm.models.encoders.sizing import VISION_REFERENCE_CONFIGS, count
from ecglm.models.llm import lora_config
from ecglm.models.mappers import build_mapper

__all__ = ["LLM_REFERENCE_CONFIGS", "REFERENCE_CONFIGS", "PartCounts", "count",
           "full_size_counts", "human", "model_counts"]


LLM_REFERENCE_CONFIGS: dict[str, dict[str, Any]] = {
    "meta-llama/Llama-3.2-1B-Instruct": dict(
        model_type="llama", hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
        num_attention_heads=32, num_key_value_heads=8, head_dim=64, vocab_size=128256,
        tie_word_embeddings=True),
    "meta-llama/Meta-Llama-3-8B-Instruct": dict(
        model_type="llama", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=128256,
        tie_word_embeddings=False),
    "lmsys/vicuna-7b-v1.5": dict(
        model_type="llama", hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=32, head_dim=128, vocab_size=32000,
        tie_word_embeddings=False),
}
"""Architecture hyper-parameters of the LLMs the presets name (from their public
``config.json``); used only to count parameters on the meta device."""

REFERENCE_CONFIGS: dict[str, dict[str, Any]] = {**LLM_REFERENCE_CONFIGS,
                                                **VISION_REFERENCE_CONFIGS}
"""Every hub model the presets name: LLMs and vision towers
(:data:`~ecglm.models.encoders.sizing.VISION_REFERENCE_CONFIGS`)."""


@dataclass
class PartCounts:
    """Parameters per part: ``total`` and ``trainable`` (requires_grad) counts."""

    encoder: tuple[int, int]
    mapper: tuple[int, int]
    llm: tuple[int, int]
    """The LLM without LoRA adapters."""
    lora: tuple[int, int]

    @property
    def total(self) -> int:
        return self.encoder[0] + self.mapper[0] + self.llm[0] + self.lora[0]

    @property
    def trainable(self) -> int:
        return self.encoder[1] + self.mapper[1] + self.llm[1] + self.lora[1]


def _is_lora(name: str) -> bool:
    return "lora_" in name


def model_counts(model: Any) -> PartCounts:
    """Counts of a built :class:`~ecglm.models.ecg_lm.ECGLanguageModel`."""
    return PartCounts(count(model.encoder), count(model.mapper),
                      count(model.llm, lambda n: not _is_lora(n)), count(model.llm, _is_lora))


def _reference_config(path: str) -> PretrainedConfig:
    """HF config object of a :data:`REFERENCE_CONFIGS` entry."""
    ref = dict(REFERENCE_CONFIGS[path])
    return AutoConfig.for_model(ref.pop("model_type"), **ref)


def _meta_llm(cfg: ExperimentConfig) -> nn.Module:
    """The preset's LLM on the meta device with its LoRA adapters (as ``load_llm`` adds them)."""
    with torch.device("meta"):
        llm = AutoModelForCausalLM.from_config(_reference_config(str(cfg.llm.path)))
    return get_peft_model(llm, lora_config(cfg.lora))


def full_size_counts(cfg: ExperimentConfig) -> PartCounts:
    """Counts of a full-size preset without downloading anything (see the module docstring).
    The encoder is counted by its registration (:meth:`EncoderSpec.count_full_size`).

    Raises:
        KeyError: ``llm.path`` (or ``encoder.image.path``) is not in :data:`REFERENCE_CONFIGS`.
    """
    llm = _meta_llm(cfg)
    dims = dims_from_config(_reference_config(str(cfg.llm.path)))
    encoder, enc = encoder_spec(cfg.encoder.name).count_full_size(
        cfg.encoder, float(cfg.data.fs), dims.head_dim, cfg.llm.cache_dir)
    mapper = build_mapper(cfg.mapper, encoder, dims.hidden_size, llm_n_heads=dims.n_heads)
    return PartCounts(enc, count(mapper), count(llm, lambda n: not _is_lora(n)),
                      count(llm, _is_lora))


def human(n: int) -> str:
    """``1234567 -> '1.23M'``."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)
