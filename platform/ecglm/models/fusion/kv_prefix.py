"""``kv_prefix`` fusion (MEIT): the prefix becomes per-layer keys/values the text attends to.

The LM runs on the ``S`` text tokens only, continuing a cache that holds the ``P`` prefix
slots (:func:`~ecglm.models.fusion.kv_cache.build_kv_prefix_cache`); logits and labels cover
the text.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from transformers import DynamicCache
from transformers.generation import BaseStreamer
from transformers.modeling_outputs import CausalLMOutputWithPast

from ecglm.config.schema import ConfigError
from ecglm.models.encoders import ModelInputError
from ecglm.models.fusion.base import Fusion, check_streaming, position_ids_from_mask
from ecglm.models.fusion.kv_cache import (
    KVPrefixModules,
    allow_checkpointing_with_prefix_cache,
    build_kv_prefix_cache,
    build_prefix_only_cache,
    greedy_with_cache,
    kv_prefix_modules,
)


def _refuse_dropping_checkpointing(modules: KVPrefixModules, training: bool) -> None:
    """Raise :class:`ConfigError` when HF gradient checkpointing would drop the ECG cache."""
    if training and modules.checkpointing_drops_cache:
        raise ConfigError("fusion.name=kv_prefix: Hugging Face gradient checkpointing drops "
                          "past_key_values (the ECG key/value prefix) in training; enable it "
                          "through ECGLanguageModel.enable_gradient_checkpointing() "
                          "(train.gradient_checkpointing), not on the LLM directly")


class KVPrefixFusion(Fusion):
    """Prefix vectors as a key/value cache ahead of the text (no text position)."""

    name = "kv_prefix"

    def check_llm(self, llm: nn.Module) -> None:
        kv_prefix_modules(llm)  # raises ConfigError for unsupported families

    def prepare_checkpointing(self, llm: nn.Module) -> None:
        """Training forwards pass a read-only :class:`PrefixOnlyCache`, so the checkpointed
        decoder layers may keep it (:func:`allow_checkpointing_with_prefix_cache`)."""
        allow_checkpointing_with_prefix_cache(llm)

    def check_prefix_at(self, prefix_at: Tensor | None, input_ids: Tensor) -> Tensor | None:
        if prefix_at is not None:
            raise ModelInputError("prefix_at: must be None with fusion.name=kv_prefix (the "
                                  "ECG is a key/value prefix, not a text position)")
        return None

    def labels(self, labels: Tensor, n_prefix: int, prefix_at: Tensor | None) -> Tensor:
        return labels

    @staticmethod
    def cache(llm: nn.Module, prefix: Tensor, prefix_mask: Tensor,
              training: bool) -> DynamicCache:
        """Per-layer keys/values of the prefix at positions counting attended prefix slots
        (``0..P-1`` when all are real), filled up front (for generation).

        Raises:
            ConfigError: training with HF gradient checkpointing, which drops the cache.
        """
        modules = kv_prefix_modules(llm)
        _refuse_dropping_checkpointing(modules, training)
        return build_kv_prefix_cache(modules, prefix, position_ids_from_mask(prefix_mask))

    def forward(self, llm: nn.Module, prefix: Tensor, prefix_mask: Tensor, input_ids: Tensor,
                attention_mask: Tensor, labels: Tensor | None, prefix_at: Tensor | None,
                training: bool) -> CausalLMOutputWithPast:
        """The LM over the text with a read-only prefix cache (:class:`PrefixOnlyCache`): each
        layer computes its prefix keys/values in its own attention call, so gradient
        checkpointing recomputes them (see :func:`allow_checkpointing_with_prefix_cache`)."""
        modules = kv_prefix_modules(llm)
        _refuse_dropping_checkpointing(modules, training)
        cache = build_prefix_only_cache(modules, prefix, position_ids_from_mask(prefix_mask))
        mask = torch.cat([prefix_mask.to(device=attention_mask.device,
                                         dtype=attention_mask.dtype), attention_mask], dim=1)
        positions = position_ids_from_mask(mask)[:, prefix.shape[1]:]
        return llm(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                   past_key_values=cache, labels=labels, use_cache=False)

    def _prompt_on_cache(self, llm: nn.Module, prefix: Tensor, prefix_mask: Tensor,
                         mask: Tensor) -> tuple[DynamicCache, Tensor, Tensor]:
        """The prefix cache (inference), the mask over cache + prompt ``(B, P + S)`` and the
        prompt's positions ``(B, S)``: what generation and scoring both start from."""
        cache = self.cache(llm, prefix, prefix_mask, training=False)
        full_mask = torch.cat([prefix_mask.to(mask.dtype), mask], dim=1)
        return cache, full_mask, position_ids_from_mask(full_mask)[:, prefix.shape[1]:]

    def prefill(self, llm: nn.Module, prefix: Tensor, prefix_mask: Tensor, ids: Tensor,
                mask: Tensor, prefix_at: Tensor | None) -> tuple[Any, Tensor, Tensor]:
        """The ECG key/value cache, then the LM over the prompt continuing it."""
        cache, full_mask, positions = self._prompt_on_cache(llm, prefix, prefix_mask, mask)
        out = llm(input_ids=ids, attention_mask=full_mask, position_ids=positions,
                  past_key_values=cache, use_cache=True)
        return out.past_key_values, full_mask, out.logits[:, -1]

    def generate(self, llm: nn.Module, prefix: Tensor, prefix_mask: Tensor, ids: Tensor,
                 mask: Tensor, prefix_at: Tensor | None, steps: int, pad_id: int,
                 eos_id: int, streamer: BaseStreamer | None = None) -> list[list[int]]:
        """Greedy decoding over the LM, continuing the ECG key/value cache (``streamer`` fed
        by :func:`greedy_with_cache` as HF ``generate`` feeds it)."""
        check_streaming(streamer, ids.shape[0])
        cache, full_mask, positions = self._prompt_on_cache(llm, prefix, prefix_mask, mask)
        return greedy_with_cache(llm, cache, ids, full_mask, positions, steps, eos_id,
                                 streamer=streamer)
