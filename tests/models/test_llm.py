"""LLM folder preparation (tiny, path, SmolLM2) and LoRA loading."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from ecglm.config.schema import ExperimentConfig, LLMConfig, LoRAConfig, TinyLLMConfig
from ecglm.models import build_ecg_lm, load_llm, prepare_llm_dir
from ecglm.models.llm import LLMPrepareError, tiny_dir_name

TEXT = "Does the first ECG show atrial fibrillation in leads V1, aVR? Answer: not sure"


def test_tiny_llm_is_deterministic_fast_and_reused(tmp_path: Path) -> None:
    start = time.perf_counter()
    first = prepare_llm_dir(LLMConfig(source="tiny", cache_dir=str(tmp_path / "a")))
    elapsed = time.perf_counter() - start
    second = prepare_llm_dir(LLMConfig(source="tiny", cache_dir=str(tmp_path / "b")))
    assert elapsed < 3.0
    assert first.name == second.name == tiny_dir_name(TinyLLMConfig(), None)
    assert (first / "tokenizer.json").read_text() == (second / "tokenizer.json").read_text()
    wa, wb = load_file(str(first / "model.safetensors")), load_file(str(second / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    # a second call reuses the folder without rewriting it
    mtime = (first / "model.safetensors").stat().st_mtime_ns
    assert prepare_llm_dir(LLMConfig(source="tiny", cache_dir=str(tmp_path / "a"))) == first
    assert (first / "model.safetensors").stat().st_mtime_ns == mtime
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".")], "temp dir left"


def test_tiny_llm_loads_with_plain_from_pretrained(tmp_path: Path) -> None:
    tiny = TinyLLMConfig(hidden_size=32, n_heads=2, vocab_size=400)
    folder = prepare_llm_dir(LLMConfig(source="tiny", cache_dir=str(tmp_path), tiny=tiny),
                             corpus=["A custom sentence about QRS complexes."])
    assert folder.name != tiny_dir_name(tiny, None), "extra corpus changes the folder"
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder))
    assert model.config.hidden_size == 32
    assert model.config.vocab_size == len(tokenizer) <= 400
    assert {tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token,
            tokenizer.unk_token} == {"<s>", "</s>", "<pad>", "<unk>"}
    ids = tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == TEXT
    assert len(ids) < len(TEXT) / 2, "BPE merges compress the ECG vocabulary"
    info = json.loads((folder / "ecglm_model.json").read_text())
    assert info["source"] == "tiny"


def test_tiny_llm_rejects_impossible_sizes(tmp_path: Path) -> None:
    with pytest.raises(LLMPrepareError, match="llm.tiny.vocab_size"):
        prepare_llm_dir(LLMConfig(source="tiny", cache_dir=str(tmp_path),
                                  tiny=TinyLLMConfig(vocab_size=100)))
    with pytest.raises(LLMPrepareError, match="llm.tiny.n_heads"):
        prepare_llm_dir(LLMConfig(source="tiny", cache_dir=str(tmp_path),
                                  tiny=TinyLLMConfig(hidden_size=30, n_heads=4)))


def test_path_source_returns_the_folder(tmp_path: Path, models_cache: Path) -> None:
    tiny = prepare_llm_dir(LLMConfig(source="tiny", cache_dir=str(models_cache)))
    assert prepare_llm_dir(LLMConfig(source="path", path=str(tiny))) == tiny
    model, tokenizer = load_llm(LLMConfig(source="path", path=str(tiny)), LoRAConfig(), seed=0)
    assert tokenizer.pad_token == "<pad>"


def test_load_llm_freezes_base_and_seeds_lora(models_cache: Path) -> None:
    cfg = LLMConfig(source="tiny", cache_dir=str(models_cache))
    lora = LoRAConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj"])
    rng_before = torch.random.get_rng_state()
    model_a, tokenizer = load_llm(cfg, lora, seed=3)
    assert torch.equal(torch.random.get_rng_state(), rng_before), "caller RNG untouched"
    model_b, _ = load_llm(cfg, lora, seed=3)
    model_c, _ = load_llm(cfg, lora, seed=4)
    trainable = {n: p for n, p in model_a.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert {n.split(".")[-4] for n in trainable} == {"q_proj", "v_proj"}
    assert all(p.shape[0] == 4 or p.shape[1] == 4 for p in trainable.values())
    frozen = [n for n, p in model_a.named_parameters() if not p.requires_grad]
    assert any("embed_tokens" in n for n in frozen)
    name = next(n for n in trainable if "lora_A" in n)
    params_b = dict(model_b.named_parameters())
    params_c = dict(model_c.named_parameters())
    assert torch.equal(trainable[name], params_b[name])
    assert not torch.equal(trainable[name], params_c[name])
    assert tokenizer.pad_token_id is not None and tokenizer.eos_token_id is not None


@pytest.mark.slow
def test_smollm2_conversion(tmp_path_factory: pytest.TempPathFactory) -> None:
    cache = tmp_path_factory.mktemp("smollm2-cache")
    cfg = LLMConfig(source="smollm2", cache_dir=str(cache))
    start = time.perf_counter()
    folder = prepare_llm_dir(cfg)
    converted_s = time.perf_counter() - start
    assert folder == cache / "smollm2-135m-instruct"
    size_mb = sum(p.stat().st_size for p in folder.iterdir()) / 1e6
    assert 400 < size_mb < 700, size_mb
    start = time.perf_counter()
    assert prepare_llm_dir(cfg) == folder
    assert time.perf_counter() - start < 1.0, "second call must reuse the converted folder"
    print(f"smollm2 conversion {converted_s:.1f} s, folder {size_mb:.0f} MB")

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    text = "Sinus rhythm at 72 bpm; QRS duration 98 ms, no ST elevation in V1-V3."
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text
    assert tokenizer.eos_token is not None and tokenizer.pad_token is not None

    model = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    assert model.config.hidden_size == 576 and model.config.num_hidden_layers == 30

    def nll(sentence: str) -> float:
        ids = tokenizer(sentence, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            return float(model(input_ids=ids, labels=ids).loss)

    fluent = "The heart pumps blood through the arteries to the rest of the body."
    scrambled = "arteries body pumps the of to rest blood The the through heart the."
    assert nll(fluent) < 4.0 and nll(fluent) < nll(scrambled) - 1.0

    exp = ExperimentConfig()
    exp.llm = cfg
    exp.encoder.d_model, exp.encoder.n_layers, exp.encoder.n_heads = 32, 1, 2
    exp.encoder.conv_channels, exp.encoder.conv_kernels = [16, 16], [10, 5]
    exp.encoder.conv_strides = [5, 5]
    exp.mapper.n_layers, exp.mapper.n_heads = 1, 2
    ecg_lm = build_ecg_lm(exp).eval()
    ids = tokenizer("Question: is the rhythm regular? Answer:", return_tensors="pt")
    out = ecg_lm(torch.randn(1, 1, 12, 500), None, ids["input_ids"], ids["attention_mask"])
    assert out.logits.shape == (1, 12 + ids["input_ids"].shape[1], 49152)
    assert torch.isfinite(out.logits).all()


def test_missing_llm_folder_names_the_key(tmp_path: Path) -> None:
    """A local ``llm.path`` that does not exist fails before transformers mistakes it for a
    hub id; a hub id (``org/name``) is passed through."""
    missing = tmp_path / "no-such-llm"
    with pytest.raises(LLMPrepareError, match=f"llm.path: folder {missing} not found"):
        prepare_llm_dir(LLMConfig(source="path", path=str(missing)))
    assert prepare_llm_dir(LLMConfig(source="path", path="HuggingFaceTB/SmolLM2-135M")) == \
        Path("HuggingFaceTB/SmolLM2-135M")
