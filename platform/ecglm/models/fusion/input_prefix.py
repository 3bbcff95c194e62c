"""``input_prefix`` fusion (Q-HEART, LLaVA, GEM): ECG vectors join the text embeddings.

The prefix ``(B, P, d_llm)`` goes before the text (``position: prepend``) or at ``prefix_at
(B,)``, the index in ``input_ids`` where the prompt held ``fusion.placeholder``
(:func:`~ecglm.models.fusion.splice.split_at_placeholder`). The LM runs on the fused
``(B, P + S)`` sequence; logits and labels cover it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from transformers.generation import BaseStreamer
from transformers.modeling_outputs import CausalLMOutputWithPast

from ecglm.models.encoders import ModelInputError
from ecglm.models.fusion.base import Fusion, check_streaming, position_ids_from_mask
from ecglm.models.fusion.splice import check_prefix_at, splice
from ecglm.models.prompting import IGNORE_INDEX


class InputPrefixFusion(Fusion):
    """Prefix vectors as input embeddings, prepended or spliced in at a placeholder.

    Args:
        position: ``prepend`` or ``placeholder`` (``prefix_at`` then required).
        placeholder: the prompt marker (named in error messages).
    """

    name = "input_prefix"

    def __init__(self, position: str = "prepend", placeholder: str = "<ecg>") -> None:
        self.position = position
        self.placeholder = placeholder

    @property
    def prompt_marker(self) -> str | None:
        return self.placeholder if self.position == "placeholder" else None

    def check_prefix_at(self, prefix_at: Tensor | None, input_ids: Tensor) -> Tensor | None:
        if prefix_at is None:
            if self.position == "placeholder":
                raise ModelInputError(f"prefix_at: required with fusion.position=placeholder "
                                      f"(index of {self.placeholder!r} in input_ids, see "
                                      f"ecglm.models.fusion.split_at_placeholder)")
            return None
        return check_prefix_at(prefix_at.to(input_ids.device), input_ids.shape[0],
                               input_ids.shape[1])

    def labels(self, labels: Tensor, n_prefix: int, prefix_at: Tensor | None) -> Tensor:
        ignore = labels.new_full((labels.shape[0], n_prefix), IGNORE_INDEX)
        if prefix_at is None:
            return torch.cat([ignore, labels], dim=1)
        return splice(labels, ignore, prefix_at)

    @staticmethod
    def fuse(llm: nn.Module, prefix: Tensor, prefix_mask: Tensor, input_ids: Tensor,
             attention_mask: Tensor, prefix_at: Tensor | None) -> tuple[Tensor, Tensor]:
        """``prefix (B, P, d)`` + text embeddings ``(B, S, d)`` -> ``(inputs_embeds
        (B, P+S, d), attention_mask (B, P+S))`` (prefix first, or spliced in at
        ``prefix_at``)."""
        text = llm.get_input_embeddings()(input_ids)
        prefix_mask = prefix_mask.to(device=attention_mask.device, dtype=attention_mask.dtype)
        if prefix_at is None:
            embeds = torch.cat([prefix.to(text.dtype), text], dim=1)
            mask = torch.cat([prefix_mask, attention_mask], dim=1)
        else:
            embeds = splice(text, prefix.to(text.dtype), prefix_at)
            mask = splice(attention_mask, prefix_mask, prefix_at)
        return embeds, mask

    def forward(self, llm: nn.Module, prefix: Tensor, prefix_mask: Tensor, input_ids: Tensor,
                attention_mask: Tensor, labels: Tensor | None, prefix_at: Tensor | None,
                training: bool) -> CausalLMOutputWithPast:
        embeds, mask = self.fuse(llm, prefix, prefix_mask, input_ids, attention_mask, prefix_at)
        return llm(inputs_embeds=embeds, attention_mask=mask,
                   position_ids=position_ids_from_mask(mask), labels=labels, use_cache=False)

    def prefill(self, llm: nn.Module, prefix: Tensor, prefix_mask: Tensor, ids: Tensor,
                mask: Tensor, prefix_at: Tensor | None) -> tuple[Any, Tensor, Tensor]:
        """The LM over the fused ``(B, P + S)`` prompt with ``use_cache=True``."""
        embeds, full_mask = self.fuse(llm, prefix, prefix_mask, ids, mask, prefix_at)
        out = llm(inputs_embeds=embeds, attention_mask=full_mask,
                  position_ids=position_ids_from_mask(full_mask), use_cache=True)
        return out.past_key_values, full_mask, out.logits[:, -1]

    def generate(self, llm: nn.Module, prefix: Tensor, prefix_mask: Tensor, ids: Tensor,
                 mask: Tensor, prefix_at: Tensor | None, steps: int, pad_id: int,
                 eos_id: int, streamer: BaseStreamer | None = None) -> list[list[int]]:
        """HF ``generate`` (greedy) on the fused left-padded embeddings (``streamer`` passed
        to it)."""
        check_streaming(streamer, ids.shape[0])
        embeds, full_mask = self.fuse(llm, prefix, prefix_mask, ids, mask, prefix_at)
        out = llm.generate(inputs_embeds=embeds, attention_mask=full_mask, max_new_tokens=steps,
                           do_sample=False, num_beams=1, pad_token_id=pad_id,
                           eos_token_id=eos_id, streamer=streamer)
        sequences = out if isinstance(out, Tensor) else out.sequences
        # with inputs_embeds and no input_ids, HF returns the new tokens only
        if sequences.shape[1] > steps:
            raise RuntimeError(f"llm.generate returned {sequences.shape[1]} tokens for "
                               f"max_new_tokens={steps}; expected new tokens only")
        return sequences.tolist()
