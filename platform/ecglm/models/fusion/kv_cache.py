"""kv_prefix helpers (MEIT): the ECG vectors as a per-layer key/value cache.

In every decoder layer the ECG vectors become ``P`` extra key/value slots computed by that
layer's own ``input_layernorm`` + ``k_proj``/``v_proj`` (+ ``k_norm`` where the family has
one), rotated to positions ``0..P-1`` and handed to the LM ahead of the text. No new
parameters; gradients flow through the cache into the ECG vectors and LoRA on ``k``/``v``.

Two caches hold them:

* :func:`build_kv_prefix_cache`: a :class:`transformers.DynamicCache` filled up front, for
  generation (the text's keys/values are appended step by step);
* :func:`build_prefix_only_cache`: a :class:`PrefixOnlyCache` for training/scoring forwards.
  It stores the ECG vectors, not their keys/values: each layer's keys/values are computed in
  that layer's attention call (:meth:`PrefixKVLayer.update`) and nothing is written back, so
  the cache is read-only. Under gradient checkpointing the backward recompute of a layer
  therefore rebuilds the layer's prefix keys/values inside the recomputed graph (gradients to
  the prefix, mapper and LoRA stay exact) and never appends the text twice;
  :func:`allow_checkpointing_with_prefix_cache` tells HF's checkpointed layers to keep it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn
from transformers import Cache, DynamicCache
from transformers.cache_utils import DynamicLayer
from transformers.generation import BaseStreamer

from ecglm.config.schema import ConfigError
from ecglm.models.encoders import ModelInputError
from ecglm.models.fusion.base import check_streaming

RotaryFn = Callable[..., tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class KVLayer:
    """Modules of one decoder layer used to turn ECG vectors into its keys/values."""

    index: int
    norm: nn.Module
    k_proj: nn.Module
    v_proj: nn.Module
    k_norm: nn.Module | None
    head_dim: int


@dataclass(frozen=True)
class KVPrefixModules:
    """Everything :func:`build_kv_prefix_cache` needs from a causal LM (found generically)."""

    config: Any
    layers: tuple[KVLayer, ...]
    rotary: nn.Module
    apply_rotary: RotaryFn
    decoder_layers: tuple[nn.Module, ...] = ()
    """The decoder layer modules themselves (same order as :attr:`layers`)."""
    checkpointing_drops_cache: bool = False
    """HF gradient checkpointing is on in a layer that discards ``past_key_values`` in
    training (the ECG would silently vanish from the forward pass): checkpointing was enabled
    without :func:`allow_checkpointing_with_prefix_cache`."""


def _unwrap(llm: nn.Module) -> nn.Module:
    """The ``*ForCausalLM`` inside peft wrappers (``PeftModel.get_base_model()``)."""
    get_base = getattr(llm, "get_base_model", None)
    return get_base() if callable(get_base) else llm


def kv_prefix_modules(llm: nn.Module) -> KVPrefixModules:
    """Find decoder layers, their norm/k/v modules, the rotary embedding and the family's
    ``apply_rotary_pos_emb`` in a (peft-wrapped) HF causal LM.

    Raises:
        ConfigError: the family is not supported by ``kv_prefix`` (names ``model_type`` and
            what is missing, e.g. GPT-2's fused ``c_attn`` instead of ``k_proj``/``v_proj``).
    """
    base = _unwrap(llm)
    config = getattr(base, "config", None)
    model_type = getattr(config, "model_type", type(base).__name__)

    def fail(what: str) -> ConfigError:
        return ConfigError(f"fusion.name=kv_prefix: LLM family {model_type!r} is not supported "
                           f"({what}); supported: decoder layers with input_layernorm and "
                           f"self_attn.k_proj/v_proj and a shared rotary embedding "
                           f"(Llama, Qwen2, Qwen3, Mistral, ...)")

    inner = getattr(base, getattr(base, "base_model_prefix", "model"), None)
    layers = getattr(inner, "layers", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        raise fail("no decoder layers at <base_model>.layers")
    rotary = getattr(inner, "rotary_emb", None)
    if not isinstance(rotary, nn.Module):
        raise fail("no rotary_emb module on the base model")
    if float(getattr(config, "partial_rotary_factor", 1.0) or 1.0) != 1.0:
        raise fail("partial rotary embeddings")
    found: list[KVLayer] = []
    apply_rotary: RotaryFn | None = None
    drops_cache = False
    for i, layer in enumerate(layers):
        attn = getattr(layer, "self_attn", None)
        norm = getattr(layer, "input_layernorm", None)
        k_proj = getattr(attn, "k_proj", None)
        v_proj = getattr(attn, "v_proj", None)
        if not all(isinstance(m, nn.Module) for m in (attn, norm, k_proj, v_proj)):
            raise fail(f"layer {i}: attention without k_proj/v_proj or no input_layernorm")
        head_dim = getattr(attn, "head_dim", None)
        if not isinstance(head_dim, int) or head_dim <= 0:
            raise fail(f"layer {i}: attention has no head_dim")
        module = sys.modules.get(type(attn).__module__)
        fn = getattr(module, "apply_rotary_pos_emb", None)
        if not callable(fn):
            raise fail(f"layer {i}: no apply_rotary_pos_emb next to {type(attn).__name__}")
        apply_rotary = fn
        k_norm = getattr(attn, "k_norm", None)
        drops_cache = drops_cache or (bool(getattr(layer, "gradient_checkpointing", False))
                                      and not getattr(layer, "_can_checkpoint_with_cache", False))
        found.append(KVLayer(index=int(getattr(attn, "layer_idx", i)), norm=norm,
                             k_proj=k_proj, v_proj=v_proj,
                             k_norm=k_norm if isinstance(k_norm, nn.Module) else None,
                             head_dim=head_dim))
    assert apply_rotary is not None
    return KVPrefixModules(config=config, layers=tuple(found), rotary=rotary,
                           apply_rotary=apply_rotary, decoder_layers=tuple(layers),
                           checkpointing_drops_cache=drops_cache)


CAN_CHECKPOINT_WITH_CACHE = "_can_checkpoint_with_cache"
"""Flag of HF's ``GradientCheckpointingLayer``: "layers that only read the KV cache can set
this to keep it under gradient checkpointing" (transformers/modeling_layers.py)."""


def allow_checkpointing_with_prefix_cache(llm: nn.Module) -> None:
    """Let every decoder layer of ``llm`` keep ``past_key_values`` under HF gradient
    checkpointing (an instance flag HF provides for read-only caches).

    Only valid because training forwards of kv_prefix pass a :class:`PrefixOnlyCache`, which
    is never written to (generation runs in eval mode, where checkpointing is inactive).

    Raises:
        ConfigError: the family is not supported by kv_prefix.
    """
    for layer in kv_prefix_modules(llm).decoder_layers:
        setattr(layer, CAN_CHECKPOINT_WITH_CACHE, True)


def _prefix_keys_values(layer: KVLayer, prefix: Tensor, cos: Tensor, sin: Tensor,
                        apply_rotary: RotaryFn) -> tuple[Tensor, Tensor]:
    """Keys/values of one decoder layer for the ECG vectors.

    Args:
        prefix: ``(B, P, d_llm)``; cos, sin: rotary tables of the prefix positions.

    Returns:
        ``keys, values`` of shape ``(B, n_kv_heads, P, head_dim)`` (keys rotated).
    """
    batch, n_prefix, _ = prefix.shape
    hidden = layer.norm(prefix)
    shape = (batch, n_prefix, -1, layer.head_dim)
    keys = layer.k_proj(hidden).view(shape)
    if layer.k_norm is not None:
        keys = layer.k_norm(keys)
    keys = keys.transpose(1, 2)  # (B, n_kv_heads, P, head_dim)
    values = layer.v_proj(hidden).view(shape).transpose(1, 2)
    _, keys = apply_rotary(keys, keys, cos, sin)
    return keys, values


class PrefixKVLayer(DynamicLayer):
    """Read-only cache layer: the ECG prefix of one decoder layer, computed on demand.

    :meth:`update` returns ``cat(prefix keys/values, the text's keys/values)`` along the
    sequence axis and stores nothing, so calling the layer twice (checkpoint recompute) gives
    the same result. The prefix keys/values are computed inside the attention call, i.e.
    inside the (checkpointed) decoder layer.

    Args:
        layer: the decoder layer's modules; prefix: ``(B, P, d_llm)`` ECG vectors in the LM
            dtype; cos, sin: rotary tables for the prefix positions; apply_rotary: the family's
            ``apply_rotary_pos_emb``.
    """

    def __init__(self, layer: KVLayer, prefix: Tensor, cos: Tensor, sin: Tensor,
                 apply_rotary: RotaryFn) -> None:
        super().__init__()
        self.kv_layer = layer
        self.prefix = prefix
        self.cos, self.sin = cos, sin
        self.apply_rotary = apply_rotary
        self.dtype, self.device = prefix.dtype, prefix.device
        self.is_initialized = True

    def lazy_initialization(self, key_states: Tensor, value_states: Tensor) -> None:
        """Nothing to allocate (the layer is built initialised)."""

    def update(self, key_states: Tensor, value_states: Tensor, *args: Any,
               **kwargs: Any) -> tuple[Tensor, Tensor]:
        """``(B, H_kv, P + S, head_dim)`` keys and values: the prefix's, then the text's."""
        keys, values = _prefix_keys_values(self.kv_layer, self.prefix, self.cos, self.sin,
                                           self.apply_rotary)
        return (torch.cat([keys.to(key_states.dtype), key_states], dim=-2),
                torch.cat([values.to(value_states.dtype), value_states], dim=-2))

    def get_seq_length(self) -> int:
        """``P``: the number of cached (prefix) positions."""
        return int(self.prefix.shape[1])

    def reset(self) -> None:
        """Read-only: nothing to reset."""

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("PrefixOnlyCache is read-only")

    def batch_repeat_interleave(self, repeats: int) -> None:
        raise NotImplementedError("PrefixOnlyCache is read-only")

    def batch_select_indices(self, indices: Tensor) -> None:
        raise NotImplementedError("PrefixOnlyCache is read-only")

    def reorder_cache(self, beam_idx: Tensor) -> None:
        raise NotImplementedError("PrefixOnlyCache is read-only")


class PrefixOnlyCache(Cache):
    """A :class:`transformers.Cache` of :class:`PrefixKVLayer` (one per decoder layer):
    ``P`` prefix positions, never written to. For forwards with ``use_cache=False``."""

    def __init__(self, layers: list[PrefixKVLayer]) -> None:
        super().__init__(layers=list(layers))


def build_prefix_only_cache(modules: KVPrefixModules, prefix: Tensor,
                            position_ids: Tensor) -> PrefixOnlyCache:
    """The read-only counterpart of :func:`build_kv_prefix_cache` (same keys/values; computed
    in each layer's attention call, see :class:`PrefixKVLayer`).

    Args:
        modules: from :func:`kv_prefix_modules`.
        prefix: ``(B, P, d_llm)`` ECG vectors in the LM dtype.
        position_ids: ``(B, P)`` long rotary positions of the prefix slots.
    """
    if prefix.ndim != 3 or tuple(position_ids.shape) != tuple(prefix.shape[:2]):
        raise ModelInputError(f"prefix/position_ids: expected (B, P, d) and (B, P), got "
                              f"{tuple(prefix.shape)} and {tuple(position_ids.shape)}")
    cos, sin = modules.rotary(prefix, position_ids=position_ids.to(prefix.device))
    by_index = sorted(modules.layers, key=lambda layer: layer.index)
    if [layer.index for layer in by_index] != list(range(len(by_index))):
        raise ModelInputError(f"kv_prefix: decoder layer indices must be 0..L-1, got "
                              f"{[layer.index for layer in by_index]}")
    return PrefixOnlyCache([PrefixKVLayer(layer, prefix, cos, sin, modules.apply_rotary)
                            for layer in by_index])


def build_kv_prefix_cache(modules: KVPrefixModules, prefix: Tensor,
                          position_ids: Tensor) -> DynamicCache:
    """Per-layer keys/values of the ECG vectors, as a cache the LM continues from.

    For every decoder layer: ``h = input_layernorm(prefix)``; ``k = k_proj(h)``,
    ``v = v_proj(h)`` reshaped to ``(B, n_kv_heads, P, head_dim)`` (``k_norm`` per head first
    where the family has one); RoPE at ``position_ids`` rotates ``k``. Modules are called as
    modules, so LoRA on ``k_proj``/``v_proj`` applies and DeepSpeed ZeRO-3 gathers parameters.

    Args:
        modules: from :func:`kv_prefix_modules`.
        prefix: ``(B, P, d_llm)`` ECG vectors in the LM dtype.
        position_ids: ``(B, P)`` long rotary positions of the prefix slots (``0..P-1`` when all
            are attended).

    Returns:
        A :class:`DynamicCache` holding ``P`` positions per layer (differentiable w.r.t.
        ``prefix`` and the LoRA/k/v parameters).
    """
    if prefix.ndim != 3 or tuple(position_ids.shape) != tuple(prefix.shape[:2]):
        raise ModelInputError(f"prefix/position_ids: expected (B, P, d) and (B, P), got "
                              f"{tuple(prefix.shape)} and {tuple(position_ids.shape)}")
    cache = DynamicCache(config=modules.config)
    cos, sin = modules.rotary(prefix, position_ids=position_ids.to(prefix.device))
    for layer in modules.layers:
        keys, values = _prefix_keys_values(layer, prefix, cos, sin, modules.apply_rotary)
        cache.update(keys, values, layer.index)
    return cache


@torch.no_grad()
def greedy_with_cache(llm: nn.Module, cache: DynamicCache, ids: Tensor, attention_mask: Tensor,
                      position_ids: Tensor, steps: int, eos_id: int, *,
                      streamer: BaseStreamer | None = None) -> list[list[int]]:
    """Greedy decoding that continues a pre-filled cache (the kv_prefix ECG slots).

    Args:
        llm: causal LM called as ``llm(input_ids, attention_mask, position_ids,
            past_key_values, use_cache=True)``.
        cache: holds the ``C`` cached positions (mutated).
        ids: ``(B, S)`` left-padded prompt ids.
        attention_mask: ``(B, C + S)`` over cache and prompt.
        position_ids: ``(B, S)`` positions of the prompt tokens.
        steps: maximum new tokens; stops early once every row has produced ``eos_id``.
        streamer: ``B == 1`` only (else ``ValueError``): fed as HF ``generate`` feeds it given
            embeddings, so a streamer behaves the same as with input_prefix: ``put`` of an
            empty ``(1, 0)`` long tensor (the prompt), ``put`` of each new token as ``(1,)``
            (eos included), ``end()`` when decoding stops (not on an exception).

    Returns:
        ``B`` lists of new token ids (not cut at eos; the caller cuts).
    """
    check_streaming(streamer, ids.shape[0])
    if streamer is not None:
        streamer.put(torch.empty(ids.shape[0], 0, dtype=torch.long))
    step_ids, mask, positions = ids, attention_mask, position_ids
    new: list[Tensor] = []
    done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
    for _ in range(steps):
        out = llm(input_ids=step_ids, attention_mask=mask, position_ids=positions,
                  past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        token = out.logits[:, -1].argmax(-1)  # (B,)
        new.append(token)
        if streamer is not None:
            streamer.put(token.cpu())
        done |= token == eos_id
        if bool(done.all()):
            break
        step_ids = token[:, None]
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        positions = mask.long().sum(1, keepdim=True) - 1
    if streamer is not None:
        streamer.end()
    if not new:
        return [[] for _ in range(ids.shape[0])]
    return torch.stack(new, dim=1).tolist()
