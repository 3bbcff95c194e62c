"""Fixtures for the serving tests: a tiny trained-looking checkpoint served on a free port."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
import torch

from ecglm.config import ExperimentConfig, dump_yaml
from ecglm.train.run import Prepared
from tests.train.conftest import tiny_config

MAX_BODY_BYTES = 300_000
"""``serve.max_body_bytes`` of the served test app (a tiny 100 Hz x 10 s ECG is ~120 kB)."""


@dataclass
class Served:
    """A running test application."""

    url: str
    cfg: ExperimentConfig
    prep: Prepared
    checkpoint: Path
    ready_s: float


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_checkpoint(cfg: ExperimentConfig, folder: Path) -> Path:
    """``build_ecg_lm(cfg)`` (seeded) with every trainable tensor perturbed deterministically, as
    after training, saved as ``trainable.safetensors`` + ``config.yaml`` in ``folder``.

    The perturbation makes a served answer depend on the checkpoint actually being loaded
    (a seeded rebuild alone would not match).
    """
    from ecglm.models.ecg_lm import build_ecg_lm

    torch.manual_seed(cfg.seed)
    model = build_ecg_lm(cfg)
    gen = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.requires_grad:
                scale = 0.05 if "lora_B" in name else 0.02
                param.add_(scale * torch.randn(param.shape, generator=gen))
    model.save_trainable(folder / "trainable.safetensors")
    (folder / "config.yaml").write_text(dump_yaml(cfg))
    return folder


@pytest.fixture(scope="module")
def served(ray_session, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """Shards + retrieval (tiny synthetic config), a checkpoint, and the app started with
    :func:`ecglm.serving.launch.start`; stopped after the module."""
    import time

    from ecglm.serving.launch import start, stop
    from ecglm.train.run import prepare

    root = tmp_path_factory.mktemp("serving")
    cfg = tiny_config(root, f"serve.port={free_port()}", f"serve.max_body_bytes={MAX_BODY_BYTES}")
    prep = prepare(cfg)
    cfg = prep.cfg
    checkpoint = write_checkpoint(cfg, root / "runs" / "tiny" / "run0" / "checkpoint")
    t0 = time.perf_counter()
    url = start(cfg, checkpoint, prep.retrieval.folder, timeout_s=120)
    ready = time.perf_counter() - t0
    try:
        yield Served(url, cfg, prep, checkpoint, ready)
    finally:
        stop()
