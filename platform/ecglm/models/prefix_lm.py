"""The LLM side: a (LoRA) causal LM + tokenizer + fusion that consumes an ECG prefix.

:class:`PrefixLMMethods` holds what both the full :class:`~ecglm.models.ecg_lm.ECGLanguageModel`
and the LLM side alone (:class:`PrefixLM`, e.g. a Serve LLM replica) do with a prefix
``(B, P, d_llm)`` + ``prefix_mask (B, P)``: the causal LM over prefix and text
(:meth:`~PrefixLMMethods.forward_from_prefix`) and greedy decoding
(:meth:`~PrefixLMMethods.generate_from_prefix`). The fusion object
(:mod:`ecglm.models.fusion`) does the fusion-specific work.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from safetensors.torch import load_file
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase
from transformers.generation import BaseStreamer
from transformers.modeling_outputs import CausalLMOutputWithPast

from ecglm.config.schema import ConfigError
from ecglm.models.encoders import CheckpointError, ModelInputError
from ecglm.models.fusion import (
    Fusion,
    check_streaming,
    left_pad,
    left_pad_prefix_at,
    text_index,
)
from ecglm.models.trainable import load_into, trainable_tensors

LLM_PREFIX = "llm."
"""Key prefix of the LLM's (LoRA) tensors in a trainable checkpoint."""


def check_tokenizer(tokenizer: PreTrainedTokenizerBase) -> None:
    """Raise :class:`ConfigError` unless the tokenizer has pad and eos tokens."""
    if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
        raise ConfigError("llm: tokenizer needs pad and eos tokens (use load_llm)")


class PrefixLMMethods:
    """Prefix-consuming methods; the class using them is an ``nn.Module`` with attributes
    ``llm`` (causal LM), ``tokenizer``, ``fusion`` (:class:`Fusion`) and ``max_new_tokens``."""

    llm: nn.Module
    tokenizer: PreTrainedTokenizerBase
    fusion: Fusion
    max_new_tokens: int
    training: bool

    @property
    def embed_dtype(self) -> torch.dtype:
        """dtype of the LLM's input embeddings (prefixes are cast to it)."""
        return self.llm.get_input_embeddings().weight.dtype

    @staticmethod
    def _check_text(input_ids: Tensor, attention_mask: Tensor, batch: int, source: str) -> None:
        """Raise :class:`ModelInputError` unless ``input_ids``/``attention_mask`` are equal
        ``(B, S)`` shapes with ``B == batch`` (the batch of ``source``)."""
        if input_ids.ndim != 2 or attention_mask.shape != input_ids.shape:
            raise ModelInputError(f"input_ids/attention_mask: expected equal (B, S) shapes, got "
                                  f"{tuple(input_ids.shape)} and {tuple(attention_mask.shape)}")
        if batch != input_ids.shape[0]:
            raise ModelInputError(f"{source}: batch {batch} != input_ids batch "
                                  f"{input_ids.shape[0]}")

    @staticmethod
    def _check_prefix(prefix: Tensor, prefix_mask: Tensor) -> None:
        if prefix.ndim != 3 or tuple(prefix_mask.shape) != tuple(prefix.shape[:2]):
            raise ModelInputError(f"prefix/prefix_mask: expected (B, P, d) and (B, P), got "
                                  f"{tuple(prefix.shape)} and {tuple(prefix_mask.shape)}")

    def forward_from_prefix(self, prefix: Tensor, prefix_mask: Tensor, input_ids: Tensor,
                            attention_mask: Tensor, labels: Tensor | None = None,
                            prefix_at: Tensor | None = None) -> CausalLMOutputWithPast:
        """Causal LM over an ECG prefix and the text.

        Args:
            prefix: ``(B, P, d_llm)`` (cast to the LLM embedding dtype); prefix_mask:
                ``(B, P)`` bool.
            input_ids, attention_mask: ``(B, S)`` text tokens (right padding).
            labels: ``(B, S)`` with ``-100`` where no loss is wanted, or None.
            prefix_at: ``(B,)`` long, input_prefix only: index in ``input_ids`` the ECG tokens
                are inserted before (required with ``fusion.position: placeholder``).

        Returns:
            HF output with ``loss`` when labels given and ``logits``: input_prefix
            ``(B, P + S, vocab)`` over the fused sequence, kv_prefix ``(B, S, vocab)`` over the
            text (:meth:`text_logits` gives ``(B, S, vocab)`` for both).
        """
        self._check_text(input_ids, attention_mask, prefix.shape[0], "prefix")
        self._check_prefix(prefix, prefix_mask)
        at = self.fusion.check_prefix_at(prefix_at, input_ids)
        full_labels = None
        if labels is not None:
            if labels.shape != input_ids.shape:
                raise ModelInputError(f"labels: expected shape {tuple(input_ids.shape)}, "
                                      f"got {tuple(labels.shape)}")
            full_labels = self.fusion.labels(labels, prefix.shape[1], at)
        return self.fusion.forward(self.llm, prefix.to(self.embed_dtype), prefix_mask,
                                   input_ids, attention_mask, full_labels, at, self.training)

    def text_logits(self, logits: Tensor, input_ids: Tensor,
                    prefix_at: Tensor | None = None) -> Tensor:
        """Logits at the text positions, ``(B, S, vocab)``, from :meth:`forward_from_prefix`'s
        ``logits`` (``(B, P + S, vocab)`` for input_prefix with the prefix first or at
        ``prefix_at``; ``(B, S, vocab)`` for kv_prefix, returned as is)."""
        batch, n_text = input_ids.shape
        n_prefix = logits.shape[1] - n_text
        if n_prefix == 0:
            return logits
        index = text_index(prefix_at, n_prefix, n_text, batch, logits.device)
        return logits.gather(1, index[:, :, None].expand(batch, n_text, logits.shape[2]))

    @contextmanager
    def _eval_mode(self) -> Iterator[None]:
        """Eval mode for the block; the previous training/eval mode is restored after."""
        was_training = self.training
        self.eval()  # type: ignore[attr-defined]
        try:
            yield
        finally:
            self.train(was_training)  # type: ignore[attr-defined]

    @torch.no_grad()
    def generate_from_prefix(self, prefix: Tensor, prefix_mask: Tensor, input_ids: Tensor,
                             attention_mask: Tensor, max_new_tokens: int | None = None, *,
                             prefix_at: Tensor | None = None,
                             streamer: BaseStreamer | None = None) -> list[list[int]]:
        """Greedy decoding from an ECG prefix, for every fusion.

        Args:
            prefix: ``(B, P, d_llm)`` prefix vectors.
            prefix_mask: ``(B, P)`` bool, True on attended prefix tokens.
            input_ids, attention_mask: ``(B, S)`` prompt tokens, right- or left-padded (re-packed
                to left padding internally; ``prefix_at`` indexes the ``input_ids`` given here).
            max_new_tokens: decoding steps (default ``llm.max_new_tokens``).
            prefix_at: ``(B,)`` long, input_prefix only: index in ``input_ids`` the ECG tokens
                go before (required with ``fusion.position: placeholder``).
            streamer: HF ``BaseStreamer`` fed the new tokens as they are produced, the same
                calls for every fusion (see :mod:`ecglm.models.fusion.base`); e.g.
                ``TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)``,
                or use :func:`ecglm.models.streaming.stream_from_prefix`. Needs ``B == 1``.

        Returns:
            ``B`` lists of new token ids, cut before the first eos. The model is in eval mode
            for the call and its previous mode restored.

        Raises:
            ValueError: a streamer with ``B != 1``.
        """
        self._check_text(input_ids, attention_mask, prefix.shape[0], "prefix")
        self._check_prefix(prefix, prefix_mask)
        check_streaming(streamer, input_ids.shape[0])
        at = self.fusion.check_prefix_at(prefix_at, input_ids)
        steps = int(max_new_tokens or self.max_new_tokens)
        pad_id, eos = int(self.tokenizer.pad_token_id), int(self.tokenizer.eos_token_id)
        ids, mask = left_pad(input_ids, attention_mask, pad_id)
        if at is not None:
            at = left_pad_prefix_at(at, attention_mask, ids.shape[1])
        prefix = prefix.to(device=ids.device, dtype=self.embed_dtype)
        prefix_mask = prefix_mask.to(ids.device)
        with self._eval_mode():
            rows = self.fusion.generate(self.llm, prefix, prefix_mask, ids, mask, at, steps,
                                        pad_id, eos, streamer)
        return [row[: row.index(eos)] if eos in row else row for row in rows]

    @torch.no_grad()
    def score_from_prefix(self, prefix: Tensor, prefix_mask: Tensor, input_ids: Tensor,
                          attention_mask: Tensor, continuations: Tensor, cont_mask: Tensor, *,
                          prefix_at: Tensor | None = None) -> Tensor:
        """Summed log-probability ``(N,)`` of ``N`` candidate answers ``continuations (N, L)``
        (right-padded, ``cont_mask (N, L)``) after ONE prompt (``input_ids (1, S)``) and its
        ECG prefix ``(1, P, d_llm)``; eval mode for the call (see
        :meth:`~ecglm.models.fusion.base.Fusion.score_continuations`)."""
        self._check_text(input_ids, attention_mask, prefix.shape[0], "prefix")
        self._check_prefix(prefix, prefix_mask)
        at = self.fusion.check_prefix_at(prefix_at, input_ids)
        device = input_ids.device
        with self._eval_mode():
            return self.fusion.score_continuations(
                self.llm, prefix.to(device=device, dtype=self.embed_dtype),
                prefix_mask.to(device), input_ids, attention_mask, at,
                continuations.to(device), cont_mask.to(device))

    def decode(self, rows: list[list[int]]) -> list[str]:
        """Token id rows -> text (special tokens skipped, stripped)."""
        return [self.tokenizer.decode(row, skip_special_tokens=True).strip() for row in rows]


class PrefixLM(PrefixLMMethods, nn.Module):
    """The LLM side alone: LLM (+ LoRA) + tokenizer + fusion, no encoder or mapper.

    Args:
        llm: causal LM exposing ``get_input_embeddings()`` and ``generate``.
        tokenizer: its tokenizer; must have pad and eos tokens.
        fusion: how the prefix enters the LM (checked against ``llm``).
        max_new_tokens: default decoding steps.

    Raises:
        ConfigError: no pad/eos token, or a fusion the LLM family cannot take.
    """

    def __init__(self, llm: nn.Module, tokenizer: PreTrainedTokenizerBase, fusion: Fusion,
                 max_new_tokens: int) -> None:
        super().__init__()
        check_tokenizer(tokenizer)
        fusion.check_llm(llm)
        self.llm = llm
        self.tokenizer = tokenizer
        self.fusion = fusion
        self.max_new_tokens = int(max_new_tokens)

    def load_llm_state(self, path: str | Path) -> None:
        """Load the ``llm.*`` tensors (LoRA) of a trainable checkpoint file; the encoder and
        mapper tensors in it are ignored.

        Raises:
            CheckpointError: file missing, or its ``llm.*`` keys do not match exactly.
        """
        file = Path(path)
        if not file.is_file():
            raise CheckpointError(f"trainable state: file not found: {file}")
        state = {k: v for k, v in load_file(str(file)).items() if k.startswith(LLM_PREFIX)}
        load_into(trainable_tensors(self, ()), state)
