"""Prompt building, answer formatting/parsing, example encoding and collation."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from ecglm.config.schema import PromptConfig
from ecglm.models import (
    IGNORE_INDEX,
    ECGLanguageModel,
    PromptError,
    build_prompt,
    collate,
    encode_train_example,
    format_answer,
    parse_answer,
    prompt_for_row,
    render_prompt,
)

LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]


def test_format_answer_is_sorted_and_unique() -> None:
    assert format_answer(["V2", "I", "V2", "aVL"]) == "I, V2, aVL"
    assert format_answer(["no"]) == "no"
    assert format_answer([]) == ""


@pytest.mark.parametrize("answer", [["yes"], ["not sure"], ["V1", "V6", "aVR"], ["none"],
                                    LEADS])
def test_parse_format_round_trip(answer: list[str]) -> None:
    options = ["yes", "no", "not sure", "none"] + LEADS
    assert parse_answer(format_answer(answer), options) == set(answer)


def test_parse_answer_returns_only_options() -> None:
    options = ["yes", "no", "not sure"]
    assert parse_answer("Yes.", options) == {"yes"}
    assert parse_answer("  NOT SURE ", options) == {"not sure"}
    assert parse_answer("maybe", options) == set()
    assert parse_answer("", options) == set()
    assert parse_answer("none", options) == set(), "none is only returned when it is an option"
    assert parse_answer("none", options + ["none"]) == {"none"}
    assert parse_answer("v1 and V3; avr, banana", LEADS) == {"V1", "V3", "aVR"}
    assert parse_answer("yes\nQuestion: something else, no", options) == {"yes"}


def test_parse_answer_handles_options_with_separators() -> None:
    options = ["st and t changes", "left bundle branch block", "noise, baseline", "none"]
    text = "left bundle branch block, st and t changes, noise, baseline"
    assert parse_answer(text, options) == {"st and t changes", "left bundle branch block",
                                           "noise, baseline"}
    assert parse_answer("bundle branch block", options) == set()


def test_build_prompt_mentions_everything() -> None:
    prompt = build_prompt("Does the first ECG show sinus rhythm?", ["yes", "no", "not sure"],
                          ["sinus rhythm, normal ecg"], 2)
    assert prompt.endswith("Answer:")
    assert "Does the first ECG show sinus rhythm?" in prompt
    assert "yes, no, not sure" in prompt
    assert "sinus rhythm, normal ecg" in prompt
    assert "2 12-lead ECGs" in prompt
    without = build_prompt("q?", ["a"], [], 1)
    assert "Reports" not in without and "one 12-lead ECG" in without
    with pytest.raises(PromptError, match="n_ecg"):
        build_prompt("q?", ["a"], [], 0)


def _row() -> dict:
    return {"sample_id": 7, "question": "Which leads show q waves?",
            "options": np.array(LEADS + ["none"], dtype=object), "n_ecg": 1,
            "retrieved_reports": ["report one", "report two", "report three", "report four"]}


def test_prompt_for_row_eval_is_deterministic() -> None:
    cfg = PromptConfig()
    prompt = prompt_for_row(_row(), None, cfg, retrieval_k=3)
    assert prompt == build_prompt("Which leads show q waves?", LEADS + ["none"], ["report one"], 1)
    assert prompt_for_row({**_row(), "retrieved_reports": []}, None, cfg, 3) == build_prompt(
        "Which leads show q waves?", LEADS + ["none"], [], 1)
    pair = {k: v for k, v in _row().items() if k != "n_ecg"}
    pair["ecg_ids"] = np.array([3, 9])
    assert "2 12-lead ECGs" in prompt_for_row(pair, None, cfg, retrieval_k=3)
    short = prompt_for_row(_row(), None, cfg, retrieval_k=3, max_report_chars=6)
    assert "- report\n" in short


def test_prompt_for_row_training_is_dynamic_and_seeded() -> None:
    cfg = PromptConfig(shuffle_options=True, random_report=True)
    prompts = [prompt_for_row(_row(), random.Random(s), cfg, retrieval_k=3) for s in range(30)]
    assert len(set(prompts)) > 5, "options are reshuffled"
    assert {p.split("- ")[1].split("\n")[0] for p in prompts} == {
        "report one", "report two", "report three"}, "only the top-k reports are drawn"
    assert prompt_for_row(_row(), random.Random(4), cfg, 3) == prompts[4]
    fixed = PromptConfig(shuffle_options=False, random_report=False)
    assert prompt_for_row(_row(), random.Random(1), fixed, 3) == prompt_for_row(_row(), None,
                                                                                 fixed, 3)
    with pytest.raises(PromptError, match="row.question"):
        prompt_for_row({"options": ["a"]}, None, cfg, 3)


def test_encode_train_example_and_truncation(tiny_model: ECGLanguageModel) -> None:
    tok = tiny_model.tokenizer
    prompt = build_prompt("Does this ECG show st elevation?", ["yes", "no", "not sure"],
                          ["sinus rhythm " * 30], 1)
    full = encode_train_example(tok, prompt, ["no"], max_length=10_000)
    assert len(full["input_ids"]) == len(full["labels"])
    n_target = sum(1 for x in full["labels"] if x != IGNORE_INDEX)
    assert full["labels"][-n_target:] == full["input_ids"][-n_target:]
    assert tok.decode(full["input_ids"]) == prompt + " no" + tok.eos_token
    cut = encode_train_example(tok, prompt, ["no"], max_length=24)
    assert len(cut["input_ids"]) == 24
    assert cut["input_ids"][-n_target:] == full["input_ids"][-n_target:], "answer kept"
    assert cut["input_ids"] == full["input_ids"][-24:], "prompt cut from the left"


def test_collate_pads_right_and_masks_labels() -> None:
    pad = 2  # same id as eos in the example below: padding is found by position
    examples = [{"input_ids": [5, 6, 7, 2], "labels": [IGNORE_INDEX, IGNORE_INDEX, 7, 2]},
                {"input_ids": [8, 2], "labels": [IGNORE_INDEX, 2]}]
    out = collate(examples, pad)
    assert out["input_ids"].tolist() == [[5, 6, 7, 2], [8, 2, 2, 2]]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert out["labels"].tolist() == [[-100, -100, 7, 2], [-100, 2, -100, -100]]
    assert out["input_ids"].dtype == torch.long
    assert "labels" not in collate([{"input_ids": [1]}], pad)
    with pytest.raises(PromptError, match="labels"):
        collate([{"input_ids": [1, 2], "labels": [1]}], pad)


def test_render_prompt_without_chat_template(tiny_model: ECGLanguageModel) -> None:
    assert render_prompt(tiny_model.tokenizer, "Answer:", use_chat_template=True) == "Answer:"
