"""kv_prefix helpers (MEIT): the ECG vectors as a per-layer key/value cache.

In every decoder layer the ECG vectors become ``P`` extra key/value slots computed by that
layer's own ``input_layernorm`` + ``k_proj``/``v_proj`` (+ ``k_norm`` where the family has
one), rotated to positions ``0..P-1`` and handed to the LM as a
:class:`transformers.DynamicCache` ahead of the text (:func:`build_kv_prefix_cache`). No new
parameters; gradients flow through the cache into the ECG vectors and LoRA on ``k``/``v``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn
from transformers import DynamicCache

from ecglm.config.schema import ConfigError
from ecglm.models.encoders import ModelInputError

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
    checkpointing_drops_cache: bool = False
    """HF gradient checkpointing is on in a layer that discards ``past_key_values`` in
    training (the ECG would silently vanish from the forward pass)."""


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
                           apply_rotary=apply_rotary, checkpointing_drops_cache=drops_cache)


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
    batch, n_prefix, _ = prefix.shape
    cache = DynamicCache(config=modules.config)
    cos, sin = modules.rotary(prefix, position_ids=position_ids.to(prefix.device))
    for layer in modules.layers:
        hidden = layer.norm(prefix)
        shape = (batch, n_prefix, -1, layer.head_dim)
        keys = layer.k_proj(hidden).view(shape)
        if layer.k_norm is not None:
            keys = layer.k_norm(keys)
        keys = keys.transpose(1, 2)  # (B, n_kv_heads, P, head_dim)
        values = layer.v_proj(hidden).view(shape).transpose(1, 2)
        _, keys = modules.apply_rotary(keys, keys, cos, sin)
        cache.update(keys, values, layer.index)
    return cache


@torch.no_grad()
def greedy_with_cache(llm: nn.Module, cache: DynamicCache, ids: Tensor, attention_mask: Tensor,
                      position_ids: Tensor, steps: int, eos_id: int) -> list[list[int]]:
    """Greedy decoding that continues a pre-filled cache (the kv_prefix ECG slots).

    Args:
        llm: causal LM called as ``llm(input_ids, attention_mask, position_ids,
            past_key_values, use_cache=True)``.
        cache: holds the ``C`` cached positions (mutated).
        ids: ``(B, S)`` left-padded prompt ids.
        attention_mask: ``(B, C + S)`` over cache and prompt.
        position_ids: ``(B, S)`` positions of the prompt tokens.
        steps: maximum new tokens; stops early once every row has produced ``eos_id``.

    Returns:
        ``B`` lists of new token ids (not cut at eos; the caller cuts).
    """
    step_ids, mask, positions = ids, attention_mask, position_ids
    new: list[Tensor] = []
    done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
    for _ in range(steps):
        out = llm(input_ids=step_ids, attention_mask=mask, position_ids=positions,
                  past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        token = out.logits[:, -1].argmax(-1)  # (B,)
        new.append(token)
        done |= token == eos_id
        if bool(done.all()):
            break
        step_ids = token[:, None]
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        positions = mask.long().sum(1, keepdim=True) - 1
    if not new:
        return [[] for _ in range(ids.shape[0])]
    return torch.stack(new, dim=1).tolist()
