"""The fusion interface: how an ECG prefix enters the LLM, for training and for generation.

A :class:`Fusion` owns the three things that differ between fusions: fusing the prefix
``(B, P, d_llm)`` with the text ``(B, S)`` and running the LM, aligning the labels with what
the LM sees, and greedy generation. It holds no parameters (the LLM is passed in), so one
object serves the full model and the LLM side alone.

Position ids are the running count of attended tokens (:func:`position_ids_from_mask`) over the
fused/full mask, the rule Hugging Face ``generate`` uses, so training, scoring and generation
agree whatever the padding layout and however many ECG slots are masked.

Streaming: :meth:`Fusion.generate` takes an optional Hugging Face ``BaseStreamer`` and calls it
the way HF ``generate`` does when the LM is given embeddings (input_prefix): one ``put`` of an
empty ``(1, 0)`` long tensor (the prompt: HF sees no prompt ids), one ``put`` of a ``(1,)`` long
tensor per new token (eos included, when produced), then ``end()`` after the last token (not
on an exception). Batch size 1 only (:func:`check_streaming`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor, nn
from transformers.generation import BaseStreamer
from transformers.modeling_outputs import CausalLMOutputWithPast


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """``(B, S)`` 0/1 mask -> ``(B, S)`` positions counting attended tokens only (0 on pads)."""
    mask = attention_mask.long()
    return (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)


def check_streaming(streamer: BaseStreamer | None, batch: int) -> None:
    """Raise ``ValueError`` when a streamer is given for a batch other than 1 (a streamer
    receives the tokens of one sequence)."""
    if streamer is not None and batch != 1:
        raise ValueError(f"streamer: token streaming needs batch size 1, got {batch} prompts; "
                         f"stream one request at a time or generate without a streamer")


class Fusion(ABC):
    """Where the ECG prefix enters a causal LM (``fusion.name``)."""

    name: str
    """The ``fusion.name`` this class implements."""

    @property
    def prompt_marker(self) -> str | None:
        """The prompt text the ECG tokens replace (their position in the prompt), or None
        when they do not sit in the text (prepended, or a key/value cache)."""
        return None

    def check_llm(self, llm: nn.Module) -> None:
        """Raise :class:`~ecglm.config.ConfigError` when ``llm`` cannot take this fusion
        (default: every causal LM can)."""

    def prepare_checkpointing(self, llm: nn.Module) -> None:
        """Make ``llm`` ready for HF gradient checkpointing with this fusion (called before
        checkpointing is enabled; default: nothing to do)."""

    @abstractmethod
    def check_prefix_at(self, prefix_at: Tensor | None, input_ids: Tensor) -> Tensor | None:
        """Validate ``prefix_at (B,)`` (the text index the prefix goes before) for this fusion;
        returns it as long on ``input_ids``' device, or None (prepend / no text position).

        Raises:
            ModelInputError: given where the fusion has no text position, or missing where it
                is required, or out of range.
        """

    @abstractmethod
    def labels(self, labels: Tensor, n_prefix: int, prefix_at: Tensor | None) -> Tensor:
        """``labels (B, S)`` over the text -> labels over the sequence the LM is run on
        (``-100`` on prefix positions where the prefix is part of it)."""

    @abstractmethod
    def forward(self, llm: nn.Module, prefix: Tensor, prefix_mask: Tensor, input_ids: Tensor,
                attention_mask: Tensor, labels: Tensor | None, prefix_at: Tensor | None,
                training: bool) -> CausalLMOutputWithPast:
        """Run ``llm`` over the prefix and the text.

        Args:
            llm: causal LM (peft-wrapped or plain).
            prefix: ``(B, P, d_llm)`` in the LM embedding dtype; prefix_mask: ``(B, P)`` bool.
            input_ids, attention_mask: ``(B, S)`` text tokens.
            labels: labels already aligned by :meth:`labels`, or None.
            prefix_at: from :meth:`check_prefix_at`.
            training: the model is in training mode.

        Returns:
            HF output (``loss`` when labels are given, ``logits`` over the sequence the LM ran
            on).
        """

    @abstractmethod
    def generate(self, llm: nn.Module, prefix: Tensor, prefix_mask: Tensor, ids: Tensor,
                 mask: Tensor, prefix_at: Tensor | None, steps: int, pad_id: int,
                 eos_id: int, streamer: BaseStreamer | None = None) -> list[list[int]]:
        """Greedy decoding of at most ``steps`` new tokens from left-padded prompts
        ``ids``/``mask (B, S)`` (``prefix_at`` already moved to the left-padded layout);
        ``B`` lists of new token ids, not cut at eos.

        ``streamer`` (``B == 1`` only, else ``ValueError``) receives the new tokens as they
        are produced, with the calls described in the module docstring."""

    @abstractmethod
    def prefill(self, llm: nn.Module, prefix: Tensor, prefix_mask: Tensor, ids: Tensor,
                mask: Tensor, prefix_at: Tensor | None) -> tuple[Any, Tensor, Tensor]:
        """Run the LM once over left-padded prompts and keep its cache (for scoring).

        Returns:
            ``(cache, full_mask (B, C), last_logits (B, vocab))``: the HF cache over all ``C``
            positions seen so far, the attention mask over them and the logits that predict
            the first new token.
        """

    @torch.no_grad()
    def score_continuations(self, llm: nn.Module, prefix: Tensor, prefix_mask: Tensor,
                            ids: Tensor, mask: Tensor, prefix_at: Tensor | None,
                            continuations: Tensor, cont_mask: Tensor) -> Tensor:
        """Log-probabilities of ``N`` candidate continuations of ONE prompt (teacher forced).

        The prompt is run once (:meth:`prefill`); its cache is repeated ``N`` times and the
        candidates run on it, so scoring ``N`` short answers costs one prompt forward plus
        ``N x L`` tokens.

        Args:
            prefix: ``(1, P, d_llm)``; prefix_mask: ``(1, P)``; ids/mask: ``(1, S)`` prompt.
            continuations: ``(N, L)`` token ids, right-padded; cont_mask: ``(N, L)`` 0/1.

        Returns:
            ``(N,)`` float32: the summed log-probability of each candidate's tokens.
        """
        if ids.shape[0] != 1 or continuations.ndim != 2 or cont_mask.shape != continuations.shape:
            raise ValueError(f"score_continuations: expected one prompt (1, S) and (N, L) "
                             f"candidates, got {tuple(ids.shape)} and "
                             f"{tuple(continuations.shape)}/{tuple(cont_mask.shape)}")
        n = continuations.shape[0]
        cache, full_mask, last = self.prefill(llm, prefix, prefix_mask, ids, mask, prefix_at)
        cache.batch_repeat_interleave(n)
        cont_mask = cont_mask.to(full_mask.dtype)
        joint = torch.cat([full_mask.expand(n, -1), cont_mask], dim=1)
        positions = position_ids_from_mask(joint)[:, full_mask.shape[1]:]
        out = llm(input_ids=continuations, attention_mask=joint, position_ids=positions,
                  past_key_values=cache, use_cache=True)
        logits = torch.cat([last.expand(n, -1)[:, None], out.logits[:, :-1]], dim=1)
        logp = torch.log_softmax(logits.float(), dim=-1)
        picked = logp.gather(-1, continuations[..., None]).squeeze(-1)
        return (picked * cont_mask.float()).sum(-1)

