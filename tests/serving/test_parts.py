"""Each Serve replica loads only its own part (no Ray needed: the deployment classes are
instantiated directly), and the chained parts answer exactly like the whole model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from torch import nn

import ecglm.models.ecg_lm as ecg_lm_module
import ecglm.serving.parts as serving_parts
from ecglm.models import ECGFrontEnd, PrefixLM, build_ecg_lm
from ecglm.data.rows import QARow
from ecglm.serving.catalog import MAIN_MODEL, ServedModel
from ecglm.serving.deployments import LLM, ECGEncoder
from ecglm.serving.messages import GenerationRequest
from ecglm.serving.parts import serve_prompt
from ecglm.tasks.base import serving_row
from ecglm.tasks.encode import prompt_ids_batch
from tests.helpers import load_checkpoint, tiny_config, write_checkpoint


def refuse(*args: object, **kwargs: object) -> None:
    raise AssertionError("this replica must not load the LLM")


def modules_of(obj: object) -> list[nn.Module]:
    return [v for v in vars(obj).values() if isinstance(v, nn.Module)]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path]:
    root = tmp_path_factory.mktemp("parts")
    cfg = tiny_config(root)
    return cfg, write_checkpoint(cfg, root / "checkpoint")


def test_encoder_replica_holds_no_llm_and_llm_replica_no_encoder(
        checkpoint: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, folder = checkpoint
    models = {MAIN_MODEL: ServedModel(MAIN_MODEL, cfg, folder)}
    monkeypatch.setattr(serving_parts, "load_retrieval_encoder", lambda folder: nn.Identity())
    with monkeypatch.context() as patch:  # any attempt to load the LLM fails
        patch.setattr(ecg_lm_module, "load_llm", refuse)
        patch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)
        encoder = ECGEncoder.func_or_class(models, str(folder), cfg.serve.encoder)
    assert isinstance(encoder.front_end, ECGFrontEnd)
    held = [m for module in modules_of(encoder.part) for m in module.modules()]
    assert not any(isinstance(m, transformers.PreTrainedModel) for m in held)

    llm = LLM.func_or_class(models, cfg.serve.llm)
    assert isinstance(llm.part.model, PrefixLM)
    assert not any(hasattr(m, "encoder") or hasattr(m, "mapper") for m in modules_of(llm.part))

    full = build_ecg_lm(cfg)  # the pre-split serving model: everything in one replica
    load_checkpoint(full, folder / "trainable.safetensors")
    full.eval()
    rng = np.random.default_rng(0)
    signal = (0.3 * rng.standard_normal((12, cfg.data.n_samples))).astype(np.float32)
    encoded = encoder.part.prefix(signal)
    with torch.no_grad():
        want_prefix, want_mask = full.ecg_prefix(torch.from_numpy(signal)[None, None], None)
    assert torch.equal(encoded.prefix, want_prefix)
    assert torch.equal(encoded.prefix_mask, want_mask)

    row = serving_row(QARow, question="Which rhythm does this ECG show?",
                      options=("sinus rhythm", "atrial fibrillation"))
    reports = ["sinus rhythm, normal ecg"]
    got = llm.generate([GenerationRequest(encoded.prefix, encoded.prefix_mask, row,
                                          reports)])[0]
    prompt = serve_prompt(cfg, full.tokenizer, row, reports)
    batch = prompt_ids_batch([prompt], full.tokenizer, cfg)
    ids = full.generate_ids(torch.from_numpy(signal)[None, None], None, batch["input_ids"],
                            batch["attention_mask"], cfg.llm.max_new_tokens,
                            prefix_at=batch.get("prefix_at"))
    assert got.generated == full.decode(ids)[0]
