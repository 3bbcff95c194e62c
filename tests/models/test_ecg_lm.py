"""ECGLanguageModel: fusion, masking, loss, trainable parameters, checkpoints, generation."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
import torch
import torch.nn.functional as F

from ecglm.config.schema import ExperimentConfig
from ecglm.models import (
    IGNORE_INDEX,
    CheckpointError,
    ECGLanguageModel,
    ModelInputError,
    build_ecg_lm,
    build_prompt,
    collate,
    encode_prompt,
    encode_train_example,
)
from tests.models.test_fusion import manual_greedy
from ecglm.checkpoint import CheckpointFileError
from tests.helpers import load_checkpoint, save_checkpoint

Signals = Callable[..., torch.Tensor]


def _prompts(model: ECGLanguageModel) -> dict[str, torch.Tensor]:
    tok = model.tokenizer
    texts = ["Question: does this ECG show st elevation? Answer:",
             build_prompt("Which leads show t wave inversion?", ["V1", "V2", "none"],
                          ["sinus rhythm, normal ecg"], 1)]
    return collate([{"input_ids": encode_prompt(tok, t, 48)} for t in texts], tok.pad_token_id)


def _train_batch(model: ECGLanguageModel) -> dict[str, torch.Tensor]:
    tok = model.tokenizer
    examples = [
        encode_train_example(tok, build_prompt("Does this ECG show st elevation?",
                                               ["yes", "no", "not sure"], [], 1), ["yes"], 64),
        encode_train_example(tok, build_prompt("Which leads are affected?", ["V1", "V2", "none"],
                                               ["inferior myocardial infarction"], 2),
                             ["V2", "V1"], 64),
    ]
    return collate(examples, tok.pad_token_id)


def test_prefix_shapes_and_mask(tiny_model: ECGLanguageModel, make_signals: Signals) -> None:
    signals = make_signals(2, 2)
    ecg_mask = torch.tensor([[True, False], [True, True]])
    prefix, prefix_mask = tiny_model.ecg_prefix(signals, ecg_mask)
    n = tiny_model.n_tokens
    assert prefix.shape == (2, 2 * n, tiny_model.d_llm)
    assert prefix.dtype == tiny_model.llm.get_input_embeddings().weight.dtype
    assert prefix_mask.tolist() == [[True] * n + [False] * n, [True] * 2 * n]
    assert torch.count_nonzero(prefix[0, n:]) == 0
    with pytest.raises(ModelInputError, match="ecg_mask"):
        tiny_model.ecg_prefix(signals, ecg_mask[:, :1])
    with pytest.raises(ModelInputError, match="signals"):
        tiny_model.ecg_prefix(signals[:, 0], None)


def test_changing_the_ecg_changes_the_logits(tiny_model: ECGLanguageModel,
                                             make_signals: Signals) -> None:
    batch = _prompts(tiny_model)
    with torch.no_grad():
        a = tiny_model(make_signals(2, 1, seed=0), None, **batch).logits
        b = tiny_model(make_signals(2, 1, seed=1), None, **batch).logits
    n = tiny_model.n_tokens
    text_positions = batch["attention_mask"].bool()
    diff = (a[:, n:][text_positions] - b[:, n:][text_positions]).abs().amax()
    assert diff > 1e-3


def test_masked_second_ecg_is_irrelevant(tiny_model: ECGLanguageModel,
                                         make_signals: Signals) -> None:
    batch = _prompts(tiny_model)
    signals = make_signals(2, 2, seed=0)
    other = signals.clone()
    other[:, 1] = make_signals(2, 1, seed=7)[:, 0] * 5.0
    ecg_mask = torch.tensor([[True, False], [True, False]])
    n = tiny_model.n_tokens
    with torch.no_grad():
        a = tiny_model(signals, ecg_mask, **batch).logits
        b = tiny_model(other, ecg_mask, **batch).logits
        single = tiny_model(signals[:, :1], None, **batch).logits
        unmasked = tiny_model(other, None, **batch).logits
    text = batch["attention_mask"].bool()
    torch.testing.assert_close(a[:, 2 * n:][text], b[:, 2 * n:][text])
    # a padded slot behaves exactly like having one ECG slot (positions skip masked tokens)
    torch.testing.assert_close(a[:, 2 * n:][text], single[:, n:][text], atol=1e-5, rtol=1e-5)
    assert (unmasked[:, 2 * n:][text] - b[:, 2 * n:][text]).abs().amax() > 1e-3


def test_loss_only_on_answer_tokens(tiny_model: ECGLanguageModel, make_signals: Signals) -> None:
    batch = _train_batch(tiny_model)
    signals, ecg_mask = make_signals(2, 2), torch.tensor([[True, False], [True, True]])
    labels = batch["labels"]
    eos = tiny_model.tokenizer.eos_token_id
    for row, answer in zip(labels, [" yes", " V1, V2"]):
        target = row[row != IGNORE_INDEX].tolist()
        assert target[-1] == eos
        assert tiny_model.tokenizer.decode(target[:-1]) == answer
    out = tiny_model(signals, ecg_mask, **batch)
    # reference: cross-entropy over the answer tokens only, from the returned logits
    n_prefix = 2 * tiny_model.n_tokens
    logits = out.logits[:, n_prefix - 1:-1]  # position t predicts text token t
    manual = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                             ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(out.loss, manual)
    # changing prompt-side label values that are ignored does not change the loss,
    # changing an answer label does
    prompt_pos = (labels == IGNORE_INDEX) & batch["attention_mask"].bool()
    assert prompt_pos.any()
    with torch.no_grad():
        same = tiny_model(signals, ecg_mask, batch["input_ids"], batch["attention_mask"],
                          labels.masked_fill(prompt_pos, IGNORE_INDEX)).loss
        answer_pos = labels != IGNORE_INDEX
        changed = labels.clone()
        changed[answer_pos] = (changed[answer_pos] + 5) % len(tiny_model.tokenizer)
        other = tiny_model(signals, ecg_mask, batch["input_ids"], batch["attention_mask"],
                           changed).loss
    torch.testing.assert_close(same, out.loss.detach())
    assert abs(float(other) - float(out.loss)) > 1e-4


def test_exactly_the_intended_parameters_train(make_cfg: Callable[..., ExperimentConfig],
                                               make_signals: Signals) -> None:
    model = build_ecg_lm(make_cfg()).train()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    groups = {n.split(".")[0] for n in trainable}
    assert groups == {"encoder", "mapper", "llm"}
    assert all("lora_" in n for n in trainable if n.startswith("llm."))
    assert all(p.requires_grad for p in model.encoder.parameters())
    assert all(p.requires_grad for p in model.mapper.parameters())
    base = [n for n, p in model.llm.named_parameters() if "lora_" not in n]
    assert base and not any(p.requires_grad for n, p in model.llm.named_parameters()
                            if "lora_" not in n)
    batch = _train_batch(model)
    model(make_signals(2, 2), torch.tensor([[True, False], [True, True]]), **batch).loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(grads[n] is None for n, p in model.named_parameters() if not p.requires_grad)
    assert any(g.abs().sum() > 0 for n, g in grads.items() if n.startswith("encoder.") and g is not None)
    assert any(g.abs().sum() > 0 for n, g in grads.items() if n.startswith("mapper.") and g is not None)
    assert any(g.abs().sum() > 0 for n, g in grads.items() if "lora_B" in n and g is not None)

    frozen_enc = build_ecg_lm(make_cfg(encoder_trainable=False))
    assert not any(n.startswith("encoder.") for n in frozen_enc.trainable_state_dict())
    assert set(frozen_enc.trainable_state_dict()) == trainable - {
        n for n in trainable if n.startswith("encoder.")}


def test_trainable_state_roundtrip_into_fresh_model(make_cfg: Callable[..., ExperimentConfig],
                                                    make_signals: Signals,
                                                    tmp_path: Path) -> None:
    trained = build_ecg_lm(make_cfg(seed=0))
    # make the LoRA B matrices non-zero as after training
    with torch.no_grad():
        for name, param in trained.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.05, generator=torch.Generator().manual_seed(len(name)))
    trained.eval()
    path = save_checkpoint(trained, tmp_path / "ckpt")
    fresh = build_ecg_lm(make_cfg(seed=123)).eval()
    assert set(fresh.trainable_state_dict()) == set(trained.trainable_state_dict())
    batch = _prompts(trained)
    signals = make_signals(2, 1)
    with torch.no_grad():
        expected = trained(signals, None, **batch).logits
        before = fresh(signals, None, **batch).logits
        load_checkpoint(fresh, path)
        after = fresh(signals, None, **batch).logits
    assert (before - expected).abs().amax() > 1e-3
    torch.testing.assert_close(after, expected, atol=0, rtol=0)

    state = trained.trainable_state_dict()
    state.pop(next(iter(state)))
    with pytest.raises(CheckpointError, match="missing keys"):
        fresh.load_trainable_state_dict(state)
    with pytest.raises(CheckpointFileError, match="trainable.safetensors"):
        load_checkpoint(fresh, tmp_path / "nope" / "trainable.safetensors")


def test_generate_equals_manual_greedy(tiny_model: ECGLanguageModel,
                                       make_signals: Signals) -> None:
    batch = _prompts(tiny_model)
    lengths = batch["attention_mask"].sum(1).tolist()
    assert lengths[0] != lengths[1], "prompts of different lengths exercise the re-padding"
    signals = make_signals(2, 2, seed=3)
    ecg_mask = torch.tensor([[True, False], [True, True]])
    steps = 6
    got = tiny_model.generate_ids(signals, ecg_mask, batch["input_ids"], batch["attention_mask"],
                                  max_new_tokens=steps)
    for row in range(2):
        prompt = batch["input_ids"][row, : lengths[row]].tolist()
        ref = manual_greedy(tiny_model, signals[row:row + 1], ecg_mask[row:row + 1], prompt,
                             steps)
        assert got[row] == ref
        assert 0 < len(ref) <= steps
    texts = tiny_model.generate(signals, ecg_mask, batch["input_ids"], batch["attention_mask"],
                                max_new_tokens=steps)
    assert texts == [tiny_model.tokenizer.decode(r, skip_special_tokens=True).strip() for r in got]
    # batched answers equal one-at-a-time answers; the training mode is restored
    tiny_model.train()
    alone = tiny_model.generate_ids(signals[1:], ecg_mask[1:], batch["input_ids"][1:, : lengths[1]],
                                    batch["attention_mask"][1:, : lengths[1]], max_new_tokens=steps)
    assert tiny_model.training
    assert alone == got[1:]


# --------------------------------------------------------------------------------------------
# checkpoints of the other fusions (kv_prefix with batch-norm encoder, placeholder splice)
# --------------------------------------------------------------------------------------------

def _fusion_cfg(kind: str, make_cfg: Callable[..., ExperimentConfig], seed: int,
                encoder_trainable: bool = True) -> ExperimentConfig:
    from tests.models.test_fusion import kv_cfg, placeholder_cfg

    if kind == "kv_prefix":
        return kv_cfg(make_cfg, seed=seed, encoder_trainable=encoder_trainable)
    return placeholder_cfg(make_cfg, seed=seed)


@pytest.mark.parametrize("kind", ["kv_prefix", "placeholder"])
def test_trainable_roundtrip_other_fusions(kind: str, make_cfg: Callable[..., ExperimentConfig],
                                           make_signals: Signals, tmp_path: Path) -> None:
    from tests.models.test_fusion import prompt_batch, randomize_lora

    trained = build_ecg_lm(_fusion_cfg(kind, make_cfg, seed=0))
    randomize_lora(trained)
    batch = prompt_batch(trained)
    at = None if kind == "kv_prefix" else torch.tensor([1, 4])
    signals = make_signals(2, 1)
    trained.train()
    with torch.no_grad():  # training-mode passes move batch-norm running statistics
        for seed in range(2):
            trained(make_signals(2, 1, seed=seed + 10), None, **batch, prefix_at=at)
    trained.eval()
    state = trained.trainable_state_dict()
    if kind == "kv_prefix":
        stats = [k for k in state if k.startswith("encoder.") and "running_mean" in k]
        assert stats and any(state[k].abs().sum() > 0 for k in stats)
    path = save_checkpoint(trained, tmp_path)
    fresh = build_ecg_lm(_fusion_cfg(kind, make_cfg, seed=123)).eval()
    assert set(fresh.trainable_state_dict()) == set(state)
    with torch.no_grad():
        expected = trained(signals, None, **batch, prefix_at=at).logits
        before = fresh(signals, None, **batch, prefix_at=at).logits
        load_checkpoint(fresh, path)
        after = fresh(signals, None, **batch, prefix_at=at).logits
    assert (before - expected).abs().amax() > 1e-3
    torch.testing.assert_close(after, expected, atol=0, rtol=0)


def test_frozen_batchnorm_encoder_is_not_checkpointed_and_stays_fixed(
        make_cfg: Callable[..., ExperimentConfig], make_signals: Signals) -> None:
    from tests.models.test_fusion import prompt_batch

    model = build_ecg_lm(_fusion_cfg("kv_prefix", make_cfg, seed=0, encoder_trainable=False))
    model.train()
    norms = [m for m in model.encoder.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert norms and not any(m.training for m in norms)
    assert model.llm.training  # the rest is in training mode
    stats = {k: v.clone() for k, v in model.encoder.state_dict().items() if "running" in k}
    with torch.no_grad():
        model(make_signals(2, 1), None, **prompt_batch(model))
    assert all(torch.equal(v, model.encoder.state_dict()[k]) for k, v in stats.items())
    assert all(k.startswith("llm.") and "lora_" in k for k in model.trainable_state_dict())
