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
from torch import nn

from ecglm.config import ExperimentConfig

REFERENCE_CONFIGS: dict[str, dict[str, Any]] = {
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
    "openai/clip-vit-large-patch14-336": dict(
        model_type="clip_vision_model", hidden_size=1024, intermediate_size=4096,
        num_hidden_layers=24, num_attention_heads=16, patch_size=14, image_size=336),
}
"""Architecture hyper-parameters of the hub models the presets name (from their public
``config.json``); used only to count parameters on the meta device."""


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


def count(module: nn.Module | None, predicate: Any = None) -> tuple[int, int]:
    """``(total, trainable)`` parameters of ``module`` whose names pass ``predicate``."""
    if module is None:
        return 0, 0
    params = [(n, p) for n, p in module.named_parameters() if predicate is None or predicate(n)]
    return (sum(p.numel() for _, p in params),
            sum(p.numel() for _, p in params if p.requires_grad))


def _is_lora(name: str) -> bool:
    return "lora_" in name


def model_counts(model: Any) -> PartCounts:
    """Counts of a built :class:`~ecglm.models.ecg_lm.ECGLanguageModel`."""
    return PartCounts(count(model.encoder), count(model.mapper),
                      count(model.llm, lambda n: not _is_lora(n)), count(model.llm, _is_lora))


def _reference_config(path: str) -> Any:
    """HF config object of a :data:`REFERENCE_CONFIGS` entry."""
    from transformers import AutoConfig

    ref = dict(REFERENCE_CONFIGS[path])
    return AutoConfig.for_model(ref.pop("model_type"), **ref)


def _meta_llm(cfg: ExperimentConfig) -> nn.Module:
    """The preset's LLM on the meta device with its LoRA adapters (as ``load_llm`` adds them)."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from ecglm.models.llm import lora_config

    with torch.device("meta"):
        llm = AutoModelForCausalLM.from_config(_reference_config(str(cfg.llm.path)))
    return get_peft_model(llm, lora_config(cfg.lora))


def full_size_counts(cfg: ExperimentConfig) -> PartCounts:
    """Counts of a full-size preset without downloading anything (see the module docstring).

    Raises:
        KeyError: ``llm.path`` (or ``encoder.image.path``) is not in :data:`REFERENCE_CONFIGS`.
    """
    from ecglm.config.loader import apply_overrides
    from ecglm.models.encoders import build_encoder
    from ecglm.models.mappers import build_mapper

    from ecglm.models.dims import dims_from_config

    llm = _meta_llm(cfg)
    dims = dims_from_config(_reference_config(str(cfg.llm.path)))
    hidden, heads, head_dim = dims.hidden_size, dims.n_heads, dims.head_dim
    image_counts = (0, 0)
    enc_cfg = cfg.encoder
    if cfg.encoder.name in ("image", "dual"):
        from transformers import CLIPVisionConfig, CLIPVisionModel

        vref = {k: v for k, v in REFERENCE_CONFIGS[str(cfg.encoder.image.path)].items()
                if k != "model_type"}
        with torch.device("meta"):
            tower = CLIPVisionModel(CLIPVisionConfig(**vref))
        tower.requires_grad_(cfg.encoder.image.trainable)
        image_counts = count(tower)
        # build the ECG side with a tiny tower of the same width (weights counted above)
        enc_cfg = apply_overrides(cfg, {
            "encoder.image.source": "tiny", "encoder.image.tiny.hidden_size": vref["hidden_size"],
            "encoder.image.tiny.n_layers": 1, "encoder.image.tiny.n_heads": vref[
                "num_attention_heads"], "encoder.image.tiny.intermediate_size": 8,
            "encoder.image.tiny.patch_size": vref["patch_size"],
            "encoder.image.image_size": vref["image_size"]}).encoder
    encoder = build_encoder(enc_cfg, fs=float(cfg.data.fs), llm_head_dim=head_dim,
                            cache_dir=cfg.llm.cache_dir)
    mapper = build_mapper(cfg.mapper, encoder, hidden, llm_n_heads=heads)
    tower_attr = getattr(encoder, "image", None) or getattr(encoder, "tower", None)
    enc = count(encoder)
    if tower_attr is not None and cfg.encoder.name in ("image", "dual"):
        small = count(tower_attr)
        enc = (enc[0] - small[0] + image_counts[0], enc[1] - small[1] + image_counts[1])
    return PartCounts(enc, count(mapper), count(llm, lambda n: not _is_lora(n)),
                      count(llm, _is_lora))


def human(n: int) -> str:
    """``1234567 -> '1.23M'``."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)
