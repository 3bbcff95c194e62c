"""ECG language model: encoder + ET-Mapper + LoRA causal LM with input-prefix fusion.

Every example carries ``E`` ECG slots (1, or 2 for comparison questions); ``ecg_mask (B, E)``
says which slots hold a real ECG. Each ECG becomes ``n_tokens`` prefix embeddings, so the LLM
sees ``[ECG_1 tokens, ..., ECG_E tokens, text tokens]``; prefix tokens of masked slots are
excluded by the attention mask. Position ids are the running count of attended tokens
(``cumsum(attention_mask) - 1``), the same rule Hugging Face ``generate`` uses, so training,
scoring and generation agree whatever the padding layout.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase
from transformers.modeling_outputs import CausalLMOutputWithPast

from ecglm.config.schema import ConfigError, ExperimentConfig
from ecglm.models.encoders import N_LEADS, CheckpointError, ModelInputError, build_encoder
from ecglm.models.llm import load_llm
from ecglm.models.mappers import build_mapper
from ecglm.models.prompting import IGNORE_INDEX

def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """``(B, S)`` 0/1 mask -> ``(B, S)`` positions counting attended tokens only (0 on pads)."""
    mask = attention_mask.long()
    return (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)


class ECGLanguageModel(nn.Module):
    """ECG encoder + mapper + (LoRA-wrapped) causal LM.

    Args:
        cfg: full experiment config (``encoder``, ``mapper``, ``fusion``, ``llm`` sections used).
        llm: causal LM exposing ``get_input_embeddings()`` and ``generate`` (a ``PeftModel``).
        tokenizer: its tokenizer; must have pad and eos tokens.
    """

    def __init__(self, cfg: ExperimentConfig, llm: nn.Module,
                 tokenizer: PreTrainedTokenizerBase) -> None:
        super().__init__()
        if cfg.fusion.name != "input_prefix":
            raise ConfigError(f"fusion.name: only 'input_prefix' is implemented, got "
                              f"{cfg.fusion.name!r}")
        if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
            raise ConfigError("llm: tokenizer needs pad and eos tokens (use load_llm)")
        self.cfg = cfg
        self.encoder = build_encoder(cfg.encoder)
        self.d_llm = int(llm.get_input_embeddings().embedding_dim)
        self.mapper = build_mapper(cfg.mapper, cfg.encoder.d_model, self.d_llm)
        self.llm = llm
        self.tokenizer = tokenizer

    @property
    def n_tokens(self) -> int:
        """Prefix tokens per ECG."""
        return self.cfg.mapper.n_tokens

    # ----------------------------------------------------------------------------------------
    # prefix
    # ----------------------------------------------------------------------------------------

    def ecg_prefix(self, signals: Tensor, ecg_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Encode ECG slots into prefix embeddings.

        Args:
            signals: ``(B, E, 12, T)`` float, mV.
            ecg_mask: ``(B, E)`` bool, True where the slot holds a real ECG (default: all).

        Returns:
            ``prefix (B, E * n_tokens, d_llm)`` in the LLM embedding dtype (zeros on masked
            slots) and ``prefix_mask (B, E * n_tokens)`` bool.
        """
        if signals.ndim != 4 or signals.shape[2] != N_LEADS:
            raise ModelInputError(f"signals: expected shape (B, E, {N_LEADS}, T), "
                                  f"got {tuple(signals.shape)}")
        batch, n_ecg, _, n_samples = signals.shape
        if ecg_mask is None:
            ecg_mask = torch.ones(batch, n_ecg, dtype=torch.bool, device=signals.device)
        if tuple(ecg_mask.shape) != (batch, n_ecg):
            raise ModelInputError(f"ecg_mask: expected shape ({batch}, {n_ecg}), "
                                  f"got {tuple(ecg_mask.shape)}")
        valid = ecg_mask.to(device=signals.device, dtype=torch.bool).reshape(-1)
        flat = signals.reshape(batch * n_ecg, N_LEADS, n_samples)
        dtype = self.llm.get_input_embeddings().weight.dtype
        if bool(valid.all()) or not bool(valid.any()):
            tokens = self.mapper(self.encoder(flat))  # (B*E, n, d)
        else:
            # encode only real ECGs (per-sample ops: identical result, less compute)
            mapped = self.mapper(self.encoder(flat[valid]))
            tokens = mapped.new_zeros(batch * n_ecg, *mapped.shape[1:])
            tokens[valid] = mapped
        tokens = tokens * valid.to(tokens.dtype)[:, None, None]
        prefix = tokens.reshape(batch, n_ecg * self.n_tokens, self.d_llm).to(dtype)
        prefix_mask = valid.reshape(batch, n_ecg).repeat_interleave(self.n_tokens, dim=1)
        return prefix, prefix_mask

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

    def _fuse_prefix(self, prefix: Tensor, prefix_mask: Tensor, input_ids: Tensor,
                     attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        """``[prefix (B, P, d), text embeddings (B, S, d)]`` -> ``(inputs_embeds (B, P+S, d),
        attention_mask (B, P+S))``."""
        text = self.llm.get_input_embeddings()(input_ids)
        embeds = torch.cat([prefix.to(text.dtype), text], dim=1)
        mask = torch.cat([prefix_mask.to(attention_mask.dtype), attention_mask], dim=1)
        return embeds, mask

    def _fuse(self, signals: Tensor, ecg_mask: Tensor | None, input_ids: Tensor,
              attention_mask: Tensor) -> tuple[Tensor, Tensor, int]:
        """Prepend the ECG prefix: returns ``(inputs_embeds, attention_mask, prefix_len)``."""
        self._check_text(input_ids, attention_mask, signals.shape[0], "signals")
        prefix, prefix_mask = self.ecg_prefix(signals, ecg_mask)
        embeds, mask = self._fuse_prefix(prefix, prefix_mask, input_ids, attention_mask)
        return embeds, mask, prefix.shape[1]

    # ----------------------------------------------------------------------------------------
    # training / scoring
    # ----------------------------------------------------------------------------------------

    def forward(self, signals: Tensor, ecg_mask: Tensor | None, input_ids: Tensor,
                attention_mask: Tensor, labels: Tensor | None = None) -> CausalLMOutputWithPast:
        """Causal LM over ``[ECG prefix, text]``.

        Args:
            signals: ``(B, E, 12, T)`` mV; ecg_mask: ``(B, E)`` bool.
            input_ids, attention_mask: ``(B, S)`` text tokens (right padding).
            labels: ``(B, S)`` with ``-100`` where no loss is wanted, or None.

        Returns:
            HF output with ``logits (B, E * n_tokens + S, vocab)`` and ``loss`` when labels given.
        """
        embeds, mask, prefix_len = self._fuse(signals, ecg_mask, input_ids, attention_mask)
        full_labels = None
        if labels is not None:
            if labels.shape != input_ids.shape:
                raise ModelInputError(f"labels: expected shape {tuple(input_ids.shape)}, "
                                      f"got {tuple(labels.shape)}")
            ignore = labels.new_full((labels.shape[0], prefix_len), IGNORE_INDEX)
            full_labels = torch.cat([ignore, labels], dim=1)
        return self.llm(inputs_embeds=embeds, attention_mask=mask,
                        position_ids=position_ids_from_mask(mask), labels=full_labels,
                        use_cache=False)

    # ----------------------------------------------------------------------------------------
    # generation
    # ----------------------------------------------------------------------------------------

    def _left_pad(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        """Move each row's attended tokens to the right end: ``(B, S) -> (B, S')``."""
        keep = attention_mask.bool()
        lengths = keep.sum(dim=1)
        width = max(int(lengths.max()), 1)
        ids = input_ids.new_full((input_ids.shape[0], width), int(self.tokenizer.pad_token_id))
        mask = attention_mask.new_zeros((input_ids.shape[0], width))
        for row in range(input_ids.shape[0]):
            n = int(lengths[row])
            if n:
                ids[row, width - n:] = input_ids[row][keep[row]]
                mask[row, width - n:] = 1
        return ids, mask

    @contextmanager
    def _eval_mode(self) -> Iterator[None]:
        """Eval mode for the block; the previous training/eval mode is restored after."""
        was_training = self.training
        self.eval()
        try:
            yield
        finally:
            self.train(was_training)

    @torch.no_grad()
    def generate_ids(self, signals: Tensor, ecg_mask: Tensor | None, input_ids: Tensor,
                     attention_mask: Tensor, max_new_tokens: int | None = None) -> list[list[int]]:
        """Greedy decoding; new token ids per example, cut after the first eos (excluded).

        Prompts may be right- or left-padded: they are re-packed to left padding internally.
        The model is put in eval mode for the call and its previous mode restored.
        """
        self._check_text(input_ids, attention_mask, signals.shape[0], "signals")
        with self._eval_mode():
            prefix, prefix_mask = self.ecg_prefix(signals, ecg_mask)
            return self.generate_from_prefix(prefix, prefix_mask, input_ids, attention_mask,
                                             max_new_tokens)

    @torch.no_grad()
    def generate_from_prefix(self, prefix: Tensor, prefix_mask: Tensor, input_ids: Tensor,
                             attention_mask: Tensor,
                             max_new_tokens: int | None = None) -> list[list[int]]:
        """Greedy decoding from an already computed ECG prefix (see :meth:`ecg_prefix`).

        Args:
            prefix: ``(B, P, d_llm)`` prefix embeddings.
            prefix_mask: ``(B, P)`` bool, True on attended prefix tokens.
            input_ids, attention_mask: ``(B, S)`` prompt tokens, right- or left-padded.
            max_new_tokens: decoding steps (default ``llm.max_new_tokens``).

        Returns:
            ``B`` lists of new token ids, cut before the first eos. Same result as
            :meth:`generate_ids` on the signals the prefix was computed from.
        """
        self._check_text(input_ids, attention_mask, prefix.shape[0], "prefix")
        if prefix.ndim != 3 or tuple(prefix_mask.shape) != tuple(prefix.shape[:2]):
            raise ModelInputError(f"prefix/prefix_mask: expected (B, P, d) and (B, P), got "
                                  f"{tuple(prefix.shape)} and {tuple(prefix_mask.shape)}")
        steps = int(max_new_tokens or self.cfg.llm.max_new_tokens)
        ids, mask = self._left_pad(input_ids, attention_mask)
        with self._eval_mode():
            embeds, full_mask = self._fuse_prefix(prefix.to(ids.device), prefix_mask.to(ids.device),
                                                  ids, mask)
            out = self.llm.generate(
                inputs_embeds=embeds, attention_mask=full_mask, max_new_tokens=steps,
                do_sample=False, num_beams=1, pad_token_id=int(self.tokenizer.pad_token_id),
                eos_token_id=int(self.tokenizer.eos_token_id))
        sequences = out if isinstance(out, Tensor) else out.sequences
        # with inputs_embeds and no input_ids, HF returns the new tokens only
        if sequences.shape[1] > steps:
            raise RuntimeError(f"llm.generate returned {sequences.shape[1]} tokens for "
                               f"max_new_tokens={steps}; expected new tokens only")
        eos = int(self.tokenizer.eos_token_id)
        return [row[: row.index(eos)] if eos in row else row for row in sequences.tolist()]

    def generate(self, signals: Tensor, ecg_mask: Tensor | None, input_ids: Tensor,
                 attention_mask: Tensor, max_new_tokens: int | None = None) -> list[str]:
        """Greedy answers: decoded text of the new tokens only (special tokens skipped)."""
        ids = self.generate_ids(signals, ecg_mask, input_ids, attention_mask, max_new_tokens)
        return [self.tokenizer.decode(row, skip_special_tokens=True).strip() for row in ids]

    # ----------------------------------------------------------------------------------------
    # trainable parameters
    # ----------------------------------------------------------------------------------------

    def trainable_state_dict(self) -> dict[str, Tensor]:
        """Detached copies of every ``requires_grad`` parameter (encoder if trainable, mapper,
        LoRA), keyed by module path; the keys depend on the config only."""
        return {name: param.detach().clone() for name, param in self.named_parameters()
                if param.requires_grad}

    def load_trainable_state_dict(self, state: dict[str, Tensor]) -> None:
        """Copy ``state`` into the trainable parameters; keys and shapes must match exactly.

        Raises:
            CheckpointError: missing/unexpected keys or shape mismatch (names them).
        """
        params = {name: p for name, p in self.named_parameters() if p.requires_grad}
        missing = sorted(set(params) - set(state))
        unexpected = sorted(set(state) - set(params))
        if missing or unexpected:
            raise CheckpointError(f"trainable state: missing keys {missing[:5]} "
                                  f"({len(missing)}), unexpected keys {unexpected[:5]} "
                                  f"({len(unexpected)})")
        with torch.no_grad():
            for name, param in params.items():
                value = state[name]
                if tuple(value.shape) != tuple(param.shape):
                    raise CheckpointError(f"trainable state: {name}: expected shape "
                                          f"{tuple(param.shape)}, got {tuple(value.shape)}")
                param.copy_(value.to(device=param.device, dtype=param.dtype))

    def save_trainable(self, path: str | Path) -> Path:
        """Write :meth:`trainable_state_dict` to a safetensors file (CPU tensors)."""
        file = Path(path)
        file.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.to("cpu").contiguous() for k, v in self.trainable_state_dict().items()}
        save_file(state, str(file), metadata={"format": "pt", "content": "ecglm-trainable"})
        return file

    def load_trainable(self, path: str | Path) -> None:
        """Load a file written by :meth:`save_trainable`.

        Raises:
            CheckpointError: file missing or not matching this model's trainable parameters.
        """
        file = Path(path)
        if not file.is_file():
            raise CheckpointError(f"trainable state: file not found: {file}")
        self.load_trainable_state_dict(load_file(str(file)))


def build_ecg_lm(cfg: ExperimentConfig) -> ECGLanguageModel:
    """Load the LLM (:func:`load_llm`) and build encoder + mapper seeded by ``cfg.seed``.

    The caller's RNG state is left untouched.
    """
    llm, tokenizer = load_llm(cfg.llm, cfg.lora, cfg.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return ECGLanguageModel(cfg, llm, tokenizer)
