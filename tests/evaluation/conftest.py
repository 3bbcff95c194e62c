"""Shared fixtures for metric tests: one WordNet reader and one BERTScore encoder per session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
os.environ.setdefault("ECGLM_CACHE", str(REPO / ".cache"))


@pytest.fixture(scope="session")
def wordnet():
    from ecglm.evaluation.resources import DEBIAN_WORDNET, load_wordnet

    if not (DEBIAN_WORDNET / "data.noun").exists():
        pytest.skip("WordNet missing: apt-get install -y wordnet-base wordnet-sense-index")
    return load_wordnet()


@pytest.fixture(scope="session")
def java() -> str:
    path = shutil.which("java")
    if path is None:
        pytest.skip("java not on PATH (coco-caption tokenisation)")
    return path


@pytest.fixture(scope="session")
def bert_scorer():
    from ecglm.evaluation.bertscore import BertScorer

    return BertScorer()


@pytest.fixture(scope="session")
def tiny_eval(ray_session, tmp_path_factory: pytest.TempPathFactory):
    """(prepared tiny run, checkpoint folder of its untrained-but-seeded model).

    The checkpoint holds the seeded initial trainable weights, so evaluation tests need no
    training run.
    """
    from ecglm.checkpoint import TRAINABLE_FILE
    from ecglm.models.from_checkpoint import load_model  # noqa: F401  (import check)
    from ecglm.models.ecg_lm import build_ecg_lm
    from ecglm.train.run import prepare
    from tests.train.conftest import tiny_config

    root = tmp_path_factory.mktemp("tiny_eval")
    prep = prepare(tiny_config(root))
    ckpt = root / "runs" / "ckpt" / "checkpoint"
    import torch

    torch.manual_seed(prep.cfg.seed)
    build_ecg_lm(prep.cfg).save_trainable(ckpt / TRAINABLE_FILE)
    return prep, ckpt
