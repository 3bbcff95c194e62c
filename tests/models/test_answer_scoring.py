"""Scoring candidate answers on a prompt's cache equals teacher forcing each one in full, for
both fusions; classify turns the scores into label probabilities."""

from __future__ import annotations

from typing import Callable

import numpy as np
import pytest
import torch

from ecglm.config import ExperimentConfig
from ecglm.models.ecg_lm import ECGLanguageModel, build_ecg_lm
from ecglm.tasks.classify import candidate_answers, label_probabilities

from tests.models.test_fusion import kv_cfg, placeholder_cfg, randomize_lora

CfgFactory = Callable[..., ExperimentConfig]


def _full_logprob(model: ECGLanguageModel, signals: torch.Tensor, prompt: list[int],
                  answer: list[int], at: int | None) -> float:
    """Reference: one forward over prompt + answer, log-probs of the answer tokens."""
    ids = torch.tensor([prompt + answer])
    pos = None if at is None else torch.tensor([at])
    with torch.no_grad():
        out = model(signals, None, ids, torch.ones_like(ids), prefix_at=pos)
    logits = model.text_logits(out.logits, ids, pos)[0].float().log_softmax(-1)
    return float(sum(logits[len(prompt) + i - 1, t] for i, t in enumerate(answer)))


@pytest.mark.parametrize("fusion", ["input_prefix", "kv_prefix", "placeholder"])
def test_cached_scores_equal_full_teacher_forcing(fusion: str, make_cfg: CfgFactory,
                                                  make_signals: Callable[..., torch.Tensor]
                                                  ) -> None:
    cfg = {"input_prefix": make_cfg, "kv_prefix": lambda: kv_cfg(make_cfg),
           "placeholder": lambda: placeholder_cfg(make_cfg)}[fusion]()
    torch.manual_seed(0)
    model = build_ecg_lm(cfg).eval()
    randomize_lora(model)
    tok = model.tokenizer
    prompt = tok("Which rhythm is this", add_special_tokens=False)["input_ids"]
    at = 2 if fusion == "placeholder" else None
    answers = [tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
               for t in (" sinus", " atrial fibrillation here", " no")]
    width = max(len(a) for a in answers)
    cont = torch.full((len(answers), width), tok.pad_token_id)
    cmask = torch.zeros_like(cont)
    for k, a in enumerate(answers):
        cont[k, : len(a)], cmask[k, : len(a)] = torch.tensor(a), 1
    signals = make_signals(1, 1)
    ids = torch.tensor([prompt])
    got = model.score(signals, None, ids, torch.ones_like(ids), cont, cmask,
                      prefix_at=None if at is None else torch.tensor([at]))
    want = [_full_logprob(model, signals, prompt, a, at) for a in answers]
    assert got.shape == (3,)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-4)
    # the ECG matters: another signal gives other scores
    other = model.score(make_signals(1, 1, seed=7), None, ids, torch.ones_like(ids), cont,
                        cmask, prefix_at=None if at is None else torch.tensor([at]))
    assert not torch.allclose(got, other)


def test_candidate_answers_and_label_probabilities() -> None:
    classes = ["NORM", "MI", "STTC"]
    answers = candidate_answers(classes, [])
    assert len(answers) == 8 and () in answers and ("NORM", "MI", "STTC") in answers
    assert all(list(a) == [c for c in classes if c in a] for a in answers)  # vocabulary order
    logp = np.full((2, 8), -50.0)
    logp[0, answers.index(("MI",))] = 0.0                       # all mass on "MI"
    logp[1, answers.index(("NORM", "STTC"))] = np.log(0.5)      # half on NORM+STTC,
    logp[1, answers.index(())] = np.log(0.5)                    # half on "none"
    p = label_probabilities(logp, answers, classes)
    np.testing.assert_allclose(p[0], [0, 1, 0], atol=1e-9)
    np.testing.assert_allclose(p[1], [0.5, 0, 0.5], atol=1e-9)
    many = [f"C{i}" for i in range(8)]  # 2^8 would be too many: training sets + singles + none
    seen = candidate_answers(many, [("C1", "C3"), ("C3", "C1"), ()])
    assert ("C1", "C3") in seen and () in seen and ("C7",) in seen and len(seen) == 10


def test_score_answers_equals_the_training_loss_of_each_answer(
        make_cfg: CfgFactory, make_signals: Callable[..., torch.Tensor]) -> None:
    """A QA row's candidate answers scored by ``score_answers`` (evaluation prompt, cache)
    equal minus the summed training cross-entropy of the same row with that answer as target
    (``train_batch``: the prompt and target tokens training uses)."""
    from dataclasses import replace as dc_replace

    from ecglm.data.rows import QARow
    from ecglm.data.sharding import encode_signals
    from ecglm.tasks import get_task
    from ecglm.tasks.encode import score_answers, train_batch
    from ecglm.models.prompting import encode_train_example

    base = make_cfg()
    cfg = dc_replace(base, llm=dc_replace(base.llm, max_length=256))  # nothing cut
    torch.manual_seed(0)
    model = build_ecg_lm(cfg).eval()
    randomize_lora(model)
    task = get_task("qa")
    signals = make_signals(1, 1)[0].numpy()  # (1, 12, T) mV
    row = QARow(sample_id=7, ecg_ids=(7,), n_ecg=1, n_samples=signals.shape[-1],
                signals=encode_signals(signals), question="Does this ECG show noise in lead II?",
                options=("yes", "no", "not sure"), question_type="single-verify")
    answers = [["yes"], ["no"], ["not sure"]]
    got = score_answers(task, model, [row, row], cfg, answers,
                        lambda tok, p, a, n: encode_train_example(tok, p, list(a), n))
    assert got.shape == (2, 3) and np.allclose(got[0], got[1])
    for k, answer in enumerate(answers):
        batch = train_batch(task, [dc_replace(row, answer=tuple(answer))], model.tokenizer, cfg,
                            None)
        n_target = int((batch["labels"] != -100).sum())
        with torch.no_grad():
            out = model(batch.pop("signals"), batch.pop("ecg_mask"), **batch)
        assert got[0, k] == pytest.approx(-float(out.loss) * n_target, rel=1e-4, abs=1e-4)
