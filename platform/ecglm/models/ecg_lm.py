"""ECG language model: ECG front end (encoder + mapper) + LoRA causal LM, joined by a fusion.

Every example carries ``E`` ECG slots (1, or 2 for comparison questions); ``ecg_mask (B, E)``
says which slots hold a real ECG. The front end (:class:`~ecglm.models.front_end.ECGFrontEnd`)
turns each ECG into ``n`` vectors of the LLM width (``n`` is whatever the mapper returns: 12
for ET-Mapper, ``L_ts + N_img`` for GEM's projector, 1 for MEIT's head tile), so the ECG side
of an example is ``prefix (B, P = E * n, d_llm)`` with ``prefix_mask (B, P)`` (0 on masked
slots). The fusion object (:mod:`ecglm.models.fusion`, chosen once by ``fusion.name``) fuses
the prefix with the text, aligns the labels and generates.

This module is also the one place an :class:`ExperimentConfig` becomes modules
(:func:`build_ecg_lm`, :func:`front_end_spec`, :func:`build_prefix_lm`,
:func:`load_front_end_from_checkpoint`, :func:`load_prefix_lm`); the classes take modules and
numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
from safetensors.torch import load_file
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase
from transformers.modeling_outputs import CausalLMOutputWithPast

from ecglm.config.schema import ExperimentConfig
from ecglm.models.dims import LLMDims, dims_from_config, llm_dims
from ecglm.models.encoders import CheckpointError
from ecglm.models.front_end import (
    COMPONENTS,
    ECGFrontEnd,
    FrontEndSpec,
    build_front_end,
)
from ecglm.models.fusion import Fusion, build_fusion, position_ids_from_mask
from ecglm.models.llm import load_llm
from ecglm.models.prefix_lm import PrefixLM, PrefixLMMethods, check_tokenizer
from ecglm.models.trainable import load_into, trainable_tensors

__all__ = ["COMPONENTS", "ECGLanguageModel", "build_ecg_lm", "build_prefix_lm",
           "front_end_spec", "load_front_end_from_checkpoint", "load_prefix_lm",
           "position_ids_from_mask"]


class ECGLanguageModel(PrefixLMMethods, nn.Module):
    """ECG front end + (LoRA-wrapped) causal LM, joined by a fusion.

    The front end's ``encoder`` and ``mapper`` are registered here directly (with the LLM as
    ``llm``), so parameter and checkpoint keys are ``encoder.*``, ``mapper.*`` and ``llm.*``;
    :attr:`front_end` is the same encoder + mapper as one module.

    Args:
        front_end: encoder + mapper (:func:`~ecglm.models.front_end.build_front_end`).
        llm: causal LM exposing ``get_input_embeddings()`` and ``generate`` (a ``PeftModel``, or
            a plain HF model for an exported, merged model).
        tokenizer: its tokenizer; must have pad and eos tokens.
        fusion: how the prefix enters the LM (:func:`~ecglm.models.fusion.build_fusion`).
        max_new_tokens: default decoding steps (``llm.max_new_tokens``).
        cfg: the experiment config the model was built from, kept as provenance (export writes
            it); None when built from modules by hand.

    Raises:
        ConfigError: no pad/eos token, or a fusion the LLM family cannot take (``kv_prefix``
            with fused-qkv families).
    """

    def __init__(self, front_end: ECGFrontEnd, llm: nn.Module,
                 tokenizer: PreTrainedTokenizerBase, fusion: Fusion, *,
                 max_new_tokens: int = 16, cfg: ExperimentConfig | None = None) -> None:
        super().__init__()
        check_tokenizer(tokenizer)
        fusion.check_llm(llm)  # fail early for unsupported families
        self.cfg = cfg
        self.d_llm = int(llm.get_input_embeddings().embedding_dim)
        if front_end.d_llm != self.d_llm:
            raise ValueError(f"front end maps to width {front_end.d_llm}, the LLM is "
                             f"{self.d_llm} wide")
        self.encoder = front_end.encoder
        self.mapper = front_end.mapper
        self.llm = llm
        self.tokenizer = tokenizer
        self.fusion = fusion
        self.max_new_tokens = int(max_new_tokens)
        # not registered: its modules are registered above (keys encoder.*/mapper.*)
        self.__dict__["_front_end"] = front_end

    @property
    def front_end(self) -> ECGFrontEnd:
        """The encoder + mapper as one module (the same parameters as ``encoder``/``mapper``)."""
        return self.__dict__["_front_end"]

    @property
    def n_tokens(self) -> int:
        """Nominal prefix tokens per ECG (the mapper's ``n_tokens`` when it has one, else
        ``mapper.n_tokens`` of the spec). Informational only: the model always uses the
        mapper's output."""
        spec = self.front_end.spec
        return int(getattr(self.mapper, "n_tokens", spec.mapper.n_tokens if spec else 0))

    def enable_gradient_checkpointing(self) -> None:
        """Recompute the LLM's decoder-layer activations in the backward pass (every fusion).

        Uses HF's ``activation_checkpointing_enable`` (the non-deprecated name of
        ``gradient_checkpointing_enable`` in transformers 5) with ``use_reentrant=False``;
        it also calls ``enable_input_require_grads``. With non-reentrant checkpointing,
        gradients reach tensors a layer reads without taking them as inputs (the ECG prefix),
        so loss and gradients equal those without checkpointing. kv_prefix first marks its
        layers as able to keep the read-only prefix cache (:meth:`Fusion.prepare_checkpointing`):
        the recompute rebuilds each layer's prefix keys/values. Active in training mode only.
        The ECG encoder and mapper are not checkpointed (they are small).
        """
        self.fusion.prepare_checkpointing(self.llm)
        get_base = getattr(self.llm, "get_base_model", None)
        base = get_base() if callable(get_base) else self.llm
        base.activation_checkpointing_enable(
            activation_checkpointing_kwargs={"use_reentrant": False})

    def train(self, mode: bool = True) -> "ECGLanguageModel":
        """Like :meth:`nn.Module.train`, but batch-norm layers of frozen ECG-side parts stay in
        eval mode (:meth:`ECGFrontEnd.train`), so their running statistics never change."""
        super().train(mode)
        self.front_end.train(mode)
        return self

    def ecg_prefix(self, signals: Tensor, ecg_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Encode ECG slots into prefix vectors (used by every fusion).

        Args:
            signals: ``(B, E, 12, T)`` float, mV.
            ecg_mask: ``(B, E)`` bool, True where the slot holds a real ECG (default: all).

        Returns:
            ``prefix (B, E * n, d_llm)`` in the LLM embedding dtype (zeros on masked slots)
            and ``prefix_mask (B, E * n)`` bool.
        """
        prefix, prefix_mask = self.front_end(signals, ecg_mask)
        return prefix.to(self.embed_dtype), prefix_mask

    def forward(self, signals: Tensor, ecg_mask: Tensor | None, input_ids: Tensor,
                attention_mask: Tensor, labels: Tensor | None = None,
                prefix_at: Tensor | None = None) -> CausalLMOutputWithPast:
        """Causal LM over the ECG prefix and the text: :meth:`ecg_prefix` then
        :meth:`forward_from_prefix` (see there for arguments and logits shapes)."""
        self._check_text(input_ids, attention_mask, signals.shape[0], "signals")
        prefix, prefix_mask = self.ecg_prefix(signals, ecg_mask)
        return self.forward_from_prefix(prefix, prefix_mask, input_ids, attention_mask, labels,
                                        prefix_at)

    @torch.no_grad()
    def generate_ids(self, signals: Tensor, ecg_mask: Tensor | None, input_ids: Tensor,
                     attention_mask: Tensor, max_new_tokens: int | None = None, *,
                     prefix_at: Tensor | None = None) -> list[list[int]]:
        """Greedy decoding; new token ids per example, cut after the first eos (excluded).
        See :meth:`generate_from_prefix` (same result from the prefix of ``signals``)."""
        self._check_text(input_ids, attention_mask, signals.shape[0], "signals")
        with self._eval_mode():
            prefix, prefix_mask = self.ecg_prefix(signals, ecg_mask)
            return self.generate_from_prefix(prefix, prefix_mask, input_ids, attention_mask,
                                             max_new_tokens, prefix_at=prefix_at)

    def generate(self, signals: Tensor, ecg_mask: Tensor | None, input_ids: Tensor,
                 attention_mask: Tensor, max_new_tokens: int | None = None, *,
                 prefix_at: Tensor | None = None) -> list[str]:
        """Greedy answers: decoded text of the new tokens only (special tokens skipped)."""
        return self.decode(self.generate_ids(signals, ecg_mask, input_ids, attention_mask,
                                             max_new_tokens, prefix_at=prefix_at))

    @torch.no_grad()
    def score(self, signals: Tensor, ecg_mask: Tensor | None, input_ids: Tensor,
              attention_mask: Tensor, continuations: Tensor, cont_mask: Tensor, *,
              prefix_at: Tensor | None = None) -> Tensor:
        """Summed log-probability ``(N,)`` of each candidate answer ``continuations (N, L)``
        after one prompt: ``signals (1, E, 12, T)`` mV and ``input_ids (1, S)`` (see
        :meth:`score_from_prefix`)."""
        self._check_text(input_ids, attention_mask, signals.shape[0], "signals")
        with self._eval_mode():
            prefix, prefix_mask = self.ecg_prefix(signals, ecg_mask)
            return self.score_from_prefix(prefix, prefix_mask, input_ids, attention_mask,
                                          continuations, cont_mask, prefix_at=prefix_at)

    # ----------------------------------------------------------------------------------------
    # trainable state (checkpoints)
    # ----------------------------------------------------------------------------------------

    def trainable_state_dict(self) -> dict[str, Tensor]:
        """Detached copies of every ``requires_grad`` parameter (encoder if trainable, mapper,
        LoRA; never a frozen image tower or the frozen LLM) plus the running statistics of
        trained batch-norm layers, keyed by module path; the keys depend on the config only."""
        return {name: t.detach().clone()
                for name, t in trainable_tensors(self, COMPONENTS).items()}

    def load_trainable_state_dict(self, state: dict[str, Tensor]) -> None:
        """Copy ``state`` into the trainable tensors; keys and shapes must match exactly.

        Raises:
            CheckpointError: missing/unexpected keys or shape mismatch (names them).
        """
        load_into(trainable_tensors(self, COMPONENTS), state)


# --------------------------------------------------------------------------------------------
# ExperimentConfig -> modules (the one place)
# --------------------------------------------------------------------------------------------

def front_end_spec(cfg: ExperimentConfig, dims: LLMDims) -> FrontEndSpec:
    """The front end's sections and numbers from ``cfg`` and the LLM geometry ``dims``."""
    return FrontEndSpec(encoder=cfg.encoder, mapper=cfg.mapper, fs=float(cfg.data.fs),
                        dims=dims, cache_dir=str(cfg.llm.cache_dir))


def _llm_dims_of(llm: nn.Module) -> LLMDims:
    get_base = getattr(llm, "get_base_model", None)
    return dims_from_config((get_base() if callable(get_base) else llm).config)


def build_ecg_lm(cfg: ExperimentConfig, *,
                 ds_config: Optional[dict[str, Any]] = None) -> ECGLanguageModel:
    """Load the LLM (:func:`load_llm`) and build encoder + mapper seeded by ``cfg.seed``.

    Args:
        ds_config: the DeepSpeed config of the run (``ecglm.train.strategies``); when its
            ZeRO stage is 3 the LLM is built partitioned inside ``deepspeed.zero.Init`` and
            loaded shard by shard, so no rank holds the full model
            (:mod:`ecglm.models.zero3_load`). Collective then: every rank calls it, with
            ``torch.distributed`` initialised (``deepspeed.comm`` is initialised on top of it
            here if needed). The ECG front end (encoder + mapper, small) is built normally on
            every rank from ``cfg.seed`` (identical on all ranks); ``deepspeed.initialize``
            partitions it later with the LoRA adapters.

    The caller's RNG state is left untouched.
    """
    llm, tokenizer = load_llm(cfg.llm, cfg.lora, cfg.seed, ds_config=ds_config)
    fusion = build_fusion(cfg.fusion)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        check_tokenizer(tokenizer)
        fusion.check_llm(llm)
        front_end = build_front_end(front_end_spec(cfg, _llm_dims_of(llm)))
        return ECGLanguageModel(front_end, llm, tokenizer, fusion,
                                max_new_tokens=cfg.llm.max_new_tokens, cfg=cfg)


def build_prefix_lm(cfg: ExperimentConfig) -> PrefixLM:
    """The LLM side alone: LLM + LoRA (:func:`load_llm`) + fusion, no encoder or mapper."""
    llm, tokenizer = load_llm(cfg.llm, cfg.lora, cfg.seed)
    return PrefixLM(llm, tokenizer, build_fusion(cfg.fusion), cfg.llm.max_new_tokens)


def load_prefix_lm(cfg: ExperimentConfig, trainable_file: str | Path) -> PrefixLM:
    """:func:`build_prefix_lm` with the ``llm.*`` (LoRA) tensors of a trainable checkpoint
    file loaded (the ``trainable.safetensors`` of a checkpoint folder); eval mode."""
    side = build_prefix_lm(cfg)
    side.load_llm_state(trainable_file)
    return side.eval()


def load_front_end_from_checkpoint(cfg: ExperimentConfig,
                                   trainable_file: str | Path) -> ECGFrontEnd:
    """The front end of a trained model without its LLM: built seeded by ``cfg.seed`` (the
    weights :func:`build_ecg_lm` gives the parts a checkpoint does not hold: a frozen
    encoder), sized by the LLM's ``config.json`` only (:func:`llm_dims`, no weights), then the
    ``encoder.*``/``mapper.*`` tensors of the checkpoint file loaded; eval mode.

    Raises:
        CheckpointError: file missing or its ECG-side keys do not match exactly.
    """
    file = Path(trainable_file)
    if not file.is_file():
        raise CheckpointError(f"trainable state: file not found: {file}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        front_end = build_front_end(front_end_spec(cfg, llm_dims(cfg.llm)))
    state = {k: v for k, v in load_file(str(file)).items()
             if k.split(".", 1)[0] in COMPONENTS}
    load_into(trainable_tensors(front_end, COMPONENTS), state)
    return front_end.eval()
