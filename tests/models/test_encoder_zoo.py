"""The encoder zoo: cmelt, temporal_conv, ts_transformer, image and dual behind build_encoder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from ecglm.config.schema import (
    ConfigError,
    EncoderConfig,
    ImageEncoderConfig,
    LLMConfig,
    TemporalConvConfig,
    TinyVisionConfig,
    TSTransformerConfig,
)
from ecglm.models.dims import llm_dims
from ecglm.models.encoders import (
    CheckpointError,
    ECGEncoder,
    ModelInputError,
    build_encoder,
    mask_leads,
    tiny_tower_dir,
    time_series_part,
)
from tests.helpers import write_record_shards

FS = 100.0
"""Sampling rate of the test ECGs (Hz): 500 samples = 5 s, half of the rendered paper."""
T = 500
NAMES = ["cmelt", "temporal_conv", "ts_transformer", "image", "dual"]
TS_NAMES = ["cmelt", "temporal_conv", "ts_transformer", "dual"]
IMAGE_NAMES = ["image", "dual"]
TOWER_KEY = "tower."
"""Prefix of the vision tower's parameters inside an ImageEncoder."""


def _image_cfg(**kw: object) -> ImageEncoderConfig:
    base: dict = dict(source="tiny", image_size=64,
                      tiny=TinyVisionConfig(hidden_size=24, n_layers=2, n_heads=2,
                                            intermediate_size=48, patch_size=16))
    base.update(kw)
    return ImageEncoderConfig(**base)


def _cfg(name: str, **kw: object) -> EncoderConfig:
    base: dict = dict(
        name=name, d_model=32, n_layers=1, n_heads=2, dropout=0.0, conv_channels=[16, 16],
        conv_kernels=[10, 5], conv_strides=[5, 5],
        temporal_conv=TemporalConvConfig(channels=[8, 16], kernel=5, pool=2, proj_hidden=32,
                                         out_dim=20),
        ts_transformer=TSTransformerConfig(patch_size=50, max_patches=16),
        image=_image_cfg())
    base.update(kw)
    return EncoderConfig(**base)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache folder for the tiny vision towers of this module."""
    return tmp_path_factory.mktemp("vision-cache")


def _build(name: str, cache: Path, seed: int = 0, **kw: object) -> ECGEncoder:
    torch.manual_seed(seed)
    return build_encoder(_cfg(name, **kw), fs=FS, cache_dir=str(cache))


def _signals(batch: int = 3, n_samples: int = T, seed: int = 0) -> torch.Tensor:
    """ECG-like ``(B, 12, n)`` mV: a ~72 bpm sine with per-lead gain plus noise."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(n_samples, dtype=torch.float32) / FS
    gain = 0.5 + torch.rand(batch, 12, 1, generator=gen)
    return gain * torch.sin(2 * torch.pi * 1.2 * t) + 0.2 * torch.randn(
        batch, 12, n_samples, generator=gen)


def _expected_lengths(name: str) -> tuple[int, int | None]:
    """(time-series or image token count, image token count for dual)."""
    n_img = (64 // 16) ** 2
    lengths = {"cmelt": ((T - 10) // 5 + 1 - 5) // 5 + 1, "temporal_conv": 1,
               "ts_transformer": T // 50, "image": n_img, "dual": T // 50}
    return lengths[name], (n_img if name == "dual" else None)


# --------------------------------------------------------------------------------------------
# shapes, determinism, sensitivity
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_output_shapes_and_widths(name: str, cache: Path) -> None:
    enc = _build(name, cache).eval()
    out = enc(_signals(2))
    width = {"cmelt": 32, "temporal_conv": 20, "ts_transformer": 32, "image": 24, "dual": 32}
    assert enc.out_dim == width[name]
    assert enc.image_dim == (24 if name == "dual" else None)
    n_tok, n_img = _expected_lengths(name)
    assert out.pooled.shape == (2, enc.out_dim)
    assert out.tokens.shape == (2, n_tok, enc.out_dim)
    if name == "temporal_conv":  # one token: the pooled vector itself
        torch.testing.assert_close(out.tokens[:, 0], out.pooled)
    else:
        torch.testing.assert_close(out.pooled, out.tokens.mean(dim=1))
    if n_img is None:
        assert out.image_tokens is None
    else:
        assert out.image_tokens is not None and out.image_tokens.shape == (2, n_img, 24)


@pytest.mark.parametrize("name", NAMES)
def test_eval_is_deterministic_per_sample_and_uses_the_signal(name: str, cache: Path) -> None:
    enc = _build(name, cache).eval()
    x = _signals(3)
    first, second = enc(x), enc(x)
    torch.testing.assert_close(first.pooled, second.pooled, rtol=0, atol=0)
    alone = enc(x[1:2])
    torch.testing.assert_close(alone.pooled, first.pooled[1:2], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(first.pooled[0], first.pooled[1], atol=1e-3)
    if name == "dual":
        assert first.image_tokens is not None and alone.image_tokens is not None
        assert not torch.allclose(first.image_tokens[0], first.image_tokens[1], atol=1e-3)
        torch.testing.assert_close(alone.image_tokens, first.image_tokens[1:2], atol=1e-5,
                                   rtol=1e-4)


# --------------------------------------------------------------------------------------------
# lead masking
# --------------------------------------------------------------------------------------------

def test_mask_leads_zeroes_whole_leads() -> None:
    torch.manual_seed(0)
    x = _signals(16) + 3.0  # no lead is zero by itself
    masked = mask_leads(x, 0.5)
    zero, same = (masked == 0).all(dim=2), (masked == x).all(dim=2)
    assert bool((zero | same).all())
    assert 0.3 < float(zero.float().mean()) < 0.7
    assert torch.equal(mask_leads(x, 0.0), x)


@pytest.mark.parametrize("name", TS_NAMES)
def test_lead_masking_in_training_only(name: str, cache: Path) -> None:
    """Training forward == forward of the explicitly masked signal without masking; eval
    forward never masks."""
    p = 0.5
    masked_enc = _build(name, cache, lead_mask_prob=p)
    plain_enc = _build(name, cache, lead_mask_prob=0.0)
    plain_enc.load_state_dict(masked_enc.state_dict())
    x = _signals(4)
    # eval first: training forwards update temporal_conv's BatchNorm running statistics
    torch.testing.assert_close(masked_enc.eval()(x).pooled, plain_enc.eval()(x).pooled)
    torch.manual_seed(123)
    out = masked_enc.train()(x)
    torch.manual_seed(123)
    keep = (torch.rand(4, 12, 1) >= p).float()
    assert 0 < int(keep.sum()) < keep.numel()
    ref = plain_enc.train()(x * keep)
    torch.testing.assert_close(out.pooled, ref.pooled)
    unmasked = plain_enc.train()(x)
    assert not torch.allclose(out.pooled, unmasked.pooled, atol=1e-4)
    if name == "dual":  # the image shows the unmasked ECG
        assert out.image_tokens is not None and unmasked.image_tokens is not None
        torch.testing.assert_close(out.image_tokens, unmasked.image_tokens)


def test_image_encoder_ignores_lead_masking(cache: Path) -> None:
    enc = _build("image", cache, lead_mask_prob=0.5)
    x = _signals(2)
    torch.testing.assert_close(enc.train()(x).tokens, enc.eval()(x).tokens)


# --------------------------------------------------------------------------------------------
# trainable flags
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("trainable", [True, False])
def test_trainable_flag_freezes_exactly_the_time_series_part(name: str, trainable: bool,
                                                             cache: Path) -> None:
    enc = _build(name, cache, trainable=trainable)
    ts = time_series_part(enc)
    ts_ids = {id(p) for p in ts.parameters()} if ts is not None else set()
    assert (ts is None) == (name == "image")
    for pname, param in enc.named_parameters():
        if id(param) in ts_ids:
            assert param.requires_grad == trainable, pname
        else:  # the vision tower: frozen by default whatever encoder.trainable says
            assert TOWER_KEY in pname and not param.requires_grad, pname
    n_tower = sum(1 for pname, _ in enc.named_parameters() if TOWER_KEY in pname)
    assert (n_tower > 0) == (name in IMAGE_NAMES)


@pytest.mark.parametrize("name", IMAGE_NAMES)
def test_trainable_image_tower_gets_gradients_but_not_the_rendering(name: str,
                                                                    cache: Path) -> None:
    enc = _build(name, cache, image=_image_cfg(trainable=True), trainable=False)
    assert all(p.requires_grad for n, p in enc.named_parameters() if TOWER_KEY in n)
    x = _signals(2).requires_grad_(True)
    out = enc.train()(x)
    img = out.image_tokens if name == "dual" else out.tokens
    assert img is not None and img.requires_grad
    img.sum().backward()
    assert x.grad is None  # rendering is numpy: no gradient to the signal
    grads = [p.grad for n, p in enc.named_parameters() if TOWER_KEY in n]
    assert any(g is not None and float(g.abs().sum()) > 0 for g in grads)


def test_frozen_image_tower_runs_without_autograd(cache: Path) -> None:
    enc = _build("image", cache)
    out = enc.train()(_signals(2))
    assert not out.tokens.requires_grad


# --------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------

def _save_ts(enc: ECGEncoder, path: Path) -> None:
    part = time_series_part(enc)
    assert part is not None
    save_file({k: v.contiguous() for k, v in part.state_dict().items()}, str(path))


@pytest.mark.parametrize("name", TS_NAMES)
def test_checkpoint_round_trip_and_mismatch(name: str, cache: Path, tmp_path: Path) -> None:
    source = _build(name, cache, seed=1).eval()
    ckpt = tmp_path / "ts.safetensors"
    _save_ts(source, ckpt)
    assert not any(k.startswith(TOWER_KEY) or ".tower." in k for k in load_file(str(ckpt)))
    loaded = _build(name, cache, seed=2, checkpoint=str(ckpt)).eval()
    fresh = _build(name, cache, seed=2).eval()
    x = _signals(2)
    torch.testing.assert_close(loaded(x).pooled, source(x).pooled)
    assert not torch.allclose(fresh(x).pooled, source(x).pooled, atol=1e-4)

    with pytest.raises(CheckpointError, match="file not found"):
        _build(name, cache, checkpoint=str(tmp_path / "missing.safetensors"))
    other = dict(d_model=64, n_heads=2,
                 temporal_conv=TemporalConvConfig(channels=[8, 24], kernel=5, pool=2,
                                                  proj_hidden=32, out_dim=20))
    with pytest.raises(CheckpointError, match="does not fit"):
        _build(name, cache, checkpoint=str(ckpt), **other)


def test_ts_transformer_checkpoint_loads_into_dual(cache: Path, tmp_path: Path) -> None:
    ts = _build("ts_transformer", cache, seed=3).eval()
    ckpt = tmp_path / "ts.safetensors"
    _save_ts(ts, ckpt)
    dual = _build("dual", cache, seed=4, checkpoint=str(ckpt)).eval()
    x = _signals(2)
    torch.testing.assert_close(dual(x).tokens, ts(x).tokens)


def test_image_encoder_refuses_a_checkpoint(cache: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="encoder.checkpoint"):
        _build("image", cache, checkpoint=str(tmp_path / "x.safetensors"))


# --------------------------------------------------------------------------------------------
# bad inputs
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_bad_input_shapes_raise_model_input_error(name: str, cache: Path) -> None:
    enc = _build(name, cache).eval()
    for bad in (torch.zeros(2, 8, T), torch.zeros(12, T), torch.zeros(0, 12, T)):
        with pytest.raises(ModelInputError, match=r"encoder input x: expected shape \(B, 12, T\)"):
            enc(bad)


@pytest.mark.parametrize("name,too_short", [("cmelt", 29), ("temporal_conv", 3),
                                            ("ts_transformer", 49), ("dual", 49)])
def test_too_short_signals_are_refused(name: str, too_short: int, cache: Path) -> None:
    enc = _build(name, cache).eval()
    with pytest.raises(ModelInputError, match=f"T >= {too_short + 1}"):
        enc(torch.zeros(2, 12, too_short))
    enc(torch.randn(2, 12, too_short + 1))


def test_ts_transformer_drops_the_remainder_and_caps_patches(cache: Path) -> None:
    enc = _build("ts_transformer", cache).eval()
    x = _signals(2, n_samples=T + 30)
    changed = x.clone()
    changed[:, :, T:] = 5.0  # the last 30 samples do not fill a patch
    out = enc(x)
    assert out.tokens.shape[1] == T // 50
    torch.testing.assert_close(enc(changed).tokens, out.tokens)
    with pytest.raises(ModelInputError, match="max_patches=16"):
        enc(torch.zeros(1, 12, 17 * 50))


def test_ts_transformer_patches_are_lead_major_time_slices(cache: Path) -> None:
    enc = _build("ts_transformer", cache)
    x = torch.arange(2 * 12 * 100, dtype=torch.float32).view(2, 12, 100)
    patches = enc.patchify(x)  # type: ignore[operator]
    assert patches.shape == (2, 2, 600)
    torch.testing.assert_close(patches[1, 1, 50:100], x[1, 1, 50:100])


def test_temporal_conv_needs_two_ecgs_in_training(cache: Path) -> None:
    enc = _build("temporal_conv", cache)
    with pytest.raises(ModelInputError, match="B >= 2"):
        enc.train()(_signals(1))
    assert enc.eval()(_signals(1)).pooled.shape == (1, 20)


# --------------------------------------------------------------------------------------------
# temporal_conv width = LLM head dimension
# --------------------------------------------------------------------------------------------

def test_temporal_conv_width_defaults_to_the_llm_head_dim(models_cache: Path) -> None:
    llm = LLMConfig(source="tiny", cache_dir=str(models_cache))
    dims = llm_dims(llm)
    assert dims.head_dim == llm.tiny.hidden_size // llm.tiny.n_heads
    assert (dims.hidden_size, dims.n_heads, dims.n_layers) == (
        llm.tiny.hidden_size, llm.tiny.n_heads, llm.tiny.n_layers)
    cfg = _cfg("temporal_conv", temporal_conv=TemporalConvConfig(
        channels=[8], kernel=5, pool=2, proj_hidden=16, out_dim=None))
    enc = build_encoder(cfg, llm_head_dim=dims.head_dim).eval()
    assert enc.out_dim == dims.head_dim
    assert enc(_signals(2)).pooled.shape == (2, dims.head_dim)
    with pytest.raises(ConfigError, match="encoder.temporal_conv.out_dim"):
        build_encoder(cfg)


# --------------------------------------------------------------------------------------------
# image towers
# --------------------------------------------------------------------------------------------

def test_tiny_tower_is_written_once_and_loaded_from_disk(tmp_path: Path) -> None:
    cache = tmp_path / "models"
    cfg = _cfg("image")
    first = build_encoder(cfg, fs=FS, cache_dir=str(cache))
    folder = tiny_tower_dir(cfg.image, cache)
    weights = folder / "model.safetensors"
    assert (folder / "config.json").is_file() and weights.is_file()
    stamp = weights.stat().st_mtime_ns
    torch.manual_seed(99)  # the tower's init is seeded, not drawn from the global RNG
    second = build_encoder(cfg, fs=FS, cache_dir=str(cache))
    assert weights.stat().st_mtime_ns == stamp
    assert [p.name for p in cache.iterdir()] == [folder.name]  # no temp folders left
    for (k1, v1), (k2, v2) in zip(first.state_dict().items(), second.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    # a fresh cache rebuilds the same weights
    other = build_encoder(cfg, fs=FS, cache_dir=str(tmp_path / "elsewhere"))
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(),
                                                 other.state_dict().values()))
    # the encoder really loads the folder: edited weights on disk show up in the next build
    state = load_file(str(weights))
    key = next(k for k in state if k.endswith("patch_embedding.weight"))
    state[key] = torch.zeros_like(state[key])
    save_file(state, str(weights), metadata={"format": "pt"})
    edited = build_encoder(cfg, fs=FS, cache_dir=str(cache))
    assert float(edited.state_dict()["tower." + key].abs().sum()) == 0.0


def test_image_tokens_follow_feature_layer_and_drop_cls(cache: Path) -> None:
    x = _signals(2)
    base = _build("image", cache).eval()
    with_cls = _build("image", cache, image=_image_cfg(drop_cls=False)).eval()
    last = _build("image", cache, image=_image_cfg(feature_layer=-1)).eval()
    tokens = base(x).tokens
    assert with_cls(x).tokens.shape == (2, 17, 24)
    torch.testing.assert_close(with_cls(x).tokens[:, 1:], tokens)
    assert not torch.allclose(last(x).tokens, tokens, atol=1e-4)


def test_image_config_errors_name_the_field(cache: Path) -> None:
    with pytest.raises(ConfigError, match="encoder.image.feature_layer"):
        _build("image", cache, image=_image_cfg(feature_layer=3))
    with pytest.raises(ConfigError, match="encoder.image.image_size"):
        _build("image", cache, image=_image_cfg(image_size=32))
    folder = tiny_tower_dir(_image_cfg(), cache)
    _build("image", cache)  # writes the 64 px tower
    with pytest.raises(ConfigError, match="encoder.image.image_size: the tower"):
        _build("image", cache, image=_image_cfg(source="path", path=str(folder), image_size=96))
    with pytest.raises(ConfigError, match="encoder.image.path"):
        _build("image", cache, image=_image_cfg(source="path", path=str(cache / "nowhere")))


def test_image_normalisation_uses_the_preprocessor_config(cache: Path, tmp_path: Path) -> None:
    import json
    import shutil

    folder = tiny_tower_dir(_image_cfg(), cache)
    _build("image", cache)
    copy = tmp_path / "tower"
    shutil.copytree(folder, copy)
    (copy / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]}))
    clip = _build("image", cache, image=_image_cfg(source="path", path=str(folder))).eval()
    custom = _build("image", cache, image=_image_cfg(source="path", path=str(copy))).eval()
    x = _signals(1)
    raw = (clip.pixels(x) * clip.pixel_std + clip.pixel_mean)  # type: ignore[operator]
    assert float(raw.min()) >= -1e-5 and float(raw.max()) <= 1 + 1e-5
    torch.testing.assert_close(custom.pixels(x), (raw - 0.5) / 0.25)  # type: ignore[operator]


# --------------------------------------------------------------------------------------------
# retrieval artifact (retrieval_encoder / build_retrieval / load_retrieval_encoder)
# --------------------------------------------------------------------------------------------

def _shards(root: Path, n: int = 8) -> Any:
    """A minimal shard folder: ``n`` records (6 train, 2 test), 5 s at 100 Hz."""
    return write_record_shards(root, _signals(n, seed=7).numpy(), list(range(101, 101 + n)),
                               ["train"] * (n - 2) + ["test"] * 2)


@pytest.mark.parametrize("name", ["cmelt", "temporal_conv", "image", "dual"])
def test_retrieval_artifact_round_trip(name: str, tmp_path: Path, models_cache: Path) -> None:
    from ecglm.config.schema import DataConfig, ExperimentConfig, MapperConfig
    from ecglm.retrieval.build import (
        ENCODER_WEIGHTS,
        build_retrieval,
        embed,
        load_retrieval_encoder,
        retrieval_encoder,
    )

    enc_cfg = _cfg(name)
    if name == "temporal_conv":  # width from the LLM head dimension
        enc_cfg.temporal_conv = TemporalConvConfig(channels=[8], kernel=5, pool=2,
                                                   proj_hidden=16, out_dim=None)
    mapper = MapperConfig(name="gem_projector" if name == "dual" else "et_mapper")
    cfg = ExperimentConfig(seed=3, encoder=enc_cfg, mapper=mapper,
                           data=DataConfig(fs=100, seconds=5.0),
                           llm=LLMConfig(source="tiny", cache_dir=str(models_cache)))
    art = build_retrieval(cfg, _shards(tmp_path / "shards"))
    assert art.index_size == 6 and len(art.neighbours) == 8
    assert all(len(v) == cfg.retrieval.top_k for v in art.neighbours.values())

    built = retrieval_encoder(cfg)
    loaded = load_retrieval_encoder(art.folder)
    sig = _signals(3, seed=11).numpy()
    assert embed(loaded, sig).shape == (3, built.out_dim)
    torch.testing.assert_close(torch.from_numpy(embed(loaded, sig)),
                               torch.from_numpy(embed(built, sig)))
    stored = load_file(str(art.folder / ENCODER_WEIGHTS))
    part = time_series_part(built)
    expected = set() if part is None else set(part.state_dict())
    assert set(stored) == expected  # never the vision tower
    if name == "cmelt":  # unchanged format: the whole encoder's state dict
        assert set(stored) == set(built.state_dict())
    if name == "temporal_conv":
        assert built.out_dim == llm_dims(cfg.llm).head_dim
