"""Model parts with interfaces: the ECG front end without the LLM, the LLM side without the
encoder, fusion objects chosen once, one registration per encoder."""

from __future__ import annotations

import inspect
import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Callable

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

import ecglm.models.ecg_lm as ecg_lm_module
from ecglm.config.encoders import EncoderName, encoder_sections
from ecglm.config.schema import (
    ConfigError,
    EncoderConfig,
    ExperimentConfig,
    FusionConfig,
    ImageEncoderConfig,
    MapperConfig,
    TemporalConvConfig,
    TinyVisionConfig,
    TSTransformerConfig,
)
from ecglm.config.tiny import TINY_FIXED
from ecglm.models import (
    CheckpointError,
    ECGFrontEnd,
    ECGLanguageModel,
    FrontEndSpec,
    InputPrefixFusion,
    KVPrefixFusion,
    LLMDims,
    build_ecg_lm,
    build_front_end,
    build_fusion,
    collate,
    load_front_end,
    load_front_end_from_checkpoint,
    load_prefix_lm,
    save_front_end,
)
from ecglm.models.encoders import ENCODERS, encoder_spec, write_tiny_tower
from tests.helpers import save_checkpoint

CfgFactory = Callable[..., ExperimentConfig]
Signals = Callable[..., torch.Tensor]


def meit_cfg(make_cfg: CfgFactory, encoder_trainable: bool = True) -> ExperimentConfig:
    """temporal_conv (batch norm) -> head_tile -> kv_prefix on the tiny Llama."""
    encoder = EncoderConfig(name="temporal_conv", trainable=encoder_trainable,
                            temporal_conv=TemporalConvConfig(channels=[8, 8], kernel=7, pool=2,
                                                             proj_hidden=32))
    return replace(make_cfg(), encoder=encoder, mapper=MapperConfig(name="head_tile", n_tokens=1),
                   fusion=FusionConfig(name="kv_prefix"))


def trained(cfg: ExperimentConfig, signals: torch.Tensor) -> ECGLanguageModel:
    """``build_ecg_lm(cfg)`` with every trainable tensor perturbed and batch-norm statistics
    moved by train-mode forward passes (as after training)."""
    model = build_ecg_lm(cfg)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for _, param in model.named_parameters():
            if param.requires_grad:
                param.add_(0.03 * torch.randn(param.shape, generator=gen))
        model.train()
        for _ in range(2):
            model.ecg_prefix(signals * 1.5, None)
    return model.eval()


def nowhere(*args: object, **kwargs: object) -> None:
    raise AssertionError("the LLM was touched")


def forbid_llm(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every way of loading or sizing the LLM fail."""
    monkeypatch.setattr(ecg_lm_module, "load_llm", nowhere)
    monkeypatch.setattr(ecg_lm_module, "llm_dims", nowhere)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", nowhere)


def prompts(model: ECGLanguageModel) -> dict[str, torch.Tensor]:
    tok = model.tokenizer
    return collate([{"input_ids": tok(t, add_special_tokens=False)["input_ids"]}
                    for t in ("Describe this ECG.", "Is the rhythm regular? Answer briefly.")],
                   tok.pad_token_id)


@pytest.mark.parametrize("kind", ["qheart", "meit"])
def test_saved_front_end_loads_without_the_llm_and_matches_bit_for_bit(
        kind: str, make_cfg: CfgFactory, make_signals: Signals, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = make_cfg() if kind == "qheart" else meit_cfg(make_cfg)
    signals = make_signals(2, 2, seed=3)
    model = trained(cfg, signals)
    ecg_mask = torch.tensor([[True, False], [True, True]])
    with torch.no_grad():
        want, want_mask = model.ecg_prefix(signals, ecg_mask)
    folder = save_front_end(model.front_end, tmp_path / "front_end")
    saved = load_file(str(folder / "front_end.safetensors"))
    assert set(saved) == {f"encoder.{k}" for k in model.encoder.state_dict()} | {
        f"mapper.{k}" for k in model.mapper.state_dict()}
    if kind == "meit":  # batch-norm statistics travel with the weights
        assert any("running_mean" in k for k in saved)

    forbid_llm(monkeypatch)
    loaded = load_front_end(folder)
    assert isinstance(loaded, ECGFrontEnd) and not loaded.training
    assert not any(n.startswith("llm") for n, _ in loaded.named_parameters())
    with torch.no_grad():
        got, got_mask = loaded(signals, ecg_mask)
    assert torch.equal(got, want) and torch.equal(got_mask, want_mask)


def test_front_end_from_a_checkpoint_matches_the_full_model(
        make_cfg: CfgFactory, make_signals: Signals, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    signals = make_signals(2, 1, seed=4)
    for i, cfg in enumerate([make_cfg(), meit_cfg(make_cfg, encoder_trainable=False)]):
        model = trained(cfg, signals)
        file = save_checkpoint(model, tmp_path / f"ckpt{i}")
        with torch.no_grad():
            want, _ = model.ecg_prefix(signals, None)
        with monkeypatch.context() as patch:
            patch.setattr(ecg_lm_module, "load_llm", nowhere)
            front_end = load_front_end_from_checkpoint(cfg, file)
        with torch.no_grad():
            got, _ = front_end(signals, None)
        assert torch.equal(got, want)  # frozen encoder: the same seeded initialisation
        assert sum(p.numel() for p in front_end.parameters()) == sum(
            p.numel() for p in model.encoder.parameters()) + sum(
            p.numel() for p in model.mapper.parameters())


@pytest.mark.parametrize("kind", ["qheart", "meit"])
def test_llm_side_loads_only_llm_keys_and_generates_like_the_full_model(
        kind: str, make_cfg: CfgFactory, make_signals: Signals, tmp_path: Path) -> None:
    cfg = make_cfg() if kind == "qheart" else meit_cfg(make_cfg)
    signals = make_signals(2, 1, seed=5)
    model = trained(cfg, signals)
    file = save_checkpoint(model, tmp_path)
    side = load_prefix_lm(cfg, file)
    assert not hasattr(side, "encoder") and not hasattr(side, "mapper")
    assert isinstance(side.fusion, KVPrefixFusion if kind == "meit" else InputPrefixFusion)
    batch = prompts(model)
    with torch.no_grad():
        prefix, prefix_mask = model.ecg_prefix(signals, None)
        want = model.forward_from_prefix(prefix, prefix_mask, **batch).logits
        got = side.forward_from_prefix(prefix, prefix_mask, **batch).logits
    assert torch.equal(got, want)
    assert side.generate_from_prefix(prefix, prefix_mask, **batch) == model.generate_ids(
        signals, None, **batch)

    state = load_file(str(file))  # the ECG-side keys are ignored, the LoRA keys required
    save_file({k: v for k, v in state.items() if not k.startswith("encoder.")},
              str(tmp_path / "no_encoder.safetensors"))
    load_prefix_lm(cfg, tmp_path / "no_encoder.safetensors")
    lora = sorted(k for k in state if k.startswith("llm."))
    save_file({k: v for k, v in state.items() if k != lora[0]},
              str(tmp_path / "missing.safetensors"))
    with pytest.raises(CheckpointError, match="missing keys"):
        load_prefix_lm(cfg, tmp_path / "missing.safetensors")


def test_fusion_is_an_object_chosen_once() -> None:
    assert isinstance(build_fusion(FusionConfig()), InputPrefixFusion)
    assert build_fusion(FusionConfig(position="placeholder")).position == "placeholder"
    assert isinstance(build_fusion(FusionConfig(name="kv_prefix")), KVPrefixFusion)
    bad = FusionConfig()
    bad.name = "cross_attention"  # type: ignore[assignment]
    with pytest.raises(ConfigError, match="fusion.name"):
        build_fusion(bad)
    source = inspect.getsource(ecg_lm_module)
    assert "kv_prefix\"" not in source and "fusion.name ==" not in source


def test_every_encoder_has_one_registration_that_config_and_retrieval_read() -> None:
    assert set(ENCODERS) == set(EncoderName.__args__)
    sections = set(encoder_sections())
    for name, spec in ENCODERS.items():
        assert encoder_spec(name) is spec and spec.name == name
        assert set(spec.sections) <= sections
        assert spec.config_classes[0] is EncoderConfig
        for key, value in spec.tiny.items():  # --tiny applies every encoder's overrides
            assert TINY_FIXED[key] == value, key
    assert encoder_spec("dual").sections == ("ts_transformer", "image")
    with pytest.raises(ConfigError, match="encoder.name"):
        encoder_spec("resnet")


def test_saved_front_end_carries_its_vision_tower(make_signals: Signals, tmp_path: Path) -> None:
    """A dual (GEM) front end whose tower came from a folder loads after that folder is gone,
    with the tower's pixel statistics."""
    tiny = TinyVisionConfig(hidden_size=24, n_layers=1, n_heads=2, intermediate_size=48,
                            patch_size=16)
    tower = Path(shutil.copytree(write_tiny_tower(ImageEncoderConfig(
        source="tiny", image_size=64, tiny=tiny), tmp_path / "cache"), tmp_path / "tower"))
    (tower / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.5, 0.4, 0.3], "image_std": [0.2, 0.25, 0.3]}))
    encoder = EncoderConfig(name="dual", d_model=32, n_layers=1, n_heads=2, dropout=0.0,
                            ts_transformer=TSTransformerConfig(patch_size=50, max_patches=16),
                            image=ImageEncoderConfig(source="path", path=str(tower),
                                                     image_size=64))
    dims = LLMDims(hidden_size=32, n_heads=2, n_kv_heads=2, head_dim=16, n_layers=1,
                   model_type="llama")
    spec = FrontEndSpec(encoder, MapperConfig(name="gem_projector", n_tokens=2, dropout=0.0),
                        fs=100.0, dims=dims, cache_dir=str(tmp_path / "cache"))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        front_end = build_front_end(spec).eval()
    signals = make_signals(2, 1, seed=6)
    with torch.no_grad():
        want, _ = front_end(signals, None)
    folder = save_front_end(front_end, tmp_path / "saved")
    shutil.rmtree(tower)
    loaded = load_front_end(folder)
    image = next(m for m in loaded.encoder.modules() if hasattr(m, "pixel_mean"))
    assert image.pixel_mean.flatten().tolist() == pytest.approx([0.5, 0.4, 0.3])
    with torch.no_grad():
        got, _ = loaded(signals, None)
    assert torch.equal(got, want)
