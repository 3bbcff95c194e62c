"""LLM architecture for memory planning: geometry and exact parameter counts, no weights.

The geometry comes from a Hugging Face ``config.json`` (``transformers.AutoConfig``; for
``llm.source: smollm2 | tiny`` the folder is prepared once by
:func:`ecglm.models.llm.prepare_llm_dir`) or from a built-in architecture
(:data:`BUILTIN_ARCHS`: ``llama-1b``, ``llama-8b``, ``llama-70b``), so a 70B plan needs no
download. Counts are closed-form for the Llama family (Llama, Mistral, Qwen2-style decoders:
``q/k/v/o_proj`` + ``gate/up/down_proj`` + RMSNorms); ``tests/plan`` checks them against the
model built on PyTorch's ``meta`` device with peft's LoRA attached.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from transformers import AutoConfig, PretrainedConfig

from ecglm.config.schema import ConfigError, LLMConfig, LoRAConfig
from ecglm.models.llm import ALL_LINEAR, prepare_llm_dir
from ecglm.models.params import LLM_REFERENCE_CONFIGS

_NO_BIAS = dict(attention_bias=False, mlp_bias=False)
BUILTIN_ARCHS: Mapping[str, Mapping[str, Any]] = {
    # the 1B and 8B shapes are the presets' LLMs (Llama-3.1-8B has Llama-3-8B's shape)
    "llama-1b": {**LLM_REFERENCE_CONFIGS["meta-llama/Llama-3.2-1B-Instruct"], **_NO_BIAS},
    "llama-8b": {**LLM_REFERENCE_CONFIGS["meta-llama/Meta-Llama-3-8B-Instruct"], **_NO_BIAS},
    "llama-70b": dict(  # meta-llama/Llama-3.1-70B config.json
        model_type="llama", vocab_size=128256, hidden_size=8192, intermediate_size=28672,
        num_hidden_layers=80, num_attention_heads=64, num_key_value_heads=8, head_dim=128,
        tie_word_embeddings=False, **_NO_BIAS),
}
"""Built-in architectures (HF ``LlamaConfig`` keyword arguments from the public
``config.json`` files) for planning without weights: ``ecglm plan --model llama-8b`` or
``llm.source=path llm.path=llama-8b``."""

LLAMA_FAMILY = ("llama", "mistral", "qwen2", "qwen3")
"""``model_type`` values whose decoder layer is Llama's (the closed-form counts apply)."""
ATTN_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_MODULES = ("gate_proj", "up_proj", "down_proj")


class ArchError(ConfigError):
    """The LLM architecture cannot be planned (unknown family or built-in name)."""


@dataclass(frozen=True)
class LLMArch:
    """Geometry of a Llama-family causal LM.

    Attributes:
        vocab_size: ``V``, rows of the embedding and the output head.
        hidden_size: ``h``.
        intermediate_size: ``i``, the SwiGLU MLP width.
        n_layers: ``L`` decoder layers.
        n_heads: ``a`` query heads.
        n_kv_heads: key/value heads (grouped-query attention).
        head_dim: ``d``, width of one head.
        tie_word_embeddings: output head shares the embedding matrix.
        attention_bias: ``q/k/v/o_proj`` have biases.
        mlp_bias: ``gate/up/down_proj`` have biases.
        name: where it came from (built-in name or folder).
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    tie_word_embeddings: bool
    attention_bias: bool = False
    mlp_bias: bool = False
    name: str = ""

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """``{module: (in_features, out_features)}`` of one decoder layer's linears."""
        h, i, q, kv = (self.hidden_size, self.intermediate_size, self.n_heads * self.head_dim,
                       self.n_kv_heads * self.head_dim)
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    def layer_params(self) -> int:
        """Parameters of one decoder layer: 7 linears (+ biases) and 2 RMSNorm weights."""
        total = 0
        for name, (fan_in, fan_out) in self.linear_shapes().items():
            bias = self.attention_bias if name in ATTN_MODULES else self.mlp_bias
            total += fan_in * fan_out + (fan_out if bias else 0)
        return total + 2 * self.hidden_size

    def params(self) -> int:
        """All base parameters: embedding ``V h`` + ``L`` layers + final norm ``h`` + output
        head ``V h`` (absent when tied)."""
        embed = self.vocab_size * self.hidden_size
        head = 0 if self.tie_word_embeddings else embed
        return embed + self.n_layers * self.layer_params() + self.hidden_size + head

    def largest_layer(self) -> int:
        """Parameters of the largest single module (DeepSpeed's "largest layer": the embedding
        or output head ``V h`` for every Llama; else the widest linear)."""
        linear = max(a * b for a, b in self.linear_shapes().values())
        return max(self.vocab_size * self.hidden_size, linear)


def lora_modules(lora: LoRAConfig) -> tuple[str, ...]:
    """Decoder-layer linears that get LoRA adapters: ``all-linear`` is every linear of the
    layer (peft excludes the output head), else the named ones that exist in a Llama layer.

    Raises:
        ArchError: a target module name that no Llama layer has.
    """
    names = list(lora.target_modules)
    if names == [ALL_LINEAR]:
        return ATTN_MODULES + MLP_MODULES
    unknown = [n for n in names if n not in ATTN_MODULES + MLP_MODULES]
    if unknown:
        raise ArchError(f"lora.target_modules: the planner knows Llama-layer linears "
                        f"{list(ATTN_MODULES + MLP_MODULES)} or [{ALL_LINEAR}], got {unknown}")
    return tuple(n for n in ATTN_MODULES + MLP_MODULES if n in names)


def lora_params(arch: LLMArch, lora: LoRAConfig) -> int:
    """LoRA parameters: ``r (in + out)`` per adapted linear per layer (``A: r x in``,
    ``B: out x r``, no bias)."""
    shapes = arch.linear_shapes()
    per_layer = sum(lora.r * (shapes[m][0] + shapes[m][1]) for m in lora_modules(lora))
    return arch.n_layers * per_layer


def arch_from_hf(config: PretrainedConfig, name: str = "") -> LLMArch:
    """:class:`LLMArch` of a HF config (its text config for multimodal models).

    Raises:
        ArchError: a family whose layers are not Llama's.
    """
    text = config.get_text_config()
    values = text.to_dict()
    model_type = str(values.get("model_type", config.model_type))
    if model_type not in LLAMA_FAMILY:
        raise ArchError(f"llm: the memory planner counts Llama-family decoders "
                        f"{list(LLAMA_FAMILY)}, got model_type {model_type!r} ({name})")
    heads = int(values["num_attention_heads"])
    hidden = int(values["hidden_size"])
    return LLMArch(
        vocab_size=int(values["vocab_size"]), hidden_size=hidden,
        intermediate_size=int(values["intermediate_size"]),
        n_layers=int(values["num_hidden_layers"]), n_heads=heads,
        n_kv_heads=int(values.get("num_key_value_heads") or heads),
        head_dim=int(values.get("head_dim") or hidden // heads),
        tie_word_embeddings=bool(values.get("tie_word_embeddings", False)),
        attention_bias=bool(values.get("attention_bias", False)),
        mlp_bias=bool(values.get("mlp_bias", False)), name=name)


def builtin_config(name: str) -> PretrainedConfig:
    """HF config object of a :data:`BUILTIN_ARCHS` entry.

    Raises:
        ArchError: unknown name.
    """
    if name not in BUILTIN_ARCHS:
        raise ArchError(f"--model / llm.path: built-in architectures are "
                        f"{sorted(BUILTIN_ARCHS)}, got {name!r}")
    ref = dict(BUILTIN_ARCHS[name])
    return AutoConfig.for_model(ref.pop("model_type"), **ref)


def llm_arch(llm: LLMConfig, model: str | None = None) -> LLMArch:
    """The architecture to plan: ``model`` (a built-in name) when given, else
    ``llm.path`` when it names a built-in, else the ``config.json`` of the prepared LLM
    folder (no weights read); a hub id the presets name that is not on disk uses its public
    hyper-parameters (:data:`ecglm.models.params.LLM_REFERENCE_CONFIGS`).

    Raises:
        ArchError: unknown built-in or non-Llama family.
        OSError: the folder has no readable ``config.json``.
    """
    if model is not None:
        return arch_from_hf(builtin_config(model), model)
    path = str(llm.path)
    if llm.source == "path" and path in BUILTIN_ARCHS:
        return arch_from_hf(builtin_config(path), path)
    if llm.source == "path" and path in LLM_REFERENCE_CONFIGS and not Path(path).exists():
        ref = dict(LLM_REFERENCE_CONFIGS[path])
        return arch_from_hf(AutoConfig.for_model(ref.pop("model_type"), **ref), path)
    folder = prepare_llm_dir(llm)
    return arch_from_hf(AutoConfig.from_pretrained(str(folder)), str(folder))
