"""Shared fixtures for metric tests: one WordNet reader and one BERTScore encoder per session,
a fake OpenAI-compatible judge server, and a tiny prepared run with a seeded checkpoint."""

from __future__ import annotations

import os
import shutil
import threading
from http.server import HTTPServer
from pathlib import Path
from typing import Iterator

import pytest
import torch

from ecglm.evaluation.bertscore import BertScorer
from ecglm.evaluation.resources import DEBIAN_WORDNET, load_wordnet
from ecglm.models.ecg_lm import build_ecg_lm
from ecglm.train.run import Prepared, prepare
from tests.helpers import REPO, ChatReplies, save_checkpoint, tiny_config

os.environ.setdefault("ECGLM_CACHE", str(REPO / ".cache"))


@pytest.fixture(scope="session")
def wordnet():
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
def bert_scorer() -> BertScorer:
    return BertScorer()


@pytest.fixture()
def server() -> Iterator[tuple[ChatReplies, str]]:
    """``(replies, base URL)`` of a fake OpenAI-compatible chat server on 127.0.0.1; append the
    canned answers to ``replies.replies``."""
    replies = ChatReplies([])
    httpd = HTTPServer(("127.0.0.1", 0), replies.handler())
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield replies, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="session")
def tiny_eval(ray_session, tmp_path_factory: pytest.TempPathFactory) -> tuple[Prepared, Path]:
    """(prepared tiny run, checkpoint folder of its untrained-but-seeded model); starts Ray.

    The checkpoint holds the seeded initial trainable weights, so evaluation tests need no
    training run.
    """
    root = tmp_path_factory.mktemp("tiny_eval")
    prep = prepare(tiny_config(root))
    ckpt = root / "runs" / "ckpt" / "checkpoint"
    torch.manual_seed(prep.cfg.seed)
    save_checkpoint(build_ecg_lm(prep.cfg), ckpt)
    return prep, ckpt
