"""Fusion: placeholder splice (input_prefix) and MEIT's key/value prefix (kv_prefix).

The kv_prefix checks run on the tiny Llama and on a tiny Qwen2 (grouped-query attention,
biased q/k/v projections) written here with ``save_pretrained``.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import GPT2Config, GPT2LMHeadModel, Qwen2Config, Qwen2ForCausalLM

from ecglm.config.schema import (
    ConfigError,
    EncoderConfig,
    ExperimentConfig,
    FusionConfig,
    LLMConfig,
    LoRAConfig,
    MapperConfig,
    TemporalConvConfig,
)
from ecglm.models import (
    IGNORE_INDEX,
    ECGLanguageModel,
    ModelInputError,
    build_ecg_lm,
    collate,
    load_llm,
    position_ids_from_mask,
    prepare_llm_dir,
)
from ecglm.models.fusion import (
    KVPrefixFusion,
    kv_prefix_modules,
    left_pad_prefix_at,
    splice,
    split_at_placeholder,
    text_index,
)

Signals = Callable[..., Tensor]
CfgFactory = Callable[..., ExperimentConfig]

PROMPTS = ["Question: does this ECG show st elevation? Answer:",
           "Which leads show t wave inversion? Options: V1, V2, none. Answer:"]


# --------------------------------------------------------------------------------------------
# fixtures and helpers
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def qwen2_dir(models_cache: Path) -> Path:
    """Tiny random Qwen2 (4 query heads, 2 key/value heads, non-zero q/k/v biases) with the
    tiny Llama's tokenizer, as a plain HF folder."""
    llama_dir = prepare_llm_dir(LLMConfig(source="tiny", cache_dir=str(models_cache)))
    out = models_cache / "tiny-qwen2"
    if (out / "config.json").is_file():
        return out
    tmp = models_cache / "tiny-qwen2.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for item in llama_dir.iterdir():
        if "token" in item.name or item.name == "special_tokens_map.json":
            shutil.copy(item, tmp / item.name)
    from ecglm.models import load_tokenizer

    tok = load_tokenizer(tmp)
    config = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=4096, tie_word_embeddings=False,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        model = Qwen2ForCausalLM(config)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith("_proj.bias"):
                    param.normal_(0.0, 0.2)
    model.save_pretrained(str(tmp))
    tmp.rename(out)
    return out


def kv_cfg(make_cfg: CfgFactory, llm_dir: Path | None = None, seed: int = 0,
           encoder_trainable: bool = True, all_linear: bool = True) -> ExperimentConfig:
    """MEIT-style tiny config: temporal_conv encoder -> head_tile -> kv_prefix (tiny Llama, or
    the LLM folder ``llm_dir``), LoRA on all linear layers."""
    base = make_cfg(seed=seed)
    llm = base.llm if llm_dir is None else replace(base.llm, source="path", path=str(llm_dir))
    lora = replace(base.lora, target_modules=["all-linear"]) if all_linear else base.lora
    encoder = EncoderConfig(name="temporal_conv", trainable=encoder_trainable,
                            temporal_conv=TemporalConvConfig(channels=[8, 8], kernel=7, pool=2,
                                                             proj_hidden=32))
    return replace(base, encoder=encoder, mapper=MapperConfig(name="head_tile", n_tokens=1),
                   fusion=FusionConfig(name="kv_prefix"), llm=llm, lora=lora)


def placeholder_cfg(make_cfg: CfgFactory, seed: int = 0) -> ExperimentConfig:
    return replace(make_cfg(seed=seed), fusion=FusionConfig(position="placeholder"))


def randomize_lora(model: nn.Module) -> None:
    """Non-zero LoRA B matrices (zero at init), as after training."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.1, generator=torch.Generator().manual_seed(len(name)))


def prompt_batch(model: ECGLanguageModel) -> dict[str, Tensor]:
    """Two right-padded prompts of different lengths."""
    tok = model.tokenizer
    return collate([{"input_ids": tok(t, add_special_tokens=False)["input_ids"]}
                    for t in PROMPTS], tok.pad_token_id)


def base_layers(model: ECGLanguageModel) -> nn.ModuleList:
    return model.llm.get_base_model().model.layers


def manual_greedy(model: ECGLanguageModel, signals: Tensor, ecg_mask: Tensor | None,
                  prompt: list[int], steps: int, prefix_at: int | None = None) -> list[int]:
    """Reference decoder: a full forward pass per step, argmax at the last text position."""
    ids = list(prompt)
    new: list[int] = []
    eos = model.tokenizer.eos_token_id
    at = None if prefix_at is None else torch.tensor([prefix_at])
    for _ in range(steps):
        input_ids = torch.tensor([ids])
        with torch.no_grad():
            out = model(signals, ecg_mask, input_ids, torch.ones_like(input_ids), prefix_at=at)
        logits = model.text_logits(out.logits, input_ids, at)
        token = int(logits[0, -1].argmax())
        if token == eos:
            break
        new.append(token)
        ids.append(token)
    return new


# --------------------------------------------------------------------------------------------
# placeholder helpers
# --------------------------------------------------------------------------------------------

def test_split_at_placeholder(tiny_model: ECGLanguageModel) -> None:
    tok = tiny_model.tokenizer
    before, after = "Question: ", " does this ECG show st elevation? Answer:"
    ids, at = split_at_placeholder(tok, before + "<ecg>" + after, "<ecg>")
    enc = lambda s: list(tok(s, add_special_tokens=False)["input_ids"])  # noqa: E731
    assert ids == enc(before) + enc(after)
    assert at == len(enc(before)) > 0
    assert split_at_placeholder(tok, "<ecg>" + after, "<ecg>") == (enc(after), 0)
    assert split_at_placeholder(tok, before + "<ecg>", "<ecg>") == (enc(before),
                                                                   len(enc(before)))
    # left truncation moves the position with the ids; a cut past it gives 0
    cut_ids, cut_at = split_at_placeholder(tok, before + "<ecg>" + after, "<ecg>",
                                           max_length=len(ids) - 2)
    assert cut_ids == ids[2:] and cut_at == at - 2
    assert split_at_placeholder(tok, before + "<ecg>" + after, "<ecg>", max_length=3) == (
        ids[-3:], 0)
    for bad in ["no marker here", "<ecg> twice <ecg>"]:
        with pytest.raises(ModelInputError, match="placeholder"):
            split_at_placeholder(tok, bad, "<ecg>")


def test_splice_matches_per_row_concatenation() -> None:
    gen = torch.Generator().manual_seed(0)
    text = torch.randn(3, 5, 4, generator=gen, requires_grad=True)
    ins = torch.randn(3, 2, 4, generator=gen, requires_grad=True)
    at = torch.tensor([0, 3, 5])
    out = splice(text, ins, at)
    for b in range(3):
        a = int(at[b])
        torch.testing.assert_close(out[b], torch.cat([text[b, :a], ins[b], text[b, a:]]),
                                   atol=0, rtol=0)
    out.sum().backward()  # differentiable w.r.t. both inputs
    assert text.grad is not None and ins.grad is not None
    assert torch.equal(ins.grad, torch.ones_like(ins))
    # 2-D (masks, labels) and prepend equals concatenation
    mask = torch.ones(3, 5, dtype=torch.long)
    assert torch.equal(splice(mask, torch.zeros(3, 2, dtype=torch.long), torch.zeros(3)
                              .long()), torch.cat([torch.zeros(3, 2, dtype=torch.long), mask], 1))
    # text_index points every text token at its fused position
    idx = text_index(at, 2, 5, 3)
    for b in range(3):
        torch.testing.assert_close(out[b, idx[b]], text[b], atol=0, rtol=0)
    with pytest.raises(ModelInputError, match="prefix_at"):
        splice(text, ins, torch.tensor([0, 6, 1]))


def test_left_pad_prefix_at() -> None:
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    # row 0: 3 tokens right-padded to width 5 -> 2 leading pads; ECG before token 1 -> index 3
    assert left_pad_prefix_at(torch.tensor([1, 4]), mask, 5).tolist() == [3, 4]
    assert left_pad_prefix_at(torch.tensor([3, 5]), mask, 5).tolist() == [5, 5]


# --------------------------------------------------------------------------------------------
# input_prefix with a placeholder
# --------------------------------------------------------------------------------------------

def test_placeholder_at_start_equals_prepend(make_cfg: CfgFactory, tiny_model: ECGLanguageModel,
                                            make_signals: Signals) -> None:
    spliced = build_ecg_lm(placeholder_cfg(make_cfg)).eval()
    batch = prompt_batch(spliced)
    signals, ecg_mask = make_signals(2, 2), torch.tensor([[True, False], [True, True]])
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, IGNORE_INDEX)
    with torch.no_grad():
        ref = tiny_model(signals, ecg_mask, **batch, labels=labels)
        got = spliced(signals, ecg_mask, **batch, labels=labels,
                      prefix_at=torch.zeros(2, dtype=torch.long))
    torch.testing.assert_close(got.logits, ref.logits, atol=0, rtol=0)
    torch.testing.assert_close(got.loss, ref.loss, atol=0, rtol=0)
    with pytest.raises(ModelInputError, match="prefix_at: required"):
        spliced(signals, ecg_mask, **batch)


def test_placeholder_splice_positions_logits_and_loss(make_cfg: CfgFactory,
                                                      make_signals: Signals) -> None:
    model = build_ecg_lm(placeholder_cfg(make_cfg)).eval()
    randomize_lora(model)
    batch = prompt_batch(model)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    at = torch.tensor([3, 5])
    labels = ids.masked_fill(mask == 0, IGNORE_INDEX)
    signals, ecg_mask = make_signals(2, 2, seed=1), torch.tensor([[True, False], [True, True]])
    with torch.no_grad():
        out = model(signals, ecg_mask, ids, mask, labels=labels, prefix_at=at)
        other = model(make_signals(2, 2, seed=9), ecg_mask, ids, mask, prefix_at=at)
        prefix, prefix_mask = model.ecg_prefix(signals, ecg_mask)
        n_prefix = prefix.shape[1]
        assert out.logits.shape == (2, n_prefix + ids.shape[1], model.llm.config.vocab_size)
        text = model.text_logits(out.logits, ids, at)
        text_other = model.text_logits(other.logits, ids, at)
        # reference: fused sequence built row by row, run through the LLM directly
        embed = model.llm.get_input_embeddings()
        for b in range(2):
            a = int(at[b])
            e = embed(ids[b:b + 1])
            fused = torch.cat([e[:, :a], prefix[b:b + 1], e[:, a:]], dim=1)
            fmask = torch.cat([mask[b:b + 1, :a], prefix_mask[b:b + 1].long(),
                               mask[b:b + 1, a:]], dim=1)
            ref = model.llm(inputs_embeds=fused, attention_mask=fmask,
                            position_ids=position_ids_from_mask(fmask)).logits
            torch.testing.assert_close(out.logits[b:b + 1], ref, atol=1e-5, rtol=1e-5)
            # text before the ECG cannot see it; text after it does, shifted by P positions
            plain = model.llm(input_ids=ids[b:b + 1, :a]).logits
            torch.testing.assert_close(text[b, :a], plain[0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(text[b, :a], text_other[b, :a], atol=0, rtol=0)
            valid_after = mask[b, a:].bool()
            assert (text[b, a:][valid_after] - text_other[b, a:][valid_after]).abs().amax() > 1e-3
            torch.testing.assert_close(out.logits[b, a + n_prefix:], text[b, a:], atol=0, rtol=0)
        # loss: labels -100 on the spliced ECG slots, usual next-token shift over the fusion
        full_labels = torch.full(out.logits.shape[:2], IGNORE_INDEX)
        full_labels.scatter_(1, text_index(at, n_prefix, ids.shape[1], 2), labels)
        manual = F.cross_entropy(out.logits[:, :-1].reshape(-1, out.logits.shape[-1]),
                                 full_labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(out.loss, manual)


def test_placeholder_generation_equals_manual_greedy(make_cfg: CfgFactory,
                                                     make_signals: Signals) -> None:
    model = build_ecg_lm(placeholder_cfg(make_cfg)).eval()
    randomize_lora(model)
    batch = prompt_batch(model)
    lengths = batch["attention_mask"].sum(1).tolist()
    at = torch.tensor([2, 6])
    signals, ecg_mask = make_signals(2, 2, seed=3), torch.tensor([[True, False], [True, True]])
    steps = 6
    got = model.generate_ids(signals, ecg_mask, batch["input_ids"], batch["attention_mask"],
                             steps, prefix_at=at)
    for row in range(2):
        prompt = batch["input_ids"][row, : lengths[row]].tolist()
        ref = manual_greedy(model, signals[row:row + 1], ecg_mask[row:row + 1], prompt, steps,
                            prefix_at=int(at[row]))
        assert got[row] == ref and 0 < len(ref) <= steps
    prefix, prefix_mask = model.ecg_prefix(signals, ecg_mask)
    assert model.generate_from_prefix(prefix, prefix_mask, batch["input_ids"],
                                      batch["attention_mask"], steps, prefix_at=at) == got


# --------------------------------------------------------------------------------------------
# kv_prefix
# --------------------------------------------------------------------------------------------

def _linear(module: nn.Module, x: Tensor) -> Tensor:
    """``module(x)`` by hand, LoRA merged in: ``x (W + s B A)^T + b``."""
    if hasattr(module, "base_layer"):
        base = module.base_layer
        delta = module.lora_B["default"].weight @ module.lora_A["default"].weight
        weight = base.weight + module.scaling["default"] * delta
        return F.linear(x, weight, base.bias)
    return F.linear(x, module.weight, module.bias)


def _rope(x: Tensor, positions: Tensor, theta: float) -> Tensor:
    """Rotary embedding by hand (rotate-half convention): ``x (B, H, L, hd)``,
    ``positions (B, L)``."""
    half = x.shape[-1] // 2
    inv_freq = 1.0 / (theta ** (torch.arange(0, x.shape[-1], 2, dtype=torch.float32)
                                / x.shape[-1]))
    angles = positions[:, None, :, None].float() * inv_freq  # (B, 1, L, hd/2)
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


def _rms(layer_norm: nn.Module, x: Tensor) -> Tensor:
    eps = layer_norm.variance_epsilon
    return layer_norm.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_kv_prefix_matches_reference_attention(family: str, make_cfg: CfgFactory,
                                               qwen2_dir: Path, make_signals: Signals) -> None:
    model = build_ecg_lm(kv_cfg(make_cfg, qwen2_dir if family == "qwen2" else None)).eval()
    randomize_lora(model)
    batch = prompt_batch(model)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    signals, ecg_mask = make_signals(2, 2, seed=2), torch.tensor([[True, False], [True, True]])
    layer = base_layers(model)[0]
    attn = layer.self_attn
    captured: dict[str, Tensor] = {}

    def hook(module: nn.Module, args: tuple, kwargs: dict, output: tuple) -> None:
        captured["x"] = kwargs["hidden_states"].detach()
        captured["y"] = output[0].detach()

    handle = attn.register_forward_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            model(signals, ecg_mask, ids, mask)
            prefix, prefix_mask = model.ecg_prefix(signals, ecg_mask)
    finally:
        handle.remove()
    cfg = model.llm.get_base_model().config
    n_heads, n_kv, hd = cfg.num_attention_heads, cfg.num_key_value_heads, attn.head_dim
    theta = float(cfg.rope_parameters["rope_theta"])
    batch_size, n_text = ids.shape
    n_prefix = prefix.shape[1]
    full_mask = torch.cat([prefix_mask.long(), mask], dim=1)
    pos = position_ids_from_mask(full_mask)
    with torch.no_grad():
        def heads(x: Tensor, n: int) -> Tensor:
            return x.view(batch_size, x.shape[1], n, hd).transpose(1, 2)

        pre = _rms(layer.input_layernorm, prefix)
        k_pre = _rope(heads(_linear(attn.k_proj, pre), n_kv), pos[:, :n_prefix], theta)
        v_pre = heads(_linear(attn.v_proj, pre), n_kv)
        x = captured["x"]
        q = _rope(heads(_linear(attn.q_proj, x), n_heads), pos[:, n_prefix:], theta)
        k = torch.cat([k_pre, _rope(heads(_linear(attn.k_proj, x), n_kv), pos[:, n_prefix:],
                                    theta)], dim=2)
        v = torch.cat([v_pre, heads(_linear(attn.v_proj, x), n_kv)], dim=2)
        k = k.repeat_interleave(n_heads // n_kv, dim=1)
        v = v.repeat_interleave(n_heads // n_kv, dim=1)
        scores = q @ k.transpose(-1, -2) / hd ** 0.5  # (B, H, S, P+S)
        key = torch.arange(n_prefix + n_text)
        query = torch.arange(n_text)
        allowed = (key[None, :] < n_prefix) | (key[None, :] - n_prefix <= query[:, None])
        allowed = allowed[None] & full_mask.bool()[:, None, :]  # (B, S, P+S)
        scores = scores.masked_fill(~allowed[:, None], float("-inf"))
        ctx = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch_size, n_text, -1)
        ref = _linear(attn.o_proj, ctx)
    assert ecg_mask[0, 1].item() is False and n_prefix == 2  # one slot masked in row 0
    valid = mask.bool()
    torch.testing.assert_close(captured["y"][valid], ref[valid], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_kv_prefix_ecg_dependence_masking_and_no_new_parameters(
        family: str, make_cfg: CfgFactory, qwen2_dir: Path, make_signals: Signals) -> None:
    cfg = kv_cfg(make_cfg, qwen2_dir if family == "qwen2" else None)
    model = build_ecg_lm(cfg).eval()
    randomize_lora(model)
    batch = prompt_batch(model)
    text = batch["attention_mask"].bool()
    signals = make_signals(2, 2, seed=0)
    other = signals.clone()
    other[:, 1] = make_signals(2, 1, seed=7)[:, 0] * 5.0
    one_slot = torch.tensor([[True, False], [True, False]])
    with torch.no_grad():
        a = model(signals, one_slot, **batch).logits
        b = model(other, one_slot, **batch).logits
        single = model(signals[:, :1], None, **batch).logits
        both = model(other, None, **batch).logits
        changed = model(make_signals(2, 2, seed=5), one_slot, **batch).logits
    assert a.shape[:2] == batch["input_ids"].shape  # kv_prefix logits cover the text only
    torch.testing.assert_close(a[text], b[text], atol=0, rtol=0)
    torch.testing.assert_close(a[text], single[text], atol=1e-5, rtol=1e-5)
    assert (both[text] - b[text]).abs().amax() > 1e-3
    assert (changed[text] - a[text]).abs().amax() > 1e-3
    # no new parameters: the LLM is exactly the LoRA model load_llm builds, head_tile has none
    reference_llm, _ = load_llm(cfg.llm, cfg.lora, cfg.seed)
    names = {n: p.shape for n, p in model.llm.named_parameters()}
    assert names == {n: p.shape for n, p in reference_llm.named_parameters()}
    assert sum(1 for _ in model.mapper.parameters()) == 0
    n_total = sum(p.numel() for p in model.parameters())
    assert n_total == (sum(p.numel() for p in model.llm.parameters())
                       + sum(p.numel() for p in model.encoder.parameters()))
    with pytest.raises(ModelInputError, match="prefix_at"):
        model(signals, one_slot, **batch, prefix_at=torch.zeros(2, dtype=torch.long))


def test_kv_prefix_gradients_reach_encoder_and_lora(make_cfg: CfgFactory,
                                                    make_signals: Signals) -> None:
    model = build_ecg_lm(kv_cfg(make_cfg)).train()
    randomize_lora(model)
    tok = model.tokenizer
    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    batch = collate([{"input_ids": i, "labels": i} for i in ids], tok.pad_token_id)
    out = model(make_signals(2, 1), None, **batch)
    out.loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert all(g is not None for g in grads.values())
    # the encoder reaches the loss only through the key/value cache
    assert all(g.abs().sum() > 0 for n, g in grads.items()
               if n.startswith("encoder.") and n.endswith("weight"))
    for proj in ("k_proj", "v_proj", "q_proj", "o_proj"):
        for part in ("lora_A", "lora_B"):
            assert any(g.abs().sum() > 0 for n, g in grads.items() if proj in n and part in n)
    base = [p for n, p in model.llm.named_parameters() if "lora_" not in n]
    assert base and all(p.grad is None and not p.requires_grad for p in base)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_kv_prefix_generation_equals_manual_greedy(family: str, make_cfg: CfgFactory,
                                                   qwen2_dir: Path,
                                                   make_signals: Signals) -> None:
    model = build_ecg_lm(kv_cfg(make_cfg, qwen2_dir if family == "qwen2" else None)).eval()
    randomize_lora(model)
    batch = prompt_batch(model)
    lengths = batch["attention_mask"].sum(1).tolist()
    assert lengths[0] != lengths[1]
    signals, ecg_mask = make_signals(2, 2, seed=3), torch.tensor([[True, False], [True, True]])
    steps = 6
    got = model.generate_ids(signals, ecg_mask, batch["input_ids"], batch["attention_mask"],
                             steps)
    for row in range(2):
        prompt = batch["input_ids"][row, : lengths[row]].tolist()
        ref = manual_greedy(model, signals[row:row + 1], ecg_mask[row:row + 1], prompt, steps)
        assert got[row] == ref and 0 < len(ref) <= steps
    prefix, prefix_mask = model.ecg_prefix(signals, ecg_mask)
    assert model.generate_from_prefix(prefix, prefix_mask, batch["input_ids"],
                                      batch["attention_mask"], steps) == got
    texts = model.generate(signals, ecg_mask, batch["input_ids"], batch["attention_mask"], steps)
    assert texts == [model.tokenizer.decode(r, skip_special_tokens=True).strip() for r in got]


def test_kv_prefix_refuses_fused_qkv_families(make_cfg: CfgFactory) -> None:
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=300, n_embd=32, n_layer=1, n_head=2,
                                      n_positions=64))
    with pytest.raises(ConfigError, match="'gpt2'"):
        kv_prefix_modules(gpt2)
    llm, tok = load_llm(make_cfg().llm, LoRAConfig(r=2, alpha=4), 0)
    modules = kv_prefix_modules(llm)  # through the peft wrapper
    assert len(modules.layers) == llm.get_base_model().config.num_hidden_layers
    assert all(layer.k_norm is None for layer in modules.layers)
    tok.pad_token = tok.pad_token or tok.eos_token
    with pytest.raises(ConfigError, match="'gpt2'"):
        ECGLanguageModel(build_ecg_lm(kv_cfg(make_cfg)).front_end, gpt2, tok, KVPrefixFusion())


def test_all_linear_lora_targets() -> None:
    from ecglm.models.llm import lora_config, lora_target_modules

    assert lora_target_modules(LoRAConfig(target_modules=["all-linear"])) == "all-linear"
    assert lora_config(LoRAConfig(target_modules=["all-linear"])).target_modules == "all-linear"
    assert lora_target_modules(LoRAConfig(target_modules=["q_proj", "v_proj"])) == [
        "q_proj", "v_proj"]
    with pytest.raises(ConfigError, match="lora.target_modules"):
        lora_target_modules(LoRAConfig(target_modules=["all-linear", "q_proj"]))


def test_kv_prefix_refuses_gradient_checkpointing_that_drops_the_cache(
        make_cfg: CfgFactory, make_signals: Signals) -> None:
    model = build_ecg_lm(kv_cfg(make_cfg))
    model.llm.get_base_model().gradient_checkpointing_enable()
    batch = prompt_batch(model)
    model.train()
    with pytest.raises(ConfigError, match="gradient checkpointing"):
        model(make_signals(2, 1), None, **batch)
    model.eval()  # in eval mode checkpointing is inactive and the cache is kept
    with torch.no_grad():
        logits = model(make_signals(2, 1), None, **batch).logits
    assert logits.shape[:2] == batch["input_ids"].shape
