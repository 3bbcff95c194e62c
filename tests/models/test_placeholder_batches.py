"""fusion.position=placeholder through the batch builders: the ECG tokens go where the prompt
held the placeholder, training and generation prompts agree."""

from __future__ import annotations

import numpy as np
import torch

from ecglm.config.loader import apply_overrides
from ecglm.data.sharding import encode_signals
from ecglm.models.ecg_lm import build_ecg_lm
from ecglm.data.rows import QARow
from ecglm.tasks import get_task
from ecglm.tasks.encode import prompt_batch, row_prompt, train_batch

QA = get_task("qa")


def _rows(n: int = 2) -> list[QARow]:
    rng = np.random.default_rng(0)
    return [QARow.from_record({"sample_id": i, "ecg_ids": [i], "question": "Does this ECG show atrial fibrillation?",
             "options": ["yes", "no", "not sure"], "answer": ["no"], "n_ecg": 1,
             "n_samples": 500, "signals": encode_signals(rng.normal(0, 0.3, (1, 12, 500))),
             "retrieved_reports": [f"report {i}"], "question_type": "single-verify",
             "attribute_type": "scp_code"}) for i in range(n)]


def test_placeholder_batches_place_the_ecg_after_the_head(make_cfg) -> None:
    cfg = apply_overrides(make_cfg(), {"fusion.position": "placeholder",
                                       "fusion.placeholder": "<ecg>", "llm.max_length": 1024})
    model = build_ecg_lm(cfg).eval()
    tok = model.tokenizer
    rows = _rows()
    text = row_prompt(QA, rows[0], tok, cfg, None)
    assert text.startswith("<ecg>\n")  # no chat template: the ECG opens the prompt
    batch = train_batch(QA, rows, tok, cfg, None)
    assert batch["prefix_at"].tolist() == [0, 0]
    gen = prompt_batch(QA, rows, tok, cfg)
    assert gen["prefix_at"].tolist() == [0, 0]
    # the prompt ids of generation are the training ids before the answer
    n = int(gen["attention_mask"][0].sum())
    assert torch.equal(gen["input_ids"][0, :n], batch["input_ids"][0, :n])
    with torch.no_grad():
        out = model(**batch)
    assert torch.isfinite(out.loss)
    signals, ecg_mask = gen.pop("signals"), gen.pop("ecg_mask")
    texts = model.generate(signals, ecg_mask, max_new_tokens=3, **gen)
    assert len(texts) == 2
