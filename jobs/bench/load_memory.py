"""Benchmark large-model loading: peak CPU memory (RSS) of loading one LLM three ways.

A randomly initialised Llama (architecture from a ``LlamaConfig`` written in code, no
download; default hidden 1536, 16 layers, intermediate 4096, vocab 32000: ~0.55B parameters)
is written once with ``save_pretrained`` as bf16 safetensors in 500 MB shards (with the tiny
LLM's tokenizer) under ``--cache-dir``. Then, each in fresh processes:

* ``plain_fp32``: ``AutoModelForCausalLM.from_pretrained(folder, dtype=float32)`` in one
  process: what ``load_llm`` did before (every rank held a full fp32 copy);
* ``lowmem_bf16``: ``ecglm.models.load_llm`` with ``llm.dtype: bfloat16`` in one process
  (DDP / ZeRO-1/2 path: transformers 5 builds on the meta device and fills each tensor from
  the memory-mapped shards in the target dtype; includes the LoRA wrap);
* ``zero3_w2``: 2 Ray Train workers (``TorchTrainer``, CPU, gloo, ``DS_ACCELERATOR=cpu``) each
  calling ``build_ecg_lm(cfg, ds_config=<ZeRO-3, bf16>)``: the LLM built inside
  ``deepspeed.zero.Init`` and loaded shard by shard (``ecglm.models.zero3_load``), plus a
  small ECG front end and LoRA (sizes printed). ``--launcher spawn`` uses 2
  ``torch.multiprocessing`` gloo processes instead of Ray Train.

A worker's RSS after loading exceeds its partition by what the allocator keeps of freed
gather buffers (glibc): run with ``MALLOC_MMAP_THRESHOLD_=131072`` to see the partition alone.

Memory per process: ``baseline`` = VmRSS right before loading (after imports and, for
ZeRO-3, after ``deepspeed.init_distributed``); ``peak`` = VmHWM (peak RSS, from
/proc/self/status) after loading; ``load_peak = peak - baseline`` is what loading cost.
RSS counts file-backed pages of the memory-mapped shards while they are mapped. The model's
full size is ``n_params x 2`` bytes (bf16) and ``x 4`` (fp32).

Output: a table, then one JSON line (the headline) with ``n_params``, ``full_bf16_mib``,
``full_fp32_mib``, ``plain_fp32_load_mib``, ``lowmem_bf16_load_mib``,
``zero3_worker_load_mib`` (list, per rank), ``zero3_max_worker_vs_plain`` and
``zero3_max_worker_vs_full_bf16`` (fractions).

Usage: ``python jobs/bench/load_memory.py [--quick] [--launcher ray|spawn] [--cache-dir DIR]``
(``--quick``: 4 layers, ~0.2B parameters).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
MIB = float(1 << 20)


def proc_status_kib(key: str) -> int:
    """A ``kB`` field of /proc/self/status (``VmRSS``, ``VmHWM``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def zero3_ds_config() -> dict[str, Any]:
    """ZeRO-3 with bf16 parameters (as on GPU); persistence threshold 0 (all partitioned)."""
    return {"train_micro_batch_size_per_gpu": 1,
            "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0},
            "bf16": {"enabled": True}, "fp16": {"enabled": False}}


# --------------------------------------------------------------------------------------------
# model folder
# --------------------------------------------------------------------------------------------

def write_model(folder: Path, hidden: int, layers: int, intermediate: int, vocab: int) -> None:
    """Random-init Llama in bf16 + the tiny tokenizer, written atomically to ``folder``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from ecglm.config.schema import LLMConfig
    from ecglm.models import prepare_llm_dir

    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tiny = prepare_llm_dir(LLMConfig(source="tiny", cache_dir=str(folder.parent / "tiny")))
    for item in tiny.iterdir():
        if "token" in item.name:
            shutil.copy(item, tmp / item.name)
    heads = max(1, hidden // 128)
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate,
                         num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=heads, tie_word_embeddings=False,
                         bos_token_id=1, eos_token_id=2, pad_token_id=3)
    torch.manual_seed(0)
    model = LlamaForCausalLM._from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(str(tmp), max_shard_size="500MB")
    tmp.rename(folder)


# --------------------------------------------------------------------------------------------
# probes (each runs in its own process)
# --------------------------------------------------------------------------------------------

def probe_single(kind: str, folder: str) -> dict[str, Any]:
    """``plain_fp32`` or ``lowmem_bf16`` in this process; memory in MiB."""
    import torch
    from transformers import AutoModelForCausalLM

    from ecglm.config.schema import LLMConfig, LoRAConfig
    from ecglm.models import load_llm

    base_kib = proc_status_kib("VmRSS")
    start = time.perf_counter()
    if kind == "plain_fp32":
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    else:
        model, _ = load_llm(LLMConfig(source="path", path=folder, dtype="bfloat16"),
                            LoRAConfig(r=8, alpha=16), seed=0)
    seconds = time.perf_counter() - start
    peak_kib, after_kib = proc_status_kib("VmHWM"), proc_status_kib("VmRSS")
    with torch.no_grad():  # read every weight once: memory-mapped pages become resident
        checksum = sum(float(p.detach().sum()) for p in model.parameters())
    return {"kind": kind, "baseline_mib": base_kib / 1024, "peak_mib": peak_kib / 1024,
            "after_mib": after_kib / 1024, "seconds": seconds,
            "touched_mib": proc_status_kib("VmRSS") / 1024,
            "touched_peak_mib": proc_status_kib("VmHWM") / 1024,
            "checksum_finite": checksum == checksum,
            "dtypes": sorted({str(p.dtype) for p in model.parameters()})}


def zero3_worker(cfg_dict: dict[str, Any], out_dir: str) -> None:
    """One ZeRO-3 rank (inside Ray Train or a spawned gloo process): build, measure, write
    ``rank<r>.json``."""
    import deepspeed
    import torch

    from ecglm.config.overrides import from_dict
    from ecglm.models import build_ecg_lm

    deepspeed.init_distributed(dist_backend="gloo")
    rank = torch.distributed.get_rank()
    torch.distributed.barrier()
    base_kib = proc_status_kib("VmRSS")
    start = time.perf_counter()
    model = build_ecg_lm(from_dict(cfg_dict), ds_config=zero3_ds_config())
    seconds = time.perf_counter() - start
    llm_local = llm_full = 0
    for param in model.llm.get_base_model().parameters():
        if hasattr(param, "ds_tensor"):
            llm_local += param.ds_tensor.numel() * param.ds_tensor.element_size()
            llm_full += int(param.ds_numel) * param.ds_tensor.element_size()
    front = sum(p.numel() * p.element_size() for n, p in model.named_parameters()
                if n.split(".", 1)[0] in ("encoder", "mapper"))
    lora = sum(p.numel() * p.element_size() for n, p in model.named_parameters()
               if "lora_" in n)
    result = {"rank": rank, "baseline_mib": base_kib / 1024,
              "front_end_mib": front / MIB, "lora_mib": lora / MIB,
              "peak_mib": proc_status_kib("VmHWM") / 1024,
              "after_mib": proc_status_kib("VmRSS") / 1024, "seconds": seconds,
              "llm_partition_mib": llm_local / MIB, "llm_full_mib": llm_full / MIB}
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    torch.distributed.barrier()


def _ray_loop(config: dict[str, Any]) -> None:
    zero3_worker(config["cfg"], config["out_dir"])


def _spawn_main(rank: int, port: int, cfg_dict: dict[str, Any], out_dir: str) -> None:
    import torch

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                       "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank)})
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    zero3_worker(cfg_dict, out_dir)
    torch.distributed.destroy_process_group()


def run_zero3(folder: Path, launcher: str, work: Path) -> list[dict[str, Any]]:
    """2 ZeRO-3 ranks; their measurements sorted by rank."""
    from ecglm.config.overrides import to_dict
    from ecglm.config.schema import (
        EncoderConfig,
        ExperimentConfig,
        LLMConfig,
        LoRAConfig,
        MapperConfig,
    )

    # a small ECG front end (the default CMELT + ET-Mapper is ~160M fp32 parameters, built
    # whole on every rank, which would hide the LLM's share at this LLM size)
    cfg = ExperimentConfig(
        seed=0, llm=LLMConfig(source="path", path=str(folder), dtype="bfloat16"),
        encoder=EncoderConfig(d_model=64, n_layers=2, n_heads=2, conv_channels=[16, 16],
                              conv_kernels=[10, 5], conv_strides=[5, 5]),
        mapper=MapperConfig(n_tokens=4, n_layers=1, n_heads=2), lora=LoRAConfig(r=8, alpha=16))
    out_dir = work / "zero3"
    out_dir.mkdir(parents=True, exist_ok=True)
    if launcher == "ray":
        import ray
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer

        from ecglm.utils.ray_env import init_ray

        init_ray(num_cpus=4)
        try:
            TorchTrainer(_ray_loop, train_loop_config={"cfg": to_dict(cfg),
                                                       "out_dir": str(out_dir)},
                         scaling_config=ScalingConfig(num_workers=2, use_gpu=False),
                         run_config=RunConfig(name="load_memory",
                                              storage_path=str(work / "ray"))).fit()
        finally:
            ray.shutdown()
    else:
        import socket

        import torch.multiprocessing as mp

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        mp.spawn(_spawn_main, args=(port, to_dict(cfg), str(out_dir)), nprocs=2, join=True)
    return [json.loads((out_dir / f"rank{r}.json").read_text()) for r in range(2)]


def run_probe(kind: str, folder: Path) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--probe", kind, "--folder", str(folder)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 layers (~0.2B parameters)")
    parser.add_argument("--hidden", type=int, default=1536)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--intermediate", type=int, default=4096)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--launcher", choices=["ray", "spawn"], default="ray")
    parser.add_argument("--cache-dir", default=str(REPO / ".cache" / "bench"))
    parser.add_argument("--probe", choices=["plain_fp32", "lowmem_bf16"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        print(json.dumps(probe_single(args.probe, args.folder)), flush=True)
        return

    from ecglm.utils.ray_env import set_process_env

    set_process_env()
    layers = 4 if args.quick else args.layers
    name = f"llama-h{args.hidden}-l{layers}-i{args.intermediate}-v{args.vocab}"
    folder = Path(args.cache_dir) / name
    t0 = time.perf_counter()
    if not (folder / "config.json").is_file():
        print(f"[load_memory] writing {folder}", flush=True)
        write_model(folder, args.hidden, layers, args.intermediate, args.vocab)
    from safetensors import safe_open

    n_params = 0
    for shard in sorted(folder.glob("*.safetensors")):
        with safe_open(str(shard), framework="pt") as f:
            for key in f.keys():
                count = 1
                for dim in f.get_slice(key).get_shape():
                    count *= dim
                n_params += count
    disk = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    print(f"[load_memory] {name}: {n_params / 1e9:.3f}B parameters, "
          f"{disk / MIB:.0f} MiB on disk ({len(list(folder.glob('*.safetensors')))} shards); "
          f"ready in {time.perf_counter() - t0:.0f}s", flush=True)

    plain = run_probe("plain_fp32", folder)
    lowmem = run_probe("lowmem_bf16", folder)
    with tempfile.TemporaryDirectory(prefix="load_memory_") as tmp:
        ranks = run_zero3(folder, args.launcher, Path(tmp))

    full_bf16, full_fp32 = n_params * 2 / MIB, n_params * 4 / MIB
    rows = [("plain_fp32 (1 process)", plain), ("lowmem_bf16 (1 process)", lowmem)]
    rows += [(f"zero3 rank {r['rank']} of 2 ({args.launcher})", r) for r in ranks]
    print(f"\nmodel: {n_params / 1e6:.0f}M params; full size {full_bf16:.0f} MiB bf16, "
          f"{full_fp32:.0f} MiB fp32")
    print(f"{'load':32s} {'baseline':>9s} {'peak':>9s} {'load_peak':>10s} {'after':>9s} "
          f"{'vs_plain':>9s} {'vs_bf16':>8s} {'s':>6s}")
    for label, r in rows:
        load = r["peak_mib"] - r["baseline_mib"]
        plain_load = plain["peak_mib"] - plain["baseline_mib"]
        print(f"{label:32s} {r['baseline_mib']:9.0f} {r['peak_mib']:9.0f} {load:10.0f} "
              f"{r['after_mib']:9.0f} {load / plain_load:9.2f} {load / full_bf16:8.2f} "
              f"{r['seconds']:6.1f}")
    print("(MiB; load_peak = VmHWM after loading - VmRSS before loading; vs_bf16 = load_peak /"
          " full model size in bf16)")
    for label, r in rows[:2]:
        print(f"{label}: after reading every weight once RSS {r['touched_mib']:.0f} MiB "
              f"(+{r['touched_mib'] - r['baseline_mib']:.0f} over baseline; weights "
              f"{', '.join(r['dtypes'])})")
    for r in ranks:
        print(f"zero3 rank {r['rank']}: holds {r['llm_partition_mib']:.0f} MiB of the "
              f"{r['llm_full_mib']:.0f} MiB LLM parameters (+ ECG front end "
              f"{r['front_end_mib']:.1f} MiB, LoRA {r['lora_mib']:.1f} MiB, whole on each rank)")
    plain_load = plain["peak_mib"] - plain["baseline_mib"]
    worker_loads = [r["peak_mib"] - r["baseline_mib"] for r in ranks]
    headline = {
        "n_params": n_params, "full_bf16_mib": round(full_bf16, 1),
        "full_fp32_mib": round(full_fp32, 1),
        "plain_fp32_load_mib": round(plain_load, 1),
        "lowmem_bf16_load_mib": round(lowmem["peak_mib"] - lowmem["baseline_mib"], 1),
        "lowmem_bf16_resident_after_touch_mib": round(lowmem["touched_mib"]
                                                      - lowmem["baseline_mib"], 1),
        "zero3_worker_load_mib": [round(v, 1) for v in worker_loads],
        "zero3_worker_partition_mib": [round(r["llm_partition_mib"], 1) for r in ranks],
        "zero3_max_worker_vs_plain": round(max(worker_loads) / plain_load, 3),
        "zero3_max_worker_vs_full_bf16": round(max(worker_loads) / full_bf16, 3),
        "launcher": args.launcher,
    }
    print(json.dumps(headline), flush=True)


if __name__ == "__main__":
    main()
