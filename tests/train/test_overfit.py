"""Overfit check per preset at tiny size: the real model and batch builder learn 4 examples.

A plain in-process AdamW loop (no Ray) over :func:`ecglm.models.ecg_lm.build_ecg_lm` and
:func:`ecglm.tasks.encode.train_batch`, on 4 fixed synthetic examples given as one batch with
the fixed evaluation prompt (``rng=None``). The training loss must fall below
``FRACTION`` of its first value within ``STEPS`` steps. A wiring bug (labels shifted onto the
prompt, the ECG prefix detached, LoRA frozen, a fusion dropping its input) stops this.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from ecglm.config import ExperimentConfig, load_config
from ecglm.data.sharding import encode_signals
from ecglm.data.synthetic import simulate_labels, simulate_signal
from ecglm.data.rows import ECGRow, LabelRow
from ecglm.models.ecg_lm import build_ecg_lm
from ecglm.tasks import get_task
from ecglm.tasks.encode import train_batch
from tests.helpers import REPO

STEPS = 80
"""Optimizer steps allowed (full batch of the 4 examples each step)."""
FRACTION = 0.9
"""The loss must drop below this fraction of the first loss within :data:`STEPS` steps.

The tiny LLM's frozen output head is random (512 tokens, width 64), so its logits stay small:
the loss starts at ~ln 512 = 6.2 and flattens near 5.0 (0.8 x start) however long it trains.
Measured at :data:`LR`: 0.9 x start is reached in 12-25 steps, ~0.83 x start by step 80."""
LR = 1e-2
"""AdamW learning rate of the check (tiny models, full batch)."""

QA_ITEMS = [("Does this ECG show atrial fibrillation?", ["yes", "no"], ["no"]),
            ("Which rhythm is shown?", ["sinus rhythm", "sinus tachycardia"], ["sinus rhythm"]),
            ("Is there a left bundle branch block?", ["yes", "no"], ["yes"]),
            ("Which leads show ST elevation?", ["V1", "V2", "none"], ["none"])]
REPORTS = ["sinus rhythm. normal ecg.", "atrial fibrillation with rapid ventricular response.",
           "sinus bradycardia. left axis deviation.", "sinus rhythm. inferior infarction, old."]
LABELS = [("NORM",), ("CD", "STTC"), (), ("MI",)]


def _config(preset: str, cache: Path) -> ExperimentConfig:
    """``preset`` at ``--tiny`` size, its models cached in ``cache``."""
    return load_config(REPO / "jobs" / "configs" / f"{preset}.yaml",
                       [f"llm.cache_dir={cache}"], tiny=True)


def _rows(cfg: ExperimentConfig) -> list[ECGRow]:
    """4 typed rows of the preset's task: synthetic ECGs at ``data.fs`` with a QA item, a
    target report or a label set."""
    task = get_task(cfg.task)
    n_samples = int(round(cfg.data.fs * cfg.data.seconds))
    rows = []
    for k, rec in enumerate(simulate_labels(4, seed=0)):
        ecg = simulate_signal(rec, 0, cfg.data.fs, n_samples)[None]
        row: dict[str, Any] = {"sample_id": k, "ecg_ids": [rec.ecg_id], "n_ecg": 1,
                               "n_samples": n_samples, "signals": encode_signals(ecg),
                               "retrieved_reports": [REPORTS[(k + 1) % 4]], "target": REPORTS[k]}
        row["question"], row["options"], row["answer"] = QA_ITEMS[k]
        if issubclass(task.row_type, LabelRow):
            row["labels"], row["target"] = LABELS[k], ", ".join(LABELS[k]) or "none"
        rows.append(row)
    return task.rows(rows)


@pytest.mark.parametrize("preset", ["quickstart", "qheart_ecgqa", "meit_reports",
                                    "gem_grounding", "classify_ptbxl"])
def test_tiny_preset_overfits_four_examples(preset: str,
                                            tmp_path_factory: pytest.TempPathFactory) -> None:
    cfg = _config(preset, tmp_path_factory.getbasetemp() / "overfit-models")
    torch.manual_seed(cfg.seed)
    model = build_ecg_lm(cfg).train()
    batch = train_batch(get_task(cfg.task), _rows(cfg), model.tokenizer, cfg, None)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=0.0)
    losses = []
    for _ in range(STEPS):
        loss = model(**batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if losses[-1] < FRACTION * losses[0]:
            break
    assert np.isfinite(losses).all()
    assert min(losses) < FRACTION * losses[0], (
        f"{preset}: loss {losses[0]:.3f} -> {min(losses):.3f} in {len(losses)} steps "
        f"(needs < {FRACTION} x start)")
