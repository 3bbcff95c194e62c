"""Benchmark training throughput: tokens/s per worker, MFU, peak memory, time to first step,
and the overhead of Ray Train over a bare PyTorch loop on the same model and batches.

Model: the product's :func:`ecglm.models.ecg_lm.build_ecg_lm` (ECG encoder + mapper + LoRA LLM)
from ``jobs/configs/quickstart.yaml`` (``--size smollm2``: SmolLM2-135M, ``llm.source:
smollm2``), ``jobs/configs/tiny.yaml`` (``--size tiny``: tests), or a random-init Llama built
from a ``LlamaConfig`` in code (``--size 1b|8b``: Llama-3.2-1B / Llama-3.1-8B shapes, written
once in bf16 with ``save_pretrained`` under ``<cache>/random-llama-<size>``, no download) and
loaded through ``llm.source: path``.

Batches: ``--n-batches`` fixed random batches of the model's input shapes, identical in every
run (seeded): ``signals (B, 1, 12, T)`` float32 mV-scale noise, ``ecg_mask (B, 1)``,
``input_ids/attention_mask/labels (B, S)`` (labels on the second half of the text, the rest
-100). No padding: every position is a real token.

Two runs in one invocation, same ``--threads`` torch threads, same batches, same steps:

* ``ray``: the product's runner (:func:`ecglm.train.runner.build_trainer`, a ``TorchTrainer``
  with one worker of ``--threads`` CPUs, :func:`ecglm.train.worker.start_worker`) running
  :func:`ecglm.train.strategies.build_strategy` (which builds the model: ``build_ecg_lm``,
  gradient checkpointing when configured, DeepSpeed's ``zero.Init`` under ZeRO-3) and the
  training loop's step: ``backward_micro_batches`` (``to_device`` + ``micro_step`` of each of
  ``train.grad_accum_steps`` micro-batches, loss weighted by answer tokens) then
  ``optimizer_step()``, exactly as :mod:`ecglm.train.loop` does;
* ``bare`` (a plain process, no Ray): the same strategy classes and the same step outside Ray
  Train: ``DDPStrategy(cfg, distributed=False, device=...)`` (no ``prepare_model`` wrapper,
  which wraps nothing at one worker anyway); ``--strategy deepspeed``: ``DeepSpeedStrategy(cfg,
  device=...)`` in a one-rank process group (``RANK``/``WORLD_SIZE``/``MASTER_*`` set here;
  the ``device`` argument replaces ``ray.train.torch.get_device()``, which only works inside
  a Ray Train worker).

Both processes live at once and take turns step by step (:class:`Turns`: Ray step ``i``, then
bare step ``i``, never both at once), so a change of machine load hits both alike; they compute
identical losses (checked: ``loss_max_abs_diff_ray_vs_bare``). The bare process runs in its
own session at the Ray worker's niceness (Ray starts workers at nice 15), so the kernel
schedules both alike. ``--no-bare`` runs Ray alone.

``ray_train_overhead = sum(Ray steady step s) / sum(bare steady step s) - 1`` (wall clock);
steady steps exclude the first ``--warmup`` steps (allocator and kernel warm-up).
``ray_train_overhead_median`` is the median of the per-step ratios minus 1 (robust to a load
spike), ``ray_train_overhead_cpu_time`` the same ratio of process CPU seconds per step
(``time.process_time``: robust to CPU contention from other processes, which on a shared
machine dominates wall-clock differences; ``loadavg_1min`` records the load).

A timed step is one optimizer step: the micro-batches' host-to-device copies
(``to_device``), forwards and backwards, and ``optimizer_step()``, as in the training loop.

FLOPs per step (model FLOPs, no recompute; ``tokens = A * B * (S + P)``, A micro-batches per
step (``train.grad_accum_steps``, 1 unless overridden), P ECG prefix tokens):

* ``N_mm``: weights of every ``nn.Linear`` of the LLM (base projections, ``lm_head``, LoRA A/B);
  ``N_tr``: its trainable part (LoRA); ``L`` layers; ``d_attn = n_heads * head_dim``; ``s`` the
  sequence length (full, non-causal attention counted, as PaLM's MFU does);
* LLM forward ``= tokens * (2 N_mm + 4 L s d_attn)``;
* LLM backward ``= tokens * (2 N_mm + 2 N_tr + 8 L s d_attn)`` (activation gradients through
  every layer, since the ECG prefix and LoRA sit below them; weight gradients only for trainable
  weights); full fine-tuning would make that ``6 N + 12 L s d`` in all;
* ECG front end (encoder + mapper): forward + backward counted with
  ``torch.utils.flop_counter.FlopCounterMode`` on one batch;
* cross-check: ``flops_per_step_counted`` is FlopCounterMode over one whole training step.

``mfu = flops_per_step / mean steady Ray step time / peak``; peak: CPU -> the best fp32
matmul rate measured in the same run with the same threads (``peak_flops_source:
measured``); GPU -> a table of dense bf16/fp16 peaks by ``torch.cuda.get_device_name()``
(H100/H200 SXM 989 TFLOP/s, A100 312, ...), else measured.

Memory: ``peak_rss_mib`` is the Ray worker's peak RSS (``ru_maxrss``); on GPU also
``peak_gpu_mib`` (``torch.cuda.max_memory_allocated``). ``time_to_first_step_s``: from
``TorchTrainer.fit()`` to the end of the worker's first optimizer step (worker start,
``build_strategy``: model + wrapper, one step; Ray's own start is ``ray_init_s``).

The last line is the JSON headline (``tokens_per_s_per_worker``, ``ray_train_overhead``,
``mfu``, ``peak_rss_mib``, ``time_to_first_step_s`` and the details above).

Usage: ``python jobs/bench/train_throughput.py [--quick] [--size tiny|smollm2|1b|8b]
[--strategy ddp|deepspeed --zero 3 --precision bf16] [--steps N --warmup W --threads T]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from ecglm.plan.arch import BUILTIN_ARCHS

REPO = Path(__file__).resolve().parents[2]
OVERHEAD_GOAL = 0.10
"""Issue #10: Ray Train at most 10% slower than the bare loop on CPU (SmolLM2-135M)."""

GPU_PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    # (substring of torch.cuda.get_device_name(), dense bf16/fp16 TFLOP/s); first match wins
    ("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("H800", 989.0),
    ("A100", 312.0), ("A800", 312.0), ("L40S", 362.0), ("L40", 181.0), ("L4", 121.0),
    ("A10G", 70.0), ("A10", 125.0), ("V100", 125.0),
)

SIZES: dict[str, dict[str, Any]] = {
    # base config, batch, text tokens, quick batch/tokens
    "tiny": {"config": "tiny.yaml", "batch": 2, "seq": 64, "quick": (2, 32)},
    "smollm2": {"config": "quickstart.yaml", "batch": 4, "seq": 256, "quick": (2, 128)},
    "1b": {"config": "quickstart.yaml", "batch": 8, "seq": 1024, "quick": (4, 512)},
    "8b": {"config": "quickstart.yaml", "batch": 4, "seq": 1024, "quick": (2, 512)},
}

LLAMA_SHAPES: dict[str, dict[str, Any]] = {
    # the planner's built-in architectures (public Llama-3.2-1B / Llama-3.1-8B
    # hyper-parameters, ecglm.plan.arch.BUILTIN_ARCHS); weights are random
    size: {**{k: v for k, v in BUILTIN_ARCHS[f"llama-{size}"].items() if k != "model_type"},
           "rope_theta": 500000.0}
    for size in ("1b", "8b")
}


# --------------------------------------------------------------------------------------------
# pure pieces (tested in tests/bench)
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LLMShape:
    """What the FLOP formula needs from the LLM."""

    n_matmul: int
    """Weights of every ``nn.Linear`` of the LLM (base, lm_head, LoRA A/B), elements."""
    n_trainable: int
    """Trainable elements among them (LoRA)."""
    n_layers: int
    d_attn: int
    """``num_attention_heads * head_dim`` (query width)."""


def llm_flops_per_token(shape: LLMShape, seq_len: int) -> dict[str, float]:
    """Model FLOPs per token of one LoRA training step of the LLM (see the module docstring).

    Returns ``{"forward", "backward", "total"}`` in FLOPs per token of a ``seq_len``-token
    sequence: forward ``2 N_mm + 4 L s d``, backward ``2 N_mm + 2 N_tr + 8 L s d``.
    """
    attn = 4.0 * shape.n_layers * seq_len * shape.d_attn
    fwd = 2.0 * shape.n_matmul + attn
    bwd = 2.0 * shape.n_matmul + 2.0 * shape.n_trainable + 2.0 * attn
    return {"forward": fwd, "backward": bwd, "total": fwd + bwd}


def steady(times: Sequence[float], warmup: int) -> list[float]:
    """Step times after the first ``warmup`` steps.

    Raises:
        ValueError: no step is left.
    """
    rest = list(times)[warmup:]
    if not rest:
        raise ValueError(f"--warmup {warmup} leaves no timed step of {len(times)}")
    return rest


def ray_overhead(ray_times: Sequence[float], bare_times: Sequence[float],
                 warmup: int) -> dict[str, float]:
    """Ray Train overhead as fractions (0.05: Ray steps take 5% longer) from per-step times of
    the same steps (step ``i`` of both runs used the same batch).

    ``total``: ``sum(ray steady) / sum(bare steady) - 1``; ``median``: the median over steady
    steps of ``ray_i / bare_i``, minus 1 (robust to a load spike during one step).

    Raises:
        ValueError: different step counts, or no steady step.
    """
    if len(ray_times) != len(bare_times):
        raise ValueError(f"bare and Ray runs must time the same steps, got {len(bare_times)} "
                         f"and {len(ray_times)}")
    ray_s, bare_s = steady(ray_times, warmup), steady(bare_times, warmup)
    return {"total": sum(ray_s) / sum(bare_s) - 1.0,
            "median": statistics.median(r / b for r, b in zip(ray_s, bare_s)) - 1.0}


def gpu_peak_flops(device_name: str) -> Optional[float]:
    """Dense bf16/fp16 peak FLOP/s of a GPU by name (:data:`GPU_PEAK_TFLOPS`), None if
    unknown."""
    for key, tflops in GPU_PEAK_TFLOPS:
        if key.lower() in device_name.lower():
            return tflops * 1e12
    return None


def mfu(flops_per_step: float, step_s: float, peak_flops: float) -> float:
    """Model FLOPs utilisation: achieved model FLOP/s over the peak FLOP/s."""
    return flops_per_step / step_s / peak_flops


OVERHEAD_DEFINITION = ("sum(Ray steady step s) / sum(bare steady step s) - 1 (median: median of "
                       "the per-step ratios - 1); the two processes take turns step by step; "
                       "the first --warmup steps of each are excluded")

HEADLINE_KEYS = ("tokens_per_s_per_worker", "ray_train_overhead", "mfu", "peak_rss_mib",
                 "time_to_first_step_s")


# --------------------------------------------------------------------------------------------
# model, batches, measurements (run inside the bare process and the Ray worker)
# --------------------------------------------------------------------------------------------

def _numel(p: Any) -> int:
    return int(getattr(p, "ds_numel", 0) or p.numel())  # ZeRO-3 partitions keep ds_numel


def llm_shape(model: Any) -> LLMShape:
    """:class:`LLMShape` of an :class:`~ecglm.models.ecg_lm.ECGLanguageModel`'s LLM."""
    from torch import nn

    n_mm = n_tr = 0
    for mod in model.llm.modules():
        if isinstance(mod, nn.Linear):
            n = _numel(mod.weight)
            n_mm += n
            n_tr += n if mod.weight.requires_grad else 0
    base = model.llm.get_base_model() if hasattr(model.llm, "get_base_model") else model.llm
    c = base.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    return LLMShape(n_mm, n_tr, int(c.num_hidden_layers), int(c.num_attention_heads * head_dim))


def fixed_batches(n: int, batch: int, seq: int, n_samples: int, vocab: int, seed: int
                  ) -> list[dict[str, Any]]:
    """``n`` seeded random batches of the model's input shapes (CPU tensors)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(0, vocab, (batch, seq), generator=gen)
        labels = ids.clone()
        labels[:, : seq // 2] = -100
        out.append({"signals": 0.5 * torch.randn(batch, 1, 12, n_samples, generator=gen),
                    "ecg_mask": torch.ones(batch, 1, dtype=torch.bool), "input_ids": ids,
                    "attention_mask": torch.ones(batch, seq, dtype=torch.long),
                    "labels": labels})
    return out


def matmul_peak_flops(device: Any, dtype: Any, n: int = 1024, reps: int = 8) -> float:
    """Best ``n x n`` matmul rate (FLOP/s) over ``reps`` timed runs on ``device``."""
    import torch

    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(reps + 1):
        _sync(device)
        t0 = time.perf_counter()
        (a @ b).sum().item()
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best


def _sync(device: Any) -> None:
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        torch.cuda.synchronize()


class Turns:
    """Step-by-step turn taking between the Ray worker and the bare process (marker files in
    ``folder``): Ray step ``i`` runs after bare step ``i - 1``, bare step ``i`` after Ray step
    ``i``, so the two never run at once and both see the same machine load."""

    def __init__(self, folder: str | Path, timeout_s: float = 900.0) -> None:
        self.folder = Path(folder)
        self.timeout_s = timeout_s

    def register(self, side: str) -> None:
        """Record this process as ``side`` (the other side stops waiting if it exits)."""
        (self.folder / f"{side}-pid").write_text(str(os.getpid()))

    def mark(self, side: str, i: int) -> None:
        (self.folder / f"{side}-{i}").touch()

    def _alive(self, side: str) -> bool:
        pid_file = self.folder / f"{side}-pid"
        if not pid_file.exists():
            return True  # not started yet
        try:
            os.kill(int(pid_file.read_text()), 0)
        except ProcessLookupError:
            return False
        return True

    def wait(self, side: str, i: int) -> None:
        """Block until ``side`` finished step ``i`` (no-op for ``i < 0``).

        Raises:
            TimeoutError: the other side never got there within ``timeout_s`` (it hangs).
            RuntimeError: the other side's process exited.
        """
        if i < 0:
            return
        path, t0, n = self.folder / f"{side}-{i}", time.perf_counter(), 0
        while not path.exists():
            if time.perf_counter() - t0 > self.timeout_s:
                raise TimeoutError(f"{side} step {i} did not finish within {self.timeout_s} s")
            n += 1
            if n % 500 == 0 and not self._alive(side):
                raise RuntimeError(f"the {side} process exited before step {i}")
            time.sleep(0.002)


def timed_steps(strategy: Any, batches: Sequence[Mapping[str, Any]], steps: int,
                accum: int, device: Any, before: Callable[[int], None] = lambda i: None,
                after: Callable[[int], None] = lambda i: None) -> dict[str, Any]:
    """Run ``steps`` optimizer steps of the training loop (``backward_micro_batches`` over
    ``accum`` micro-batches, then ``strategy.optimizer_step()``), cycling over ``batches`` (CPU
    tensors; step ``i`` takes micro-batches ``i * accum ...``); ``before(i)``/``after(i)`` run
    around step ``i`` outside its timing (turn taking).

    Returns ``step_s`` (wall seconds per step), ``cpu_s`` (CPU seconds of this process per
    step, all its threads), ``losses`` (token-weighted step losses) and ``first_step_end``
    (``time.time()`` at the end of the first step).
    """
    from ecglm.train.strategies import backward_micro_batches

    times, cpu, losses, first_end = [], [], [], 0.0
    for i in range(steps):
        micro = [batches[(i * accum + j) % len(batches)] for j in range(accum)]
        before(i)
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        loss = backward_micro_batches(strategy, micro)  # float(loss): waits for the device
        strategy.optimizer_step()
        _sync(device)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        losses.append(loss)
        if i == 0:
            first_end = time.time()
        after(i)
    return {"step_s": times, "cpu_s": cpu, "losses": losses, "first_step_end": first_end}


def count_flops(model: Any, batch: Mapping[str, Any]) -> dict[str, float]:
    """FlopCounterMode counts (forward + backward) of the ECG front end alone and of one whole
    step's forward + backward (gradients are cleared after)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        prefix, _ = model.ecg_prefix(batch["signals"], batch["ecg_mask"])
        if prefix.requires_grad:
            prefix.float().sum().backward()
    front = float(fc.get_total_flops())
    with FlopCounterMode(display=False) as fc:
        model(**batch).loss.backward()
    total = float(fc.get_total_flops())
    model.zero_grad(set_to_none=True)
    return {"front_end_counted": front, "step_counted": total}


def _rss_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


def _gpu_mib() -> Optional[float]:
    import torch

    if not torch.cuda.is_available():
        return None
    return round(torch.cuda.max_memory_allocated() / 2**20, 1)


# --------------------------------------------------------------------------------------------
# config and the random Llama folders
# --------------------------------------------------------------------------------------------

def make_random_llama(size: str, cache_dir: Path) -> Path:
    """``<cache_dir>/random-llama-<size>``: a random-init Llama of :data:`LLAMA_SHAPES`
    ``[size]`` in bf16 (``save_pretrained``) with the tiny byte-level BPE tokenizer; written
    once (initialised on the GPU when there is one: an 8B init on CPU takes minutes)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from ecglm.models.llm import MARKER_FILE, builtin_tiny_corpus, train_tiny_tokenizer
    from ecglm.utils.cache_dirs import write_once

    def build(out: Path) -> dict:
        t0 = time.perf_counter()
        tok = train_tiny_tokenizer(512, builtin_tiny_corpus())
        config = LlamaConfig(**LLAMA_SHAPES[size], max_position_embeddings=8192,
                             bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.pad_token_id)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        with torch.random.fork_rng(devices=[]), torch.device(device):
            torch.manual_seed(0)
            model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        model.save_pretrained(str(out))
        tok.save_pretrained(str(out))
        return {"source": "random-llama", "size": size,
                "params": sum(p.numel() for p in model.parameters()),
                "build_seconds": round(time.perf_counter() - t0, 1)}

    return write_once(Path(cache_dir) / f"random-llama-{size}", build, marker=MARKER_FILE,
                      required=("config.json",))


def bench_overrides(args: argparse.Namespace, work: Path, llm_path: Optional[Path]
                    ) -> list[str]:
    """Dotted overrides of the base config for this benchmark."""
    ov = [f"data.synthetic_root={work}/synthetic", f"data.shard_dir={work}/shards",
          f"llm.cache_dir={args.cache_dir}", f"tracking.tracking_uri=sqlite:///{work}/mlflow.db",
          f"tracking.artifact_root={work}/artifacts", f"output_dir={work}/runs",
          f"train.storage_path={work}/ray", f"train.strategy={args.strategy}",
          f"train.zero_stage={args.zero}", f"train.precision={args.precision}",
          "train.num_workers=1", f"train.cpus_per_worker={args.threads}",
          f"train.use_gpu={str(args.gpu).lower()}", f"train.batch_size={args.batch_size}",
          f"train.max_steps={args.steps}", "train.warmup_ratio=0.0", "train.memory_check=false",
          f"llm.max_length={max(16, args.seq_len)}"]
    if llm_path is not None:
        ov += ["llm.source=path", f"llm.path={llm_path}", "llm.dtype=bfloat16"]
    if args.lora_targets:
        ov.append(f"lora.target_modules=[{args.lora_targets}]")
    return ov + list(args.override or [])


# --------------------------------------------------------------------------------------------
# the two runs
# --------------------------------------------------------------------------------------------

def prefix_tokens(model: Any, batch: Mapping[str, Any]) -> int:
    """ECG prefix length ``P`` of ``batch`` (eval mode, RNG untouched); the mapper's nominal
    ``n_tokens`` per ECG when the front end cannot run outside an engine (ZeRO-3 partitions)."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            return int(model.ecg_prefix(batch["signals"], batch["ecg_mask"])[0].shape[1])
    except RuntimeError:
        return int(model.n_tokens) * int(batch["ecg_mask"].shape[1])
    finally:
        model.train(was_training)


def make_batches(cfg: Any, model: Any, p: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The fixed batches (CPU tensors) for ``model`` (vocabulary: the smaller of its tokenizer
    and its embedding table) and ``cfg`` (``train.batch_size``, ``data.fs * data.seconds``)."""
    vocab = min(len(model.tokenizer), int(model.llm.get_input_embeddings().num_embeddings))
    n_samples = int(round(cfg.data.fs * cfg.data.seconds))
    return fixed_batches(p["n_batches"], cfg.train.batch_size, p["seq_len"], n_samples, vocab,
                         p["seed"])


def bare_run(p: Mapping[str, Any]) -> dict[str, Any]:
    """The bare PyTorch loop (plain process, see the module docstring), taking turns with the
    Ray worker step by step (it starts once the Ray worker's first step is done)."""
    import torch

    from ecglm.config import from_dict
    from ecglm.train.strategies import DDPStrategy, DeepSpeedStrategy
    from ecglm.utils.ray_env import set_process_env

    set_process_env()
    torch.set_num_threads(int(p["threads"]))
    turns = Turns(p["turns"])
    turns.register("bare")
    turns.wait("ray", 0)
    # the Ray worker's CPU priority (Ray starts workers at nice 15): same scheduling for both
    nice = int((Path(p["turns"]) / "ray-nice").read_text())
    os.nice(max(0, nice - os.nice(0)))
    torch.manual_seed(int(p["config"]["seed"]))  # as start_worker does in the Ray worker
    t_build = time.time()
    cfg = from_dict(p["config"])
    device = torch.device("cuda:0" if p["gpu"] else "cpu")
    if p["gpu"]:
        torch.cuda.set_device(0)
    strategy: Any
    if cfg.train.strategy == "deepspeed":
        # a one-rank process group; DeepSpeedStrategy runs deepspeed.init_distributed
        for key, val in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1",
                         "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(p["port"])}.items():
            os.environ[key] = val
        strategy = DeepSpeedStrategy(cfg, device=device)
    else:
        strategy = DDPStrategy(cfg, distributed=False, device=device)
    model = strategy.module
    batches = make_batches(cfg, model, p)
    model.train()
    run = timed_steps(strategy, batches, p["steps"], cfg.train.grad_accum_steps, device,
                      before=lambda i: turns.wait("ray", i), after=lambda i: turns.mark("bare", i))
    return {**run, "peak_rss_mib": _rss_mib(), "peak_gpu_mib": _gpu_mib(), "niceness": os.nice(0),
            "build_and_first_step_s": run["first_step_end"] - t_build}


def ray_loop(loop_config: dict[str, Any]) -> None:
    """Ray Train worker: the product's worker start-up (``start_worker``), ``build_strategy``
    (model + wrapper) and the training loop's step (``backward_micro_batches`` +
    ``optimizer_step``), the same steps as the bare loop (taking turns with it), then the
    prefix length, peak-FLOP/s and FLOP-count measurements."""
    import ray.train
    import torch

    from ecglm.train.strategies import build_strategy
    from ecglm.train.worker import start_worker

    entered = time.time()
    worker = start_worker(loop_config)
    p = loop_config["bench"]
    cfg = worker.cfg
    strategy = build_strategy(cfg)
    model = strategy.module
    t_built = time.time()
    batches = make_batches(cfg, model, p)
    device = strategy.device
    model.train()
    turns = Turns(p["turns"])
    turns.register("ray")
    (Path(p["turns"]) / "ray-nice").write_text(str(os.nice(0)))
    if p["bare"]:
        before, after = (lambda i: turns.wait("bare", i - 1)), (lambda i: turns.mark("ray", i))
    else:
        before = after = (lambda i: None)
    run = timed_steps(strategy, batches, p["steps"], cfg.train.grad_accum_steps, device,
                      before, after)
    if p["bare"]:
        turns.wait("bare", p["steps"] - 1)  # the bare loop is done: measure alone
    rss, gpu_mib = _rss_mib(), _gpu_mib()
    first = strategy.to_device(batches[0])
    out = {**run, "loop_entered": entered, "model_built": t_built, "peak_rss_mib": rss,
           "peak_gpu_mib": gpu_mib, "llm_shape": llm_shape(model).__dict__,
           "prefix_tokens": prefix_tokens(model, first), "niceness": os.nice(0),
           "grad_accum_steps": cfg.train.grad_accum_steps,
           "threads": torch.get_num_threads(), "device": str(device),
           "peak_flops_measured": matmul_peak_flops(
               device, torch.bfloat16 if device.type == "cuda" else torch.float32)}
    if p["count_flops"] and cfg.train.strategy != "deepspeed":
        out["flops"] = count_flops(model, first)
    if worker.rank == 0:
        Path(p["result_file"]).write_text(json.dumps(out))
    ray.train.report({"steps": len(run["step_s"])})


def run(payload: dict[str, Any], cfg: Any, work: Path) -> tuple[dict[str, Any],
                                                                Optional[dict[str, Any]]]:
    """The Ray run (a one-worker ``TorchTrainer`` of the product's runner) and, unless
    ``payload["bare"]`` is false, the bare process taking turns with it."""
    from ecglm.config import to_dict
    from ecglm.train.runner import CheckpointScore, RunnerSpec, build_trainer
    from ecglm.utils.ray_env import init_ray

    turns = work / "turns"
    turns.mkdir(exist_ok=True)
    for f in turns.iterdir():
        f.unlink()
    payload = {**payload, "turns": str(turns), "result_file": str(work / "ray-result.json")}
    proc = None
    if payload["bare"]:
        pfile = work / "bare-payload.json"
        pfile.write_text(json.dumps(payload))
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--phase",
                                 "bare", "--payload", str(pfile)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        t0 = time.perf_counter()
        init_ray(cfg.train.ray_num_cpus, 1 << 30)
        ray_init_s = time.perf_counter() - t0
        spec = RunnerSpec.from_train(cfg.train, f"throughput-{int(time.time())}",
                                     CheckpointScore())
        trainer = build_trainer(ray_loop, {"config": to_dict(cfg), "bench": payload}, {}, spec)
        fit_start = time.time()
        trainer.fit()
    except BaseException:
        if proc is not None:
            proc.kill()
        raise
    ray_out = json.loads(Path(payload["result_file"]).read_text())
    ray_out.update(fit_start=fit_start, ray_init_s=ray_init_s)
    if proc is None:
        return ray_out, None
    stdout, stderr = proc.communicate(timeout=600)
    if proc.returncode != 0:
        sys.stderr.write(stderr[-6000:])
        raise RuntimeError(f"bare loop process failed (exit {proc.returncode})")
    return ray_out, json.loads(stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------

def _r(x: Optional[float], nd: int = 4) -> Optional[float]:
    return None if x is None else round(float(x), nd)


def _sig(x: float, digits: int = 4) -> float:
    """``x`` rounded to ``digits`` significant digits (MFU of tiny models is ~1e-4)."""
    return float(f"{x:.{digits}g}")


def headline(args: argparse.Namespace, cfg: Any, ray_out: dict[str, Any],
             bare: Optional[dict[str, Any]], gpu_name: Optional[str]) -> dict[str, Any]:
    """The JSON headline from the runs' numbers (``bare`` None: ``--no-bare``)."""
    warm = args.warmup
    n_prefix = int(ray_out["prefix_tokens"])
    seq = args.seq_len + n_prefix
    accum = int(ray_out.get("grad_accum_steps", 1))
    tokens = accum * args.batch_size * seq
    shape = LLMShape(**ray_out["llm_shape"])
    per_tok = llm_flops_per_token(shape, seq)
    counted = ray_out.get("flops") or {}
    front = counted.get("front_end_counted")
    flops_step = per_tok["total"] * tokens + (front or 0.0)
    ray_step = statistics.fmean(steady(ray_out["step_s"], warm))
    peak = gpu_peak_flops(gpu_name) if gpu_name and args.precision != "fp32" else None
    if peak is not None:
        peak_src = f"table: {gpu_name}, dense bf16/fp16"
    else:
        peak = ray_out["peak_flops_measured"]
        peak_src = (f"measured {'bf16' if gpu_name else 'fp32'} matmul, best of 8, "
                    f"{args.threads} threads: " + (
                        "in the Ray worker after the steps" if gpu_name else
                        "the larger of the Ray worker's 1024^3 rate after the steps and the "
                        "driver's 1024^3/2048^3 rates once both runs are over (a rate taken "
                        "while another process still runs reads low)"))
    head: dict[str, Any] = {
        "bench": "train_throughput", "quick": args.quick, "size": args.size,
        "llm": cfg.llm.source if cfg.llm.source != "path" else f"random-llama-{args.size}",
        "strategy": args.strategy,
        "zero_stage": args.zero if args.strategy == "deepspeed" else None,
        "precision": args.precision, "device": gpu_name or "cpu", "threads": args.threads,
        "cpus": os.cpu_count(), "batch_size": args.batch_size, "text_tokens": args.seq_len,
        "prefix_tokens": n_prefix, "grad_accum_steps": accum, "tokens_per_step": tokens, "steps": args.steps,
        "warmup_steps_excluded": warm,
        "tokens_per_s_per_worker": _r(tokens / ray_step, 1), "step_s_ray_mean": _r(ray_step),
        "ray_train_overhead": None, "ray_train_overhead_median": None,
        "overhead_goal": OVERHEAD_GOAL,
        "overhead_definition": OVERHEAD_DEFINITION,
        "mfu": _sig(mfu(flops_step, ray_step, peak)), "flops_per_step": flops_step,
        "flop_formula": "tokens*(2*N_mm + 4*L*s*d_attn) fwd + tokens*(2*N_mm + 2*N_tr + "
                        "8*L*s*d_attn) bwd + ECG front end fwd+bwd counted by FlopCounterMode "
                        "(not counted under deepspeed or on GPU)",
        "flop_terms": {**shape.__dict__, "seq_len": seq, "front_end_flops": front,
                       "llm_flops_per_token": per_tok["total"]},
        "flops_per_step_counted": counted.get("step_counted"),
        "peak_flops": peak, "peak_flops_source": peak_src,
        "peak_flops_in_worker": ray_out.get("peak_flops_in_worker"),
        "peak_rss_mib": ray_out["peak_rss_mib"], "peak_gpu_mib": ray_out.get("peak_gpu_mib"),
        "time_to_first_step_s": _r(ray_out["first_step_end"] - ray_out["fit_start"], 2),
        "time_to_first_step_breakdown_s": {
            "worker_start": _r(ray_out["loop_entered"] - ray_out["fit_start"], 2),
            "build_strategy": _r(ray_out["model_built"] - ray_out["loop_entered"], 2),
            "first_step": _r(ray_out["first_step_end"] - ray_out["model_built"], 2)},
        "ray_init_s": _r(ray_out["ray_init_s"], 2), "ray_worker_threads": ray_out["threads"],
        "ray_worker_niceness": ray_out["niceness"],
        "loadavg_1min": {"start": args.loadavg_start, "end": _r(os.getloadavg()[0], 2)},
        "step_s_ray": [_r(t) for t in ray_out["step_s"]],
        "cpu_s_ray": [_r(t) for t in ray_out["cpu_s"]],
        "losses_ray": [_r(x) for x in ray_out["losses"]],
    }
    if bare is not None:
        ovh = ray_overhead(ray_out["step_s"], bare["step_s"], warm)
        cpu = ray_overhead(ray_out["cpu_s"], bare["cpu_s"], warm)
        bare_step = statistics.fmean(steady(bare["step_s"], warm))
        head.update({
            "ray_train_overhead": _r(ovh["total"]),
            "ray_train_overhead_median": _r(ovh["median"]),
            "ray_train_overhead_cpu_time": _r(cpu["total"]),
            "tokens_per_s_bare": _r(tokens / bare_step, 1), "step_s_bare_mean": _r(bare_step),
            "mfu_bare": _sig(mfu(flops_step, bare_step, peak)),
            "peak_rss_mib_bare": bare["peak_rss_mib"], "peak_gpu_mib_bare": bare["peak_gpu_mib"],
            "build_and_first_step_bare_s": _r(bare["build_and_first_step_s"], 2),
            "bare_niceness": bare["niceness"],
            "loss_max_abs_diff_ray_vs_bare": max(abs(a - b) for a, b in
                                                 zip(ray_out["losses"], bare["losses"])),
            "step_s_bare": [_r(t) for t in bare["step_s"]],
            "cpu_s_bare": [_r(t) for t in bare["cpu_s"]]})
    return head


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller batch/steps (< 5 min on CPU)")
    ap.add_argument("--size", choices=sorted(SIZES), default="smollm2")
    ap.add_argument("--strategy", choices=["ddp", "deepspeed"], default="ddp")
    ap.add_argument("--zero", type=int, choices=[1, 2, 3], default=3)
    ap.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default=None,
                    help="default: bf16 on GPU, fp32 on CPU")
    ap.add_argument("--steps", type=int, default=None, help="steps per run (default 8, quick 6)")
    ap.add_argument("--warmup", type=int, default=2, help="first steps excluded from timing")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads of both runs (default: min(2, CPUs))")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--seq-len", type=int, default=None, help="text tokens per example")
    ap.add_argument("--n-batches", type=int, default=4)
    ap.add_argument("--lora-targets", default=None, help="e.g. all-linear or q_proj,v_proj")
    ap.add_argument("--cache-dir", type=Path, default=REPO / ".cache" / "models")
    ap.add_argument("--work", type=Path, default=None, help="work folder (default: temp)")
    ap.add_argument("--no-bare", action="store_true",
                    help="skip the bare loop (no overhead figure; GPU runs short of time)")
    ap.add_argument("--no-flop-count", action="store_true",
                    help="skip the FlopCounterMode cross-check")
    ap.add_argument("--override", action="append", help="extra dotted config override")
    ap.add_argument("--phase", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--payload", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    size = SIZES[args.size]
    qb, qs = size["quick"]
    args.batch_size = args.batch_size or (qb if args.quick else size["batch"])
    args.seq_len = args.seq_len or (qs if args.quick else size["seq"])
    args.steps = args.steps or (6 if args.quick else 8)
    args.threads = args.threads or min(2, os.cpu_count() or 1)
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO))
    if args.phase:  # child process: the bare loop
        print(json.dumps(bare_run(json.loads(Path(args.payload).read_text()))))
        return 0

    import torch

    from ecglm.config import dump_yaml, load_config, to_dict
    from ecglm.models.llm import prepare_llm_dir
    from ecglm.utils.ray_env import set_process_env

    set_process_env()
    args.gpu = torch.cuda.is_available()
    args.loadavg_start = round(os.getloadavg()[0], 2)
    args.precision = args.precision or ("bf16" if args.gpu else "fp32")
    gpu_name = torch.cuda.get_device_name(0) if args.gpu else None
    work = args.work or Path(tempfile.mkdtemp(prefix="ecglm-bench-throughput-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    llm_path = None
    if args.size in LLAMA_SHAPES:
        print(f"[throughput] random-init Llama {args.size} folder under {args.cache_dir} ...",
              flush=True)
        llm_path = make_random_llama(args.size, args.cache_dir)
    cfg = load_config(REPO / "jobs" / "configs" / SIZES[args.size]["config"],
                      bench_overrides(args, work, llm_path))
    prepare_llm_dir(cfg.llm)  # converted once (SmolLM2: GGUF -> HF folder), before any run
    (work / "config.yaml").write_text(dump_yaml(cfg))
    payload = {"config": to_dict(cfg), "threads": args.threads, "gpu": args.gpu,
               "steps": args.steps, "seq_len": args.seq_len, "n_batches": args.n_batches,
               "seed": 0, "bare": not args.no_bare,
               "count_flops": not args.no_flop_count and not args.gpu,
               "port": 29500 + os.getpid() % 1000}
    print(f"[throughput] size={args.size} strategy={args.strategy} precision={args.precision} "
          f"batch={args.batch_size}x{args.seq_len} steps={args.steps} threads={args.threads} "
          f"bare={not args.no_bare} work={work}", flush=True)
    ray_out, bare = run(payload, cfg, work)
    print(f"[throughput] ray:  {[round(t, 3) for t in ray_out['step_s']]} s/step", flush=True)
    if bare is not None:
        print(f"[throughput] bare: {[round(t, 3) for t in bare['step_s']]} s/step", flush=True)
    if not gpu_name:  # CPU peak: measured here once both runs are over (nothing else runs)
        import torch

        torch.set_num_threads(args.threads)
        driver_peak = max(matmul_peak_flops(torch.device("cpu"), torch.float32, n)
                          for n in (1024, 2048))
        ray_out["peak_flops_in_worker"] = ray_out["peak_flops_measured"]
        ray_out["peak_flops_measured"] = max(driver_peak, ray_out["peak_flops_measured"])
    head = headline(args, cfg, ray_out, bare, gpu_name)
    head["config_path"] = str(work / "config.yaml")
    head["total_s"] = round(time.perf_counter() - t0, 1)
    ovh = head["ray_train_overhead"]
    print(f"[throughput] {head['tokens_per_s_per_worker']} tokens/s/worker, Ray Train overhead "
          f"{'n/a' if ovh is None else f'{ovh:+.3f}'}, MFU {head['mfu']}, peak RSS "
          f"{head['peak_rss_mib']} MiB, peak GPU {head['peak_gpu_mib']} MiB, first step "
          f"{head['time_to_first_step_s']} s", flush=True)
    print(json.dumps(head), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
