"""Parameter counts, the plan of real presets, ``ecglm plan --json`` and the preflight refusal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import get_peft_model
from transformers import AutoModelForCausalLM

from ecglm.cli import main
from ecglm.config import load_config
from ecglm.config.schema import LoRAConfig
from ecglm.models.ecg_lm import build_ecg_lm
from ecglm.models.llm import lora_config
from ecglm.models.params import model_counts
from ecglm.plan.arch import arch_from_hf, builtin_config, lora_params
from ecglm.plan.planner import Hardware, make_plan, workload_and_sizes
from ecglm.plan.preflight import MemoryPlanError, check_memory, detect_hardware
from tests.helpers import REPO, tiny_config


@pytest.mark.parametrize("name", ["llama-1b", "llama-8b"])
@pytest.mark.parametrize("targets", [["q_proj", "v_proj"], ["all-linear"]])
def test_counts_equal_the_model_on_the_meta_device(name: str, targets: list[str]) -> None:
    config = builtin_config(name)
    lora = LoRAConfig(r=16, target_modules=targets)
    with torch.device("meta"):
        model = get_peft_model(AutoModelForCausalLM.from_config(config), lora_config(lora))
    base = sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)
    adapters = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    arch = arch_from_hf(config, name)
    assert arch.params() == base
    assert lora_params(arch, lora) == adapters


def test_tiny_config_counts_equal_the_built_model(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path)
    counts = model_counts(build_ecg_lm(cfg))
    _, wl, sizes, c = workload_and_sizes(cfg)
    assert c["llm"] == counts.llm[0] and c["lora"] == counts.lora[1]
    assert c["ecg_side"] == counts.encoder[0] + counts.mapper[0]
    assert sizes.trainable == counts.trainable
    assert wl.prefix_tokens > 0 and wl.seq == cfg.llm.max_length + wl.prefix_tokens


def _json_last_line(capsys: pytest.CaptureFixture[str]) -> dict:
    out = capsys.readouterr().out.strip().splitlines()
    assert not out[-1].startswith("|")
    return json.loads(out[-1])


def test_plan_cli_prints_one_json_line_last(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["plan", str(REPO / "jobs/configs/tiny.yaml"), f"llm.cache_dir={tmp_path}/m",
               "--cpu-mem-gib", "16", "--json"])
    assert rc == 0
    data = _json_last_line(capsys)
    assert data["fits"] is True and data["per_gpu_gib"] > 0
    assert data["recommended"]["train.strategy"] == "ddp"
    assert data["hardware"]["use_gpu"] is False


def test_plan_70b_on_40gib_gpus_recommends_zero3(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["plan", str(REPO / "jobs/configs/meit_reports.yaml"), "--model", "llama-70b",
               "train.precision=bf16", "llm.dtype=bfloat16", "--nodes", "1",
               "--gpus-per-node", "8", "--gpu-mem-gib", "40", "--cpu-mem-gib", "1024", "--json"])
    assert rc == 0
    data = _json_last_line(capsys)
    assert data["fits"] is False  # the preset's ZeRO-2 holds 70B x 2 bytes per GPU
    assert data["breakdown_gib"]["params"] > 130 and data["setting"]["train.zero_stage"] == 2
    rec = data["recommended"]
    assert rec["train.zero_stage"] == 3 and rec["per_gpu_gib"] <= 40
    assert 1 <= rec["train.batch_size"] <= rec["max_micro_batch"]


def test_plan_without_any_fitting_setting(capsys: pytest.CaptureFixture[str]) -> None:
    # one 2 GiB GPU: the 1.5 GiB runtime plus ZeRO-3's gathered largest layer (1 GiB) never fit
    rc = main(["plan", str(REPO / "jobs/configs/meit_reports.yaml"), "--model", "llama-8b",
               "--gpus-per-node", "1", "--gpu-mem-gib", "2", "--cpu-mem-gib", "64", "--json"])
    assert rc == 0
    data = _json_last_line(capsys)
    assert data["fits"] is False and data["recommended"] is None


def test_preflight_refuses_with_the_numbers() -> None:
    cfg = load_config(REPO / "jobs/configs/meit_reports.yaml", ["train.precision=bf16",
                                                               "llm.dtype=bfloat16"])
    hw = Hardware(nodes=1, gpus_per_node=4, gpu_mem_gib=12.0, cpu_mem_gib=256.0)
    with pytest.raises(MemoryPlanError) as err:
        check_memory(cfg, hw)
    msg = str(err.value)
    plan = make_plan(cfg, hw)
    assert f"needs {plan.configured.per_device / 2**30:.2f} GiB per GPU" in msg
    assert "12.00 GiB per GPU" in msg and "cheapest setting that fits" in msg
    assert plan.recommended is not None
    rec = plan.recommended.setting
    assert f"train.zero_stage={rec.zero_stage}" in msg and f"train.batch_size={rec.micro_batch}" in msg
    # the recommended setting passes the same check; memory_check=false skips it
    fixed = load_config(REPO / "jobs/configs/meit_reports.yaml", [
        "train.precision=bf16", "llm.dtype=bfloat16", f"train.zero_stage={rec.zero_stage}",
        f"train.offload_optimizer={rec.offload_optimizer}",
        f"train.offload_params={rec.offload_params}", f"train.batch_size={rec.micro_batch}",
        f"train.gradient_checkpointing={rec.gradient_checkpointing}"])
    assert check_memory(fixed, hw) is not None
    assert check_memory(load_config(REPO / "jobs/configs/meit_reports.yaml", [
        "train.memory_check=false"]), hw) is None


def test_detect_hardware_without_ray(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, "train.num_workers=2")
    hw, _ = detect_hardware(cfg)
    assert hw.use_gpu is False and hw.gpu_mem_gib is None and hw.cpu_mem_gib > 1
    assert hw.world == 2
    gpu = tiny_config(tmp_path, "train.use_gpu=true", "train.gpu_mem_gib=40")
    hw, _ = detect_hardware(gpu)
    assert hw.use_gpu and hw.gpu_mem_gib == 40 and hw.world == gpu.train.num_workers


@pytest.mark.slow
def test_train_refuses_before_ray_train_starts(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """``ecglm train`` of a setting that cannot fit exits 2 with the numbers; no Train run
    (no storage folder, no MLflow store) was started."""
    root = tmp_path
    rc = main(["train", str(REPO / "jobs/configs/tiny.yaml"),
               f"data.synthetic_root={root}/synthetic", f"data.shard_dir={root}/shards",
               f"llm.cache_dir={root}/models", f"tracking.tracking_uri=sqlite:///{root}/db",
               f"output_dir={root}/runs", f"train.storage_path={root}/ray",
               "train.use_gpu=true", "train.gpu_mem_gib=1", "train.num_workers=1"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "does not fit: needs" in err and "1.00 GiB per GPU" in err
    assert not (root / "ray").exists() and not (root / "db").exists()


def test_preflight_skips_families_it_cannot_count(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(vocab_size=300, n_embd=32, n_layer=1, n_head=2)).save_pretrained(
        str(folder))
    cfg = tiny_config(tmp_path, "llm.source=path", f"llm.path={folder}")
    hw = Hardware(nodes=1, gpus_per_node=1, gpu_mem_gib=None, cpu_mem_gib=0.001, use_gpu=False)
    assert check_memory(cfg, hw) is None
    assert "memory check skipped" in capsys.readouterr().err


def test_tiny_cpu_setting_that_cannot_fit_is_refused(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path)
    hw = Hardware(nodes=1, gpus_per_node=2, gpu_mem_gib=None, cpu_mem_gib=1.0, use_gpu=False)
    with pytest.raises(MemoryPlanError, match=r"GiB per worker .* 1\.00 GiB host per node"):
        check_memory(cfg, hw)


def test_llm_path_may_name_a_builtin_or_a_preset_hub_id() -> None:
    from ecglm.config.schema import LLMConfig
    from ecglm.plan.arch import ArchError, llm_arch

    by_path = llm_arch(LLMConfig(source="path", path="llama-70b"))
    assert by_path.params() == arch_from_hf(builtin_config("llama-70b")).params()
    assert 70.0e9 < by_path.params() < 71.0e9
    hub = llm_arch(LLMConfig(source="path", path="meta-llama/Llama-3.2-1B-Instruct"))
    assert hub.tie_word_embeddings and 1.2e9 < hub.params() < 1.3e9
    with pytest.raises(ArchError, match="llama-1b"):
        llm_arch(LLMConfig(source="path", path="x"), model="llama-3b")
