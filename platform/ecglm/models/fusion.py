"""Fusion helpers: where ECG tokens enter the LLM.

Two fusions (``fusion.name``):

* ``input_prefix``: ECG vectors ``(B, P, d_llm)`` join the text embeddings ``(B, S, d_llm)``,
  either before the text (``position: prepend``) or spliced in at the token index
  ``prefix_at (B,)`` where the prompt held ``fusion.placeholder`` (:func:`split_at_placeholder`,
  :func:`splice`).
* ``kv_prefix`` (MEIT): in every decoder layer the ECG vectors become ``P`` extra key/value
  slots computed by that layer's own ``input_layernorm`` + ``k_proj``/``v_proj`` (+ ``k_norm``
  where the family has one), rotated to positions ``0..P-1`` and handed to the LM as a
  :class:`transformers.DynamicCache` ahead of the text (:func:`build_kv_prefix_cache`). No new
  parameters; gradients flow through the cache into the ECG vectors and LoRA on ``k``/``v``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn
from transformers import DynamicCache, PreTrainedTokenizerBase

from ecglm.config.schema import ConfigError
from ecglm.models.encoders import ModelInputError

RotaryFn = Callable[..., tuple[Tensor, Tensor]]


# --------------------------------------------------------------------------------------------
# input_prefix: placeholder splice
# --------------------------------------------------------------------------------------------

def split_at_placeholder(tokenizer: PreTrainedTokenizerBase, text: str, placeholder: str,
                         max_length: int | None = None) -> tuple[list[int], int]:
    """Token ids of ``text`` without its placeholder, and where the ECG tokens go.

    The text before and after ``placeholder`` is tokenised separately (no special tokens added,
    like :func:`ecglm.models.prompting.encode_prompt`), so the ECG tokens sit exactly between
    the two halves.

    Args:
        tokenizer: the LLM tokenizer.
        text: prompt text holding ``placeholder`` exactly once.
        placeholder: marker string (``fusion.placeholder``).
        max_length: when set, ids are cut from the left to this many tokens (like
            ``encode_prompt``); the position moves with them (0 if the cut reaches past it).

    Returns:
        ``(ids, position)``: ``ids`` = ids(before) + ids(after), ``position = len(ids(before))``
        (after the cut), i.e. the index in ``ids`` the ECG tokens are inserted before.

    Raises:
        ModelInputError: the placeholder is empty or does not occur exactly once.
    """
    if not placeholder:
        raise ModelInputError("placeholder: must not be empty")
    count = text.count(placeholder)
    if count != 1:
        raise ModelInputError(f"prompt text: expected the placeholder {placeholder!r} exactly "
                              f"once, found it {count} times")
    before, after = text.split(placeholder)
    ids_before = list(tokenizer(before, add_special_tokens=False)["input_ids"]) if before else []
    ids_after = list(tokenizer(after, add_special_tokens=False)["input_ids"]) if after else []
    ids = ids_before + ids_after
    position = len(ids_before)
    if max_length is not None and len(ids) > max_length:
        cut = len(ids) - max(max_length, 0)
        ids = ids[cut:]
        position = max(position - cut, 0)
    return ids, position


def check_prefix_at(prefix_at: Tensor, batch: int, n_text: int) -> Tensor:
    """Validate ``prefix_at``: ``(B,)`` integer with values in ``[0, S]``; returns it as long.

    Raises:
        ModelInputError: wrong shape, dtype or range.
    """
    if prefix_at.ndim != 1 or prefix_at.shape[0] != batch:
        raise ModelInputError(f"prefix_at: expected shape ({batch},), got "
                              f"{tuple(prefix_at.shape)}")
    if prefix_at.dtype.is_floating_point or prefix_at.dtype == torch.bool:
        raise ModelInputError(f"prefix_at: expected an integer tensor, got {prefix_at.dtype}")
    if batch and (int(prefix_at.min()) < 0 or int(prefix_at.max()) > n_text):
        raise ModelInputError(f"prefix_at: values must lie in [0, {n_text}] (text length), got "
                              f"{prefix_at.tolist()}")
    return prefix_at.long()


def _gather_rows(x: Tensor, index: Tensor) -> Tensor:
    """``x (B, N, *rest)``, ``index (B, M)`` -> ``(B, M, *rest)`` with ``out[b, m] = x[b,
    index[b, m]]``."""
    idx = index.reshape(*index.shape, *([1] * (x.ndim - 2))).expand(*index.shape, *x.shape[2:])
    return x.gather(1, idx)


def splice(text: Tensor, inserted: Tensor, at: Tensor) -> Tensor:
    """Insert ``inserted`` into every row of ``text`` before index ``at``.

    Args:
        text: ``(B, S, *rest)``.
        inserted: ``(B, P, *rest)`` (same dtype and trailing shape).
        at: ``(B,)`` long in ``[0, S]``; ``at == 0`` is prepending.

    Returns:
        ``(B, P + S, *rest)``: ``out[b] = [text[b, :at], inserted[b], text[b, at:]]``.
        Differentiable with respect to ``text`` and ``inserted``.
    """
    batch, n_text = text.shape[:2]
    n_ins = inserted.shape[1]
    if inserted.shape[0] != batch or inserted.shape[2:] != text.shape[2:]:
        raise ModelInputError(f"splice: inserted {tuple(inserted.shape)} does not fit text "
                              f"{tuple(text.shape)}")
    at = check_prefix_at(at, batch, n_text).to(text.device)
    if n_ins == 0:
        return text
    if n_text == 0:
        return inserted.to(text.dtype)
    pos = torch.arange(n_text + n_ins, device=text.device)[None, :]  # (1, P+S)
    start = at[:, None]
    is_ins = (pos >= start) & (pos < start + n_ins)  # (B, P+S)
    text_src = torch.where(pos < start, pos, pos - n_ins).clamp(0, n_text - 1)
    ins_src = (pos - start).clamp(0, n_ins - 1)
    from_text = _gather_rows(text, text_src)
    from_ins = _gather_rows(inserted.to(text.dtype), ins_src)
    keep = is_ins.reshape(*is_ins.shape, *([1] * (text.ndim - 2)))
    return torch.where(keep, from_ins, from_text)


def text_index(at: Tensor | None, n_prefix: int, n_text: int, batch: int,
               device: torch.device | None = None) -> Tensor:
    """Index of every text token in the fused ``(B, P + S)`` sequence: ``(B, S)`` long.

    ``at`` None means prepend (text token ``i`` sits at ``P + i``).
    """
    pos = torch.arange(n_text, device=device)[None, :].expand(batch, n_text)
    if at is None:
        return pos + n_prefix
    at = at.to(device=pos.device, dtype=torch.long)[:, None]
    return torch.where(pos < at, pos, pos + n_prefix)


def left_pad(input_ids: Tensor, attention_mask: Tensor, pad_id: int) -> tuple[Tensor, Tensor]:
    """Move each row's attended tokens to the right end: ``(B, S) -> (B, S')`` ids and mask,
    ``S'`` = the longest row (at least 1); generation prompts are left-padded."""
    keep = attention_mask.bool()
    lengths = keep.sum(dim=1)
    width = max(int(lengths.max()), 1)
    ids = input_ids.new_full((input_ids.shape[0], width), pad_id)
    mask = attention_mask.new_zeros((input_ids.shape[0], width))
    for row in range(input_ids.shape[0]):
        n = int(lengths[row])
        if n:
            ids[row, width - n:] = input_ids[row][keep[row]]
            mask[row, width - n:] = 1
    return ids, mask


def left_pad_prefix_at(prefix_at: Tensor, attention_mask: Tensor, width: int) -> Tensor:
    """Move ``prefix_at (B,)`` along when each row's attended tokens are re-packed to the right
    end of a ``width`` wide row (left padding): the new index is the number of leading pads
    plus the number of attended tokens before the old index."""
    mask = attention_mask.long()
    csum = torch.cat([mask.new_zeros(mask.shape[0], 1), mask.cumsum(1)], dim=1)  # (B, S+1)
    before = csum.gather(1, prefix_at.long().to(mask.device)[:, None])[:, 0]
    return width - mask.sum(1) + before


# --------------------------------------------------------------------------------------------
# kv_prefix: per-layer key/value cache built from the ECG vectors
# --------------------------------------------------------------------------------------------

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
