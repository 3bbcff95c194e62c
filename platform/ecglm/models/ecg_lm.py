"""ECG language model: ECG encoder + mapper + LoRA causal LM, with two fusions.

Every example carries ``E`` ECG slots (1, or 2 for comparison questions); ``ecg_mask (B, E)``
says which slots hold a real ECG. The mapper turns each ECG into ``n`` vectors of the LLM width
(``n`` is whatever the mapper returns: 12 for ET-Mapper, ``L_ts + N_img`` for GEM's projector,
1 for MEIT's head tile), so the ECG side of an example is ``prefix (B, P = E * n, d_llm)`` with
``prefix_mask (B, P)`` (0 on masked slots).

Fusions (``fusion.name``, see :mod:`ecglm.models.fusion`):

* ``input_prefix``: the prefix joins the text embeddings, before the text (``position:
  prepend``) or at ``prefix_at (B,)``, the index in ``input_ids`` where the prompt held
  ``fusion.placeholder`` (:func:`ecglm.models.fusion.split_at_placeholder`). The LM runs on the
  fused ``(B, P + S)`` sequence; logits cover it.
* ``kv_prefix`` (MEIT): the prefix becomes per-layer keys/values (a cache) the text attends to;
  the LM runs on the ``S`` text tokens only; logits cover the text.

Position ids are the running count of attended tokens (``cumsum(attention_mask) - 1``) over
the fused/full mask, the rule Hugging Face ``generate`` uses, so training, scoring and
generation agree whatever the padding layout and however many ECG slots are masked.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformers import DynamicCache, PreTrainedTokenizerBase
from transformers.modeling_outputs import CausalLMOutputWithPast

from ecglm.config.schema import ConfigError, ExperimentConfig
from ecglm.models.dims import dims_from_config
from ecglm.models.encoders import N_LEADS, CheckpointError, ModelInputError, build_encoder
from ecglm.models.fusion import (
    build_kv_prefix_cache,
    check_prefix_at,
    greedy_with_cache,
    kv_prefix_modules,
    left_pad,
    left_pad_prefix_at,
    splice,
    text_index,
)
from ecglm.models.llm import load_llm
from ecglm.models.mappers import build_mapper
from ecglm.models.prompting import IGNORE_INDEX

COMPONENTS = ("encoder", "mapper")
"""Top-level ECG-side sub-modules (their trained buffers are checkpointed with the weights)."""


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """``(B, S)`` 0/1 mask -> ``(B, S)`` positions counting attended tokens only (0 on pads)."""
    mask = attention_mask.long()
    return (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)


class ECGLanguageModel(nn.Module):
    """ECG encoder + mapper + (LoRA-wrapped) causal LM.

    Args:
        cfg: full experiment config (``encoder``, ``mapper``, ``fusion``, ``llm``, ``data.fs``).
        llm: causal LM exposing ``get_input_embeddings()`` and ``generate`` (a ``PeftModel``, or
            a plain HF model for an exported, merged model).
        tokenizer: its tokenizer; must have pad and eos tokens.

    Raises:
        ConfigError: no pad/eos token, or ``kv_prefix`` with an LLM family it cannot handle.
    """

    def __init__(self, cfg: ExperimentConfig, llm: nn.Module,
                 tokenizer: PreTrainedTokenizerBase) -> None:
        super().__init__()
        if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
            raise ConfigError("llm: tokenizer needs pad and eos tokens (use load_llm)")
        if cfg.fusion.name == "kv_prefix":
            kv_prefix_modules(llm)  # fail early for unsupported families
        self.cfg = cfg
        self.d_llm = int(llm.get_input_embeddings().embedding_dim)
        get_base = getattr(llm, "get_base_model", None)
        dims = dims_from_config((get_base() if callable(get_base) else llm).config)
        self.encoder = build_encoder(cfg.encoder, fs=cfg.data.fs, llm_head_dim=dims.head_dim,
                                     cache_dir=cfg.llm.cache_dir)
        self.mapper = build_mapper(cfg.mapper, self.encoder, self.d_llm,
                                   llm_n_heads=dims.n_heads)
        self.llm = llm
        self.tokenizer = tokenizer

    @property
    def n_tokens(self) -> int:
        """Nominal prefix tokens per ECG (the mapper's ``n_tokens`` when it has one, else
        ``mapper.n_tokens``). Informational only: the model always uses the mapper's output."""
        return int(getattr(self.mapper, "n_tokens", self.cfg.mapper.n_tokens))

    @property
    def fusion(self) -> str:
        """``input_prefix`` or ``kv_prefix``."""
        return self.cfg.fusion.name

    # ----------------------------------------------------------------------------------------
    # train/eval mode, frozen parts
    # ----------------------------------------------------------------------------------------

    def _trained(self, module: nn.Module, component: nn.Module) -> bool:
        """Whether ``module`` (inside ``component``) is trained: its own parameters require
        grad, or (a parameter-free module) some parameter of ``component`` does."""
        own = list(module.parameters(recurse=False))
        if own:
            return any(p.requires_grad for p in own)
        return any(p.requires_grad for p in component.parameters())

    def train(self, mode: bool = True) -> "ECGLanguageModel":
        """Like :meth:`nn.Module.train`, but batch-norm layers of frozen ECG-side parts stay in
        eval mode, so their running statistics (not checkpointed) never change."""
        super().train(mode)
        if mode:
            for name in COMPONENTS:
                component = getattr(self, name)
                for module in component.modules():
                    if (isinstance(module, nn.modules.batchnorm._BatchNorm)
                            and not self._trained(module, component)):
                        module.eval()
        return self

    # ----------------------------------------------------------------------------------------
    # prefix
    # ----------------------------------------------------------------------------------------

    def ecg_prefix(self, signals: Tensor, ecg_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Encode ECG slots into prefix vectors (used by both fusions).

        Args:
            signals: ``(B, E, 12, T)`` float, mV.
            ecg_mask: ``(B, E)`` bool, True where the slot holds a real ECG (default: all).

        Returns:
            ``prefix (B, E * n, d_llm)`` in the LLM embedding dtype (zeros on masked slots),
            ``n`` = tokens per ECG returned by the mapper, and ``prefix_mask (B, E * n)`` bool.
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
        if tokens.ndim != 3 or tokens.shape[2] != self.d_llm:
            raise ModelInputError(f"mapper output: expected shape (N, n, {self.d_llm}), "
                                  f"got {tuple(tokens.shape)}")
        per_ecg = tokens.shape[1]
        tokens = tokens * valid.to(tokens.dtype)[:, None, None]
        prefix = tokens.reshape(batch, n_ecg * per_ecg, self.d_llm).to(dtype)
        prefix_mask = valid.reshape(batch, n_ecg).repeat_interleave(per_ecg, dim=1)
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

    @staticmethod
    def _check_prefix(prefix: Tensor, prefix_mask: Tensor) -> None:
        if prefix.ndim != 3 or tuple(prefix_mask.shape) != tuple(prefix.shape[:2]):
            raise ModelInputError(f"prefix/prefix_mask: expected (B, P, d) and (B, P), got "
                                  f"{tuple(prefix.shape)} and {tuple(prefix_mask.shape)}")

    def _prefix_at(self, prefix_at: Tensor | None, input_ids: Tensor) -> Tensor | None:
        """Validate ``prefix_at`` against the fusion config; None means prepend."""
        fusion = self.cfg.fusion
        if fusion.name == "kv_prefix":
            if prefix_at is not None:
                raise ModelInputError("prefix_at: must be None with fusion.name=kv_prefix (the "
                                      "ECG is a key/value prefix, not a text position)")
            return None
        if prefix_at is None:
            if fusion.position == "placeholder":
                raise ModelInputError(f"prefix_at: required with fusion.position=placeholder "
                                      f"(index of {fusion.placeholder!r} in input_ids, see "
                                      f"ecglm.models.fusion.split_at_placeholder)")
            return None
        return check_prefix_at(prefix_at.to(input_ids.device), input_ids.shape[0],
                               input_ids.shape[1])

    def _fuse_prefix(self, prefix: Tensor, prefix_mask: Tensor, input_ids: Tensor,
                     attention_mask: Tensor, prefix_at: Tensor | None
                     ) -> tuple[Tensor, Tensor]:
        """input_prefix: ``prefix (B, P, d)`` + text embeddings ``(B, S, d)`` ->
        ``(inputs_embeds (B, P+S, d), attention_mask (B, P+S))`` (prefix first, or spliced in
        at ``prefix_at``)."""
        text = self.llm.get_input_embeddings()(input_ids)
        prefix_mask = prefix_mask.to(device=attention_mask.device, dtype=attention_mask.dtype)
        if prefix_at is None:
            embeds = torch.cat([prefix.to(text.dtype), text], dim=1)
            mask = torch.cat([prefix_mask, attention_mask], dim=1)
        else:
            embeds = splice(text, prefix.to(text.dtype), prefix_at)
            mask = splice(attention_mask, prefix_mask, prefix_at)
        return embeds, mask

    def _full_labels(self, labels: Tensor | None, input_ids: Tensor, n_prefix: int,
                     prefix_at: Tensor | None) -> Tensor | None:
        """Labels over the fused sequence: ``-100`` on the prefix (input_prefix only)."""
        if labels is None:
            return None
        if labels.shape != input_ids.shape:
            raise ModelInputError(f"labels: expected shape {tuple(input_ids.shape)}, "
                                  f"got {tuple(labels.shape)}")
        if self.fusion == "kv_prefix":
            return labels
        ignore = labels.new_full((labels.shape[0], n_prefix), IGNORE_INDEX)
        if prefix_at is None:
            return torch.cat([ignore, labels], dim=1)
        return splice(labels, ignore, prefix_at)

    def _kv_cache(self, prefix: Tensor, prefix_mask: Tensor) -> DynamicCache:
        """kv_prefix: per-layer keys/values of the prefix at positions counting attended
        prefix slots (``0..P-1`` when all are real)."""
        modules = kv_prefix_modules(self.llm)
        if self.training and modules.checkpointing_drops_cache:
            raise ConfigError("fusion.name=kv_prefix: Hugging Face gradient checkpointing drops "
                              "past_key_values (the ECG key/value prefix) in training; disable "
                              "gradient checkpointing on the LLM")
        return build_kv_prefix_cache(modules, prefix, position_ids_from_mask(prefix_mask))

    # ----------------------------------------------------------------------------------------
    # training / scoring
    # ----------------------------------------------------------------------------------------

    def forward(self, signals: Tensor, ecg_mask: Tensor | None, input_ids: Tensor,
                attention_mask: Tensor, labels: Tensor | None = None,
                prefix_at: Tensor | None = None) -> CausalLMOutputWithPast:
        """Causal LM over the ECG prefix and the text.

        Args:
            signals: ``(B, E, 12, T)`` mV; ecg_mask: ``(B, E)`` bool.
            input_ids, attention_mask: ``(B, S)`` text tokens (right padding).
            labels: ``(B, S)`` with ``-100`` where no loss is wanted, or None.
            prefix_at: ``(B,)`` long, input_prefix only: index in ``input_ids`` the ECG tokens
                are inserted before (required with ``fusion.position: placeholder``; None:
                prepend).

        Returns:
            HF output with ``loss`` when labels given and ``logits``: input_prefix
            ``(B, P + S, vocab)`` over the fused sequence, kv_prefix ``(B, S, vocab)`` over the
            text (:meth:`text_logits` gives ``(B, S, vocab)`` for both).
        """
        self._check_text(input_ids, attention_mask, signals.shape[0], "signals")
        prefix, prefix_mask = self.ecg_prefix(signals, ecg_mask)
        return self.forward_from_prefix(prefix, prefix_mask, input_ids, attention_mask, labels,
                                        prefix_at)

    def forward_from_prefix(self, prefix: Tensor, prefix_mask: Tensor, input_ids: Tensor,
                            attention_mask: Tensor, labels: Tensor | None = None,
                            prefix_at: Tensor | None = None) -> CausalLMOutputWithPast:
        """:meth:`forward` from an already computed ``prefix (B, P, d)``/``prefix_mask (B, P)``."""
        self._check_text(input_ids, attention_mask, prefix.shape[0], "prefix")
        self._check_prefix(prefix, prefix_mask)
        at = self._prefix_at(prefix_at, input_ids)
        full_labels = self._full_labels(labels, input_ids, prefix.shape[1], at)
        if self.fusion == "kv_prefix":
            cache = self._kv_cache(prefix, prefix_mask)
            mask = torch.cat([prefix_mask.to(device=attention_mask.device,
                                             dtype=attention_mask.dtype), attention_mask], dim=1)
            positions = position_ids_from_mask(mask)[:, prefix.shape[1]:]
            return self.llm(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                            past_key_values=cache, labels=full_labels, use_cache=False)
        embeds, mask = self._fuse_prefix(prefix, prefix_mask, input_ids, attention_mask, at)
        return self.llm(inputs_embeds=embeds, attention_mask=mask,
                        position_ids=position_ids_from_mask(mask), labels=full_labels,
                        use_cache=False)

    def text_logits(self, logits: Tensor, input_ids: Tensor,
                    prefix_at: Tensor | None = None) -> Tensor:
        """Logits at the text positions, ``(B, S, vocab)``, from :meth:`forward`'s ``logits``
        (``(B, P + S, vocab)`` for input_prefix with the prefix first or at ``prefix_at``;
        ``(B, S, vocab)`` for kv_prefix, returned as is)."""
        batch, n_text = input_ids.shape
        n_prefix = logits.shape[1] - n_text
        if n_prefix == 0:
            return logits
        index = text_index(prefix_at, n_prefix, n_text, batch, logits.device)
        return logits.gather(1, index[:, :, None].expand(batch, n_text, logits.shape[2]))

    # ----------------------------------------------------------------------------------------
    # generation
    # ----------------------------------------------------------------------------------------

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
                     attention_mask: Tensor, max_new_tokens: int | None = None, *,
                     prefix_at: Tensor | None = None) -> list[list[int]]:
        """Greedy decoding; new token ids per example, cut after the first eos (excluded).

        Prompts may be right- or left-padded: they are re-packed to left padding internally
        (``prefix_at`` indexes the ``input_ids`` given here). The model is put in eval mode for
        the call and its previous mode restored.
        """
        self._check_text(input_ids, attention_mask, signals.shape[0], "signals")
        with self._eval_mode():
            prefix, prefix_mask = self.ecg_prefix(signals, ecg_mask)
            return self.generate_from_prefix(prefix, prefix_mask, input_ids, attention_mask,
                                             max_new_tokens, prefix_at=prefix_at)

    @torch.no_grad()
    def generate_from_prefix(self, prefix: Tensor, prefix_mask: Tensor, input_ids: Tensor,
                             attention_mask: Tensor, max_new_tokens: int | None = None, *,
                             prefix_at: Tensor | None = None) -> list[list[int]]:
        """Greedy decoding from an already computed ECG prefix (see :meth:`ecg_prefix`), for
        both fusions.

        Args:
            prefix: ``(B, P, d_llm)`` prefix vectors.
            prefix_mask: ``(B, P)`` bool, True on attended prefix tokens.
            input_ids, attention_mask: ``(B, S)`` prompt tokens, right- or left-padded.
            max_new_tokens: decoding steps (default ``llm.max_new_tokens``).
            prefix_at: ``(B,)`` long, input_prefix only: index in ``input_ids`` the ECG tokens
                go before (required with ``fusion.position: placeholder``).

        Returns:
            ``B`` lists of new token ids, cut before the first eos. Same result as
            :meth:`generate_ids` on the signals the prefix was computed from.
        """
        self._check_text(input_ids, attention_mask, prefix.shape[0], "prefix")
        self._check_prefix(prefix, prefix_mask)
        at = self._prefix_at(prefix_at, input_ids)
        steps = int(max_new_tokens or self.cfg.llm.max_new_tokens)
        ids, mask = left_pad(input_ids, attention_mask, int(self.tokenizer.pad_token_id))
        if at is not None:
            at = left_pad_prefix_at(at, attention_mask, ids.shape[1])
        prefix, prefix_mask = prefix.to(ids.device), prefix_mask.to(ids.device)
        with self._eval_mode():
            if self.fusion == "kv_prefix":
                rows = self._greedy_kv(prefix, prefix_mask, ids, mask, steps)
            else:
                rows = self._greedy_embeds(prefix, prefix_mask, ids, mask, at, steps)
        eos = int(self.tokenizer.eos_token_id)
        return [row[: row.index(eos)] if eos in row else row for row in rows]

    def _greedy_embeds(self, prefix: Tensor, prefix_mask: Tensor, ids: Tensor, mask: Tensor,
                       at: Tensor | None, steps: int) -> list[list[int]]:
        """input_prefix: HF ``generate`` (greedy) on the fused left-padded embeddings."""
        embeds, full_mask = self._fuse_prefix(prefix, prefix_mask, ids, mask, at)
        out = self.llm.generate(
            inputs_embeds=embeds, attention_mask=full_mask, max_new_tokens=steps,
            do_sample=False, num_beams=1, pad_token_id=int(self.tokenizer.pad_token_id),
            eos_token_id=int(self.tokenizer.eos_token_id))
        sequences = out if isinstance(out, Tensor) else out.sequences
        # with inputs_embeds and no input_ids, HF returns the new tokens only
        if sequences.shape[1] > steps:
            raise RuntimeError(f"llm.generate returned {sequences.shape[1]} tokens for "
                               f"max_new_tokens={steps}; expected new tokens only")
        return sequences.tolist()

    def _greedy_kv(self, prefix: Tensor, prefix_mask: Tensor, ids: Tensor, mask: Tensor,
                   steps: int) -> list[list[int]]:
        """kv_prefix: greedy decoding over the LM, continuing the ECG key/value cache."""
        cache = self._kv_cache(prefix, prefix_mask)
        full_mask = torch.cat([prefix_mask.to(mask.dtype), mask], dim=1)
        positions = position_ids_from_mask(full_mask)[:, prefix.shape[1]:]
        return greedy_with_cache(self.llm, cache, ids, full_mask, positions, steps,
                                 int(self.tokenizer.eos_token_id))

    def generate(self, signals: Tensor, ecg_mask: Tensor | None, input_ids: Tensor,
                 attention_mask: Tensor, max_new_tokens: int | None = None, *,
                 prefix_at: Tensor | None = None) -> list[str]:
        """Greedy answers: decoded text of the new tokens only (special tokens skipped)."""
        ids = self.generate_ids(signals, ecg_mask, input_ids, attention_mask, max_new_tokens,
                                prefix_at=prefix_at)
        return [self.tokenizer.decode(row, skip_special_tokens=True).strip() for row in ids]

    # ----------------------------------------------------------------------------------------
    # trainable state (checkpoints)
    # ----------------------------------------------------------------------------------------

    def _trained_buffers(self) -> dict[str, Tensor]:
        """Persistent buffers of trained ECG-side modules (batch-norm running statistics of a
        trained encoder/mapper), keyed by module path."""
        out: dict[str, Tensor] = {}
        for name in COMPONENTS:
            component = getattr(self, name)
            for mod_name, module in component.named_modules():
                if not self._trained(module, component):
                    continue
                skip = getattr(module, "_non_persistent_buffers_set", set())
                for buf_name, buf in module.named_buffers(recurse=False):
                    if buf is not None and buf_name not in skip:
                        key = ".".join(p for p in (name, mod_name, buf_name) if p)
                        out[key] = buf
        return out

    def _trainable_tensors(self) -> dict[str, Tensor]:
        tensors: dict[str, Tensor] = {name: p for name, p in self.named_parameters()
                                      if p.requires_grad}
        tensors.update(self._trained_buffers())
        return tensors

    def trainable_state_dict(self) -> dict[str, Tensor]:
        """Detached copies of every ``requires_grad`` parameter (encoder if trainable, mapper,
        LoRA; never a frozen image tower or the frozen LLM) plus the running statistics of
        trained batch-norm layers, keyed by module path; the keys depend on the config only."""
        return {name: t.detach().clone() for name, t in self._trainable_tensors().items()}

    def load_trainable_state_dict(self, state: dict[str, Tensor]) -> None:
        """Copy ``state`` into the trainable tensors; keys and shapes must match exactly.

        Raises:
            CheckpointError: missing/unexpected keys or shape mismatch (names them).
        """
        tensors = self._trainable_tensors()
        missing = sorted(set(tensors) - set(state))
        unexpected = sorted(set(state) - set(tensors))
        if missing or unexpected:
            raise CheckpointError(f"trainable state: missing keys {missing[:5]} "
                                  f"({len(missing)}), unexpected keys {unexpected[:5]} "
                                  f"({len(unexpected)})")
        with torch.no_grad():
            for name, tensor in tensors.items():
                value = state[name]
                if tuple(value.shape) != tuple(tensor.shape):
                    raise CheckpointError(f"trainable state: {name}: expected shape "
                                          f"{tuple(tensor.shape)}, got {tuple(value.shape)}")
                tensor.copy_(value.to(device=tensor.device, dtype=tensor.dtype))

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
