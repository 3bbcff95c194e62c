"""Merged LoRA export: peft-free folder whose logits match the live (unmerged) model.

Tolerance: merging changes the float32 arithmetic (``x (W + s B A)^T`` instead of
``x W^T + s (x A^T) B^T``), so logits are compared with ``atol = rtol = 1e-5``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
import torch
from peft import PeftModel

from ecglm.cli import main
from ecglm.config.loader import dump_yaml
from ecglm.config.schema import ExperimentConfig
from ecglm.models import CheckpointError, ECGLanguageModel, build_ecg_lm
from ecglm.models.export import export_merged, load_exported
from tests.models.test_fusion import kv_cfg, prompt_batch, randomize_lora
from tests.helpers import save_checkpoint

Signals = Callable[..., torch.Tensor]
TOL = {"atol": 1e-5, "rtol": 1e-5}


def _logits(model: ECGLanguageModel, signals: torch.Tensor,
            batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(signals, torch.tensor([[True, False], [True, True]]), **batch).logits


@pytest.mark.parametrize("fusion", ["input_prefix", "kv_prefix"])
def test_merged_export_matches_unmerged(fusion: str, make_cfg: Callable[..., ExperimentConfig],
                                        make_signals: Signals, tmp_path: Path) -> None:
    cfg = make_cfg() if fusion == "input_prefix" else kv_cfg(make_cfg)
    model = build_ecg_lm(cfg).eval()
    randomize_lora(model)
    batch = prompt_batch(model)
    signals = make_signals(2, 2, seed=4)
    live = _logits(model, signals, batch)
    with model.llm.disable_adapter():
        without_lora = _logits(model, signals, batch)
    assert (live - without_lora).abs().amax() > 1e-3  # the merge is not a no-op

    out = export_merged(model, tmp_path / "export")
    # the live model is untouched: still peft, same logits bit for bit
    assert isinstance(model.llm, PeftModel)
    torch.testing.assert_close(_logits(model, signals, batch), live, atol=0, rtol=0)

    loaded = load_exported(out)
    assert not isinstance(loaded.llm, PeftModel)
    assert not any("lora_" in n for n, _ in loaded.named_parameters())
    assert not any(p.requires_grad for p in loaded.parameters())
    assert sum(p.numel() for p in loaded.llm.parameters()) == sum(
        p.numel() for n, p in model.llm.named_parameters() if "lora_" not in n)
    torch.testing.assert_close(_logits(loaded, signals, batch), live, **TOL)
    mask = torch.tensor([[True, False], [True, True]])
    assert loaded.generate_ids(signals, mask, batch["input_ids"], batch["attention_mask"], 5) \
        == model.generate_ids(signals, mask, batch["input_ids"], batch["attention_mask"], 5)


def test_export_cli_from_checkpoint_folder(make_cfg: Callable[..., ExperimentConfig],
                                           make_signals: Signals, tmp_path: Path) -> None:
    cfg = make_cfg()
    trained = build_ecg_lm(cfg).eval()
    randomize_lora(trained)
    ckpt = tmp_path / "ckpt"
    save_checkpoint(trained, ckpt)
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(dump_yaml(cfg))
    out = tmp_path / "merged"
    assert main(["export", str(cfg_path), "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    batch = prompt_batch(trained)
    signals = make_signals(2, 2, seed=5)
    torch.testing.assert_close(_logits(load_exported(out), signals, batch),
                               _logits(trained, signals, batch), **TOL)
    with pytest.raises(CheckpointError, match="not an ecglm export"):
        load_exported(ckpt)


def test_gem_export_is_self_contained(models_cache: Path, tmp_path: Path) -> None:
    """The dual encoder's vision tower travels in the export (vision/), its weights are not
    duplicated in ecg.safetensors, and the folder loads from a new place with the same logits."""
    import shutil

    from safetensors.torch import load_file as load_st

    from ecglm.config import load_config
    from ecglm.models.export import ECG_FILE, VISION_DIR

    repo = Path(__file__).resolve().parents[2]
    cfg = load_config(repo / "jobs/configs/gem_grounding.yaml",
                      [f"llm.cache_dir={models_cache}"], tiny=True)
    model = build_ecg_lm(cfg).eval()
    randomize_lora(model)
    out = export_merged(model, tmp_path / "export")
    assert (out / VISION_DIR / "config.json").is_file()
    assert not any(".tower." in k or k.startswith("encoder.image.tower")
                   for k in load_st(str(out / ECG_FILE)))
    moved = tmp_path / "elsewhere"
    shutil.move(str(out), str(moved))
    loaded = load_exported(moved)
    assert loaded.cfg.encoder.image.path == str(moved / VISION_DIR)
    n = int(cfg.data.fs * cfg.data.seconds)
    signals = torch.randn(2, 1, 12, n, generator=torch.Generator().manual_seed(3)) * 0.3
    ids = torch.randint(5, 100, (2, 6), generator=torch.Generator().manual_seed(4))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        torch.testing.assert_close(loaded(signals, None, ids, mask).logits,
                                   model(signals, None, ids, mask).logits, **TOL)
