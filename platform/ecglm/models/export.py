"""Merged export: one self-contained folder per trained model, loadable without peft.

Layout written by :func:`export_merged`::

    out_dir/
      llm/                  plain Hugging Face folder: LoRA merged into the base weights
                            (``save_pretrained``) + tokenizer
      ecg.safetensors       full state dicts of the encoder (``encoder.*``) and mapper
                            (``mapper.*``), buffers included (batch-norm statistics); without
                            the vision tower's weights when there is one (they are in vision/)
      vision/               image/dual encoders only: the vision tower (``save_pretrained``)
                            with its pixel mean/std (``preprocessor_config.json``)
      config.yaml           the experiment config (``encoder.checkpoint`` cleared: the weights
                            are in ecg.safetensors; ``encoder.image`` points at vision/)
      ecglm_export.json     format version and file names

:func:`load_exported` rebuilds an :class:`~ecglm.models.ecg_lm.ECGLanguageModel` around the
plain merged LLM (no peft). Merging changes the arithmetic (``x (W + s B A)^T`` instead of
``x W^T + s (x A^T) B^T``), so logits agree up to float rounding (tests: ``atol 1e-5`` in
float32 on the tiny models).
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModelForCausalLM

from ecglm.config.loader import dump_yaml, from_dict
from ecglm.config.schema import ExperimentConfig
from ecglm.models.dims import dims_from_config
from ecglm.models.ecg_lm import COMPONENTS, ECGLanguageModel, front_end_spec
from ecglm.models.encoders import CheckpointError
from ecglm.models.front_end import (
    VISION_DIR,
    build_front_end,
    find_image_encoder,
    read_versioned_json,
    save_vision_tower,
)
from ecglm.models.fusion import build_fusion
from ecglm.models.llm import load_tokenizer

EXPORT_VERSION = 1
MANIFEST_FILE = "ecglm_export.json"
LLM_DIR = "llm"
ECG_FILE = "ecg.safetensors"
CONFIG_FILE = "config.yaml"


def merged_llm(llm: nn.Module, in_place: bool = False) -> nn.Module:
    """The LLM with LoRA merged into its weights, as a plain HF model (no peft wrapper).

    Args:
        llm: a peft ``PeftModel`` (or an already plain model, returned as is / copied).
        in_place: merge into ``llm`` itself (saves memory; ``llm`` is unusable afterwards).
            Default: merge a deep copy, leaving the live model untouched.
    """
    target = llm if in_place else copy.deepcopy(llm)
    merge = getattr(target, "merge_and_unload", None)
    return merge() if callable(merge) else target


def vision_tower(model: ECGLanguageModel) -> tuple[str, nn.Module] | None:
    """``(state-dict key prefix within the encoder, tower)`` of an image/dual encoder's vision
    tower, or None."""
    found = find_image_encoder(model.encoder)
    if found is None:
        return None
    name, image = found
    return (f"{name}." if name else "") + "tower.", image.tower


def ecg_state_dict(model: ECGLanguageModel, skip_prefix: str | None = None
                   ) -> dict[str, torch.Tensor]:
    """Full state dicts (parameters + persistent buffers) of the ECG-side parts, keys prefixed
    ``encoder.``/``mapper.``; CPU, contiguous, unshared copies (safetensors-ready). Encoder keys
    starting with ``skip_prefix`` (the vision tower, saved on its own) are left out."""
    state: dict[str, torch.Tensor] = {}
    for name in COMPONENTS:
        for key, value in getattr(model, name).state_dict().items():
            if name == "encoder" and skip_prefix and key.startswith(skip_prefix):
                continue
            state[f"{name}.{key}"] = value.detach().to("cpu").contiguous().clone()
    return state


def _save_vision(model: ECGLanguageModel, out: Path) -> str | None:
    """Write the vision tower + pixel statistics to ``out/vision``; its key prefix or None."""
    found = vision_tower(model)
    if found is None:
        return None
    image = find_image_encoder(model.encoder)
    assert image is not None
    save_vision_tower(image[1], out / VISION_DIR)
    return found[0]


def export_merged(model: ECGLanguageModel, out_dir: str | Path, *,
                  in_place: bool = False) -> Path:
    """Write ``model`` as a merged, peft-free folder (layout in the module docstring).

    Args:
        model: trained model (LoRA LLM).
        out_dir: target folder (created; existing files with the same names are replaced).
        in_place: merge LoRA into ``model.llm`` itself instead of a copy (for a throw-away
            model, e.g. in ``ecglm export``); ``model`` must not be used afterwards.

    Returns:
        ``out_dir`` as a :class:`Path`.
    """
    if model.cfg is None:
        raise ValueError("export_merged: the model carries no experiment config (build it with "
                         "build_ecg_lm)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    merged = merged_llm(model.llm, in_place=in_place)
    merged.save_pretrained(str(out / LLM_DIR))
    model.tokenizer.save_pretrained(str(out / LLM_DIR))
    tower_prefix = _save_vision(model, out)
    save_file(ecg_state_dict(model, tower_prefix), str(out / ECG_FILE),
              metadata={"format": "pt", "content": "ecglm-ecg-side"})
    encoder = replace(model.cfg.encoder, checkpoint=None)
    if tower_prefix is not None:  # rebuilt from the exported folder, not the original id
        encoder = replace(encoder, image=replace(encoder.image, source="path", path=VISION_DIR))
    cfg = replace(model.cfg, encoder=encoder)
    (out / CONFIG_FILE).write_text(dump_yaml(cfg))
    (out / MANIFEST_FILE).write_text(json.dumps(
        {"version": EXPORT_VERSION, "llm": LLM_DIR, "ecg": ECG_FILE, "config": CONFIG_FILE,
         "fusion": cfg.fusion.name, "lora_merged": True,
         "vision": VISION_DIR if tower_prefix is not None else None,
         "vision_prefix": tower_prefix}, indent=2))
    return out


def load_exported(out_dir: str | Path, dtype: torch.dtype = torch.float32) -> ECGLanguageModel:
    """Load a folder written by :func:`export_merged` (eval mode, everything frozen).

    Raises:
        CheckpointError: not an export folder, or the ECG-side weights do not fit the config.
    """
    root = Path(out_dir)
    info = read_versioned_json(root, MANIFEST_FILE, EXPORT_VERSION, "export")
    raw = yaml.safe_load((root / str(info["config"])).read_text()) or {}
    cfg: ExperimentConfig = from_dict(raw)
    if info.get("vision"):  # the tower saved next to the weights, wherever the folder lives
        cfg = replace(cfg, encoder=replace(cfg.encoder, image=replace(
            cfg.encoder.image, source="path", path=str(root / str(info["vision"])))))
    llm_dir = root / str(info["llm"])
    tokenizer = load_tokenizer(llm_dir)
    llm = AutoModelForCausalLM.from_pretrained(str(llm_dir), dtype=dtype)
    llm.requires_grad_(False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        front_end = build_front_end(front_end_spec(cfg, dims_from_config(llm.config)))
        model = ECGLanguageModel(front_end, llm, tokenizer, build_fusion(cfg.fusion),
                                 max_new_tokens=cfg.llm.max_new_tokens, cfg=cfg)
    state = load_file(str(root / str(info["ecg"])))
    for name in COMPONENTS:
        prefix = f"{name}."
        part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        skip = info.get("vision_prefix") if name == "encoder" else None
        try:
            result = getattr(model, name).load_state_dict(part, strict=not skip)
        except RuntimeError as exc:
            raise CheckpointError(f"{root / str(info['ecg'])}: {name} weights do not fit the "
                                  f"exported config: {exc}") from exc
        if skip:  # only the tower (loaded from vision/) may be absent, nothing unexpected
            bad = [k for k in result.missing_keys if not k.startswith(skip)]
            if bad or result.unexpected_keys:
                raise CheckpointError(f"{root / str(info['ecg'])}: encoder weights do not fit: "
                                      f"missing {bad[:5]}, unexpected "
                                      f"{result.unexpected_keys[:5]}")
    model.requires_grad_(False)
    return model.to(dtype).eval()
