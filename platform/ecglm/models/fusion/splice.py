"""input_prefix helpers: splice ECG vectors into the text at a token index, left padding.

The ECG vectors ``(B, P, d_llm)`` join the text embeddings ``(B, S, d_llm)`` either before the
text (``position: prepend``) or at the token index ``prefix_at (B,)`` where the prompt held
``fusion.placeholder`` (:func:`split_at_placeholder`, :func:`splice`).
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from ecglm.models.encoders import ModelInputError


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


