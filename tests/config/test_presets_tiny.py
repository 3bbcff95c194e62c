"""Presets load at full size and shrink with --tiny without changing their architecture."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecglm.cli import build_parser
from ecglm.config import load_config, to_dict
from ecglm.config.tiny import TINY_FIXED

REPO = Path(__file__).resolve().parents[2]
PRESETS = {
    "qheart_ecgqa": ("qa", "cmelt", "et_mapper", "input_prefix"),
    "meit_reports": ("report", "temporal_conv", "head_tile", "kv_prefix"),
    "gem_grounding": ("grounding", "dual", "gem_projector", "input_prefix"),
}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_parts_and_tiny_keeps_architecture(preset: str) -> None:
    path = REPO / "jobs" / "configs" / f"{preset}.yaml"
    full = load_config(path)
    task, enc, mapper, fusion = PRESETS[preset]
    assert (full.task, full.encoder.name, full.mapper.name, full.fusion.name) == PRESETS[preset]
    assert full.llm.source == "path" and full.train.use_gpu  # paper size: real LLM on GPUs
    tiny = load_config(path, ["train.max_steps=2"], tiny=True)
    assert (tiny.task, tiny.encoder.name, tiny.mapper.name, tiny.fusion.name) == PRESETS[preset]
    assert tiny.lora.target_modules == full.lora.target_modules
    assert (tiny.train.strategy, tiny.train.zero_stage, tiny.train.schedule) == (
        full.train.strategy, full.train.zero_stage, full.train.schedule)
    assert tiny.llm.source == "tiny" and not tiny.train.use_gpu
    assert tiny.train.max_steps == 2  # CLI overrides win over the tiny sizes
    assert tiny.name == f"{preset}-tiny" and tiny.encoder.d_model < full.encoder.d_model
    flat = to_dict(tiny)
    for key, value in TINY_FIXED.items():
        if key == "train.max_steps":
            continue
        node = flat
        for part in key.split("."):
            node = node[part]
        assert node == value, key


def test_tiny_is_idempotent_and_cli_flag_parses() -> None:
    path = REPO / "jobs" / "configs" / "gem_grounding.yaml"
    once = load_config(path, tiny=True)
    from ecglm.config.tiny import shrink

    assert to_dict(shrink(once)) == to_dict(once)
    args, extra = build_parser().parse_known_args(["train", str(path), "--tiny",
                                                   "train.max_steps=2"])
    assert args.tiny and [*args.overrides, *extra] == ["train.max_steps=2"]
