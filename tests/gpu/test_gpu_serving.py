"""The serving parts on one CUDA device (issue #12): the LLM replica's part on ``cuda`` (what
``serve.llm.num_gpus: 1`` gives a replica) answers like the CPU part, and in bfloat16 its
health probe passes. No Ray: the parts are what the replicas run. ``jobs/bench/gpu.sh`` runs
the gpu-marked tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ecglm.data.rows import QARow
from ecglm.tasks.base import serving_row
from tests.helpers import tiny_config, write_checkpoint

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def _request(cfg: object, folder: Path) -> object:
    """One QA request with the prefix the checkpoint's front end gives a random ECG."""
    from ecglm.checkpoint import TRAINABLE_FILE
    from ecglm.models import load_front_end_from_checkpoint
    from ecglm.serving.messages import GenerationRequest

    front_end = load_front_end_from_checkpoint(cfg, folder / TRAINABLE_FILE)
    signal = (0.3 * np.random.default_rng(0).standard_normal(
        (12, cfg.data.n_samples))).astype(np.float32)
    with torch.no_grad():
        prefix, mask = front_end(torch.from_numpy(signal)[None, None], None)
    row = serving_row(QARow, question="Which rhythm does this ECG show?",
                      options=("sinus rhythm", "atrial fibrillation"))
    return GenerationRequest(prefix, mask, row, ["sinus rhythm"])


def test_llm_part_on_cuda_answers_like_cpu(tmp_path: Path, device: str = "cuda") -> None:
    from ecglm.serving.parts import LLMPart

    cfg = tiny_config(tmp_path)
    folder = write_checkpoint(cfg, tmp_path / "checkpoint")
    request = _request(cfg, folder)
    on_cpu = LLMPart(cfg, folder).generate([request])[0]
    part = LLMPart(cfg, folder, torch.device(device))
    assert next(part.model.parameters()).device.type == device
    assert part.generate([request])[0].generated == on_cpu.generated
    part.health()


def test_llm_part_in_bfloat16_on_cuda(tmp_path: Path, device: str = "cuda") -> None:
    from ecglm.serving.parts import LLMPart

    cfg = tiny_config(tmp_path, "llm.dtype=bfloat16")
    folder = write_checkpoint(cfg, tmp_path / "checkpoint")
    part = LLMPart(cfg, folder, torch.device(device))
    assert len(part.generate([_request(cfg, folder)])) == 1
    dtypes = {p.dtype for p in part.model.parameters() if not p.requires_grad}
    assert torch.bfloat16 in dtypes
    part.health()
