"""Sizes of the configured LLM, read from its Hugging Face config (no weights loaded).

Encoders and mappers that must match the LLM (MEIT's head-dimension encoder and ``head_tile``)
size themselves from :func:`llm_dims`.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import AutoConfig, PretrainedConfig

from ecglm.config.schema import ConfigError, LLMConfig
from ecglm.models.llm import prepare_llm_dir


@dataclass(frozen=True)
class LLMDims:
    """Attention geometry of a causal LM.

    Attributes:
        hidden_size: model width ``d_llm``.
        n_heads: query heads.
        n_kv_heads: key/value heads (``== n_heads`` without grouped-query attention).
        head_dim: width of one head.
        n_layers: decoder layers.
        model_type: HF ``model_type`` (``llama``, ``gpt2``, ...).
    """

    hidden_size: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    n_layers: int
    model_type: str


def dims_from_config(config: PretrainedConfig) -> LLMDims:
    """:class:`LLMDims` of a HF config (its text config for multimodal models).

    ``head_dim`` is ``config.head_dim`` when the model family sets it, else
    ``hidden_size / n_heads``; ``n_kv_heads`` is ``num_key_value_heads`` when the family has
    grouped-query attention, else ``n_heads``.

    Raises:
        ConfigError: ``n_heads`` does not divide ``hidden_size`` and no ``head_dim`` is set.
    """
    text = config.get_text_config()
    values = text.to_dict()
    hidden = int(text.hidden_size)
    n_heads = int(text.num_attention_heads)
    kv = values.get("num_key_value_heads")  # absent in families without GQA (e.g. GPT-2)
    head_dim = values.get("head_dim")
    if head_dim is None:
        if hidden % n_heads != 0:
            raise ConfigError(f"llm: hidden_size {hidden} is not divisible by "
                              f"num_attention_heads {n_heads} and the config sets no head_dim")
        head_dim = hidden // n_heads
    return LLMDims(hidden_size=hidden, n_heads=n_heads,
                   n_kv_heads=n_heads if kv is None else int(kv), head_dim=int(head_dim),
                   n_layers=int(text.num_hidden_layers), model_type=str(config.model_type))


def llm_dims(llm_cfg: LLMConfig) -> LLMDims:
    """Prepare the LLM folder (:func:`~ecglm.models.llm.prepare_llm_dir`, written once for
    ``smollm2``/``tiny``) and read its dimensions from ``config.json``."""
    folder = prepare_llm_dir(llm_cfg)
    return dims_from_config(AutoConfig.from_pretrained(str(folder)))
