"""The throughput benchmark's pieces (``jobs/bench/train_throughput.py``): the FLOP formula
against torch's FLOP counter on a real tiny model, the overhead arithmetic, the GPU peak
table, the headline keys, and (slow) a tiny end-to-end run."""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.helpers import REPO, load_script, tiny_config

SCRIPT = REPO / "jobs" / "bench" / "train_throughput.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """The benchmark script imported as a module (its ``main`` does not run)."""
    return load_script(SCRIPT, "train_throughput")


def test_flop_formula_on_known_numbers(bench: ModuleType) -> None:
    shape = bench.LLMShape(n_matmul=1000, n_trainable=10, n_layers=2, d_attn=8)
    f = bench.llm_flops_per_token(shape, seq_len=4)
    attn = 4 * 2 * 4 * 8  # 4 L s d
    assert f["forward"] == 2 * 1000 + attn
    assert f["backward"] == 2 * 1000 + 2 * 10 + 2 * attn
    assert f["total"] == f["forward"] + f["backward"]
    # full fine-tuning (every weight trainable) is the usual 6N + 12 L s d
    full = bench.llm_flops_per_token(bench.LLMShape(1000, 1000, 2, 8), 4)
    assert full["total"] == 6 * 1000 + 12 * 2 * 4 * 8


def test_flop_formula_matches_flop_counter_on_tiny_ecg_lm(bench: ModuleType,
                                                          tmp_path: Path) -> None:
    """The stated formula equals torch's FlopCounterMode on one LoRA training step of the
    product model (eager attention, so that the attention matmuls are counted too)."""
    import torch

    from ecglm.models.ecg_lm import build_ecg_lm

    cfg = tiny_config(tmp_path)
    torch.manual_seed(0)
    model = build_ecg_lm(cfg)
    model.llm.get_base_model().set_attn_implementation("eager")
    model.train()
    shape = bench.llm_shape(model)
    n_lora = sum(p.numel() for n, p in model.llm.named_parameters()
                 if p.requires_grad and "lora_" in n)
    assert shape.n_trainable == n_lora > 0
    assert shape.n_layers == cfg.llm.tiny.n_layers and shape.d_attn == cfg.llm.tiny.hidden_size
    n_samples = int(cfg.data.fs * cfg.data.seconds)
    (batch,) = bench.fixed_batches(1, 2, 24, n_samples, 300, seed=0)
    n_prefix = bench.prefix_tokens(model, batch)
    assert n_prefix == cfg.mapper.n_tokens
    counted = bench.count_flops(model, batch)
    seq = 24 + n_prefix
    predicted = bench.llm_flops_per_token(shape, seq)["total"] * 2 * seq
    llm_counted = counted["step_counted"] - counted["front_end_counted"]
    assert counted["front_end_counted"] > 0
    assert llm_counted == pytest.approx(predicted, rel=0.01)
    assert all(p.grad is None for p in model.parameters())  # count_flops cleared them


def test_fixed_batches_are_seeded_and_shaped(bench: ModuleType) -> None:
    a = bench.fixed_batches(2, 3, 10, 50, 100, seed=7)
    b = bench.fixed_batches(2, 3, 10, 50, 100, seed=7)
    assert a[0]["signals"].shape == (3, 1, 12, 50) and a[0]["input_ids"].shape == (3, 10)
    assert all((x[k] == y[k]).all() for x, y in zip(a, b) for k in x)
    assert not (a[0]["input_ids"] == a[1]["input_ids"]).all()
    assert (a[0]["labels"][:, :5] == -100).all() and (a[0]["labels"][:, 5:] >= 0).all()


def test_ray_overhead_excludes_warmup_and_pairs_steps(bench: ModuleType) -> None:
    ray = [9.0, 1.1, 1.2, 3.0]   # first step is warm-up; step 3 hit a load spike on both
    bare = [5.0, 1.0, 1.0, 3.0]
    o = bench.ray_overhead(ray, bare, warmup=1)
    assert o["total"] == pytest.approx((1.1 + 1.2 + 3.0) / (1.0 + 1.0 + 3.0) - 1)
    assert o["median"] == pytest.approx(0.1)  # ratios 1.1, 1.2, 1.0
    with pytest.raises(ValueError, match="same steps"):
        bench.ray_overhead(ray, bare[:3], warmup=1)
    with pytest.raises(ValueError, match="--warmup 4"):
        bench.ray_overhead(ray, bare, warmup=4)


def test_gpu_peak_table(bench: ModuleType) -> None:
    assert bench.gpu_peak_flops("NVIDIA H200") == 989e12
    assert bench.gpu_peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert bench.gpu_peak_flops("NVIDIA H100 PCIe") == 756e12
    assert bench.gpu_peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert bench.gpu_peak_flops("NVIDIA L4") == 121e12
    assert bench.gpu_peak_flops("Some Future Accelerator") is None
    assert bench.mfu(1e12, 2.0, 1e12) == 0.5


def test_turns_order_and_timeout(bench: ModuleType, tmp_path: Path) -> None:
    turns = bench.Turns(tmp_path, timeout_s=0.05)
    turns.wait("ray", -1)  # nothing to wait for before the first step
    turns.mark("ray", 0)
    turns.wait("ray", 0)
    with pytest.raises(TimeoutError, match="bare step 0"):
        turns.wait("bare", 0)
    # a side whose process exited is not waited for until the timeout
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (tmp_path / "bare-pid").write_text(dead)
    with pytest.raises(RuntimeError, match="bare process exited before step 1"):
        bench.Turns(tmp_path, timeout_s=60).wait("bare", 1)


def test_headline_has_the_issue_keys_and_consistent_numbers(bench: ModuleType) -> None:
    args = argparse.Namespace(warmup=1, batch_size=2, seq_len=10, quick=True, size="tiny",
                              strategy="ddp", zero=3, precision="fp32", threads=2, steps=3,
                              loadavg_start=1.0)
    cfg = tiny_config(Path("/tmp/unused"))
    ray_out = {"prefix_tokens": 4, "llm_shape": {"n_matmul": 1000, "n_trainable": 10,
                                                  "n_layers": 2, "d_attn": 8},
               "flops": {"front_end_counted": 500.0, "step_counted": 1.0},
               "step_s": [5.0, 1.0, 3.0], "cpu_s": [9.0, 2.0, 2.0], "losses": [1.0, 0.9, 0.8],
               "peak_rss_mib": 600.0,
               "peak_gpu_mib": None, "first_step_end": 110.0, "fit_start": 100.0,
               "loop_entered": 104.0, "model_built": 105.0, "ray_init_s": 4.0, "threads": 2,
               "niceness": 15,
               "peak_flops_measured": 1e9}
    bare = {"step_s": [4.0, 1.0, 1.0], "cpu_s": [8.0, 2.0, 1.0], "losses": [1.0, 0.9, 0.8],
            "peak_rss_mib": 590.0,
            "peak_gpu_mib": None, "build_and_first_step_s": 3.0, "niceness": 15}
    head = bench.headline(args, cfg, ray_out, bare, None)
    assert set(bench.HEADLINE_KEYS) <= set(head)
    tokens = 2 * (10 + 4)
    assert head["tokens_per_step"] == tokens
    assert head["tokens_per_s_per_worker"] == pytest.approx(tokens / 2.0, abs=0.1)
    assert head["ray_train_overhead"] == pytest.approx(1.0)
    assert head["ray_train_overhead_cpu_time"] == pytest.approx(4.0 / 3.0 - 1.0, abs=1e-4)
    assert head["time_to_first_step_s"] == 10.0
    assert head["peak_rss_mib"] == 600.0 and head["loss_max_abs_diff_ray_vs_bare"] == 0.0
    flops = bench.llm_flops_per_token(bench.LLMShape(1000, 10, 2, 8), 14)["total"] * tokens
    assert head["flops_per_step"] == flops + 500.0
    assert head["mfu"] == pytest.approx((flops + 500.0) / 2.0 / 1e9, rel=1e-3)
    json.dumps(head)  # the headline is one JSON line
    no_bare = bench.headline(args, cfg, ray_out, None, None)
    assert no_bare["ray_train_overhead"] is None and "tokens_per_s_bare" not in no_bare


def test_llama_shapes_are_the_public_sizes(bench: ModuleType) -> None:
    """Parameter counts of the random-init architectures (meta device, nothing written)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    expected = {"1b": 1.24e9, "8b": 8.03e9}  # Llama-3.2-1B, Llama-3.1-8B
    for size, n in expected.items():
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(LlamaConfig(**bench.LLAMA_SHAPES[size]))
        assert sum(p.numel() for p in model.parameters()) == pytest.approx(n, rel=0.01)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_quick_tiny_run_end_to_end(tmp_path: Path) -> None:
    """``--size tiny``: the bare loop and the Ray Train worker take the same steps on the same
    batches (identical losses) and the headline carries every key with sane values."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "platform"), "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--size", "tiny", "--quick", "--steps", "4",
         "--warmup", "1", "--threads", "1", "--cache-dir", str(tmp_path / "models"),
         "--work", str(tmp_path / "work")],
        capture_output=True, text=True, env=env, timeout=220)
    assert proc.returncode == 0, proc.stderr[-4000:]
    head = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("tokens_per_s_per_worker", "ray_train_overhead", "mfu", "peak_rss_mib",
                "time_to_first_step_s"):
        assert isinstance(head[key], (int, float)) and math.isfinite(head[key]), key
    assert head["tokens_per_s_per_worker"] > 0 and 0 < head["mfu"] < 1
    assert head["peak_rss_mib"] > 100 and head["time_to_first_step_s"] > 0
    assert head["loss_max_abs_diff_ray_vs_bare"] == 0.0
    assert len(head["step_s_ray"]) == len(head["step_s_bare"]) == 4
    assert all(c > 0 for c in head["cpu_s_ray"] + head["cpu_s_bare"])
    assert head["ray_worker_threads"] == 1
    assert head["bare_niceness"] == head["ray_worker_niceness"]
    assert "[throughput] ray:" in proc.stdout
