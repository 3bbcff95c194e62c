"""Generation-task prompts: instruction pools, dynamic prompting, loss only on the target."""

from __future__ import annotations

import random

import pytest

from ecglm.config.schema import PromptConfig
from ecglm.models.instructions import (GROUNDING_INSTRUCTIONS, REPORT_INSTRUCTIONS,
                                       instruction_pool)
from ecglm.models.prompting import (IGNORE_INDEX, PromptError, encode_text_example,
                                    generation_prompt_for_row)

@pytest.fixture(scope="module")
def tiny_tokenizer(make_cfg):
    from ecglm.models.llm import load_tokenizer, prepare_llm_dir

    return load_tokenizer(prepare_llm_dir(make_cfg().llm))


ROW = {"sample_id": 1, "n_ecg": 1, "retrieved_reports": ["first report", "second", "third"]}


def test_pools_are_distinct_and_limited() -> None:
    assert len(set(REPORT_INSTRUCTIONS)) == len(REPORT_INSTRUCTIONS) >= 20
    assert len(set(GROUNDING_INSTRUCTIONS)) == len(GROUNDING_INSTRUCTIONS)
    assert instruction_pool("report", 3) == REPORT_INSTRUCTIONS[:3]
    with pytest.raises(ValueError, match="task"):
        instruction_pool("qa")


def test_evaluation_prompt_is_fixed_training_prompt_varies() -> None:
    cfg = PromptConfig()
    pool = instruction_pool("report")
    fixed = {generation_prompt_for_row(ROW, None, cfg, 3, pool) for _ in range(5)}
    assert len(fixed) == 1
    text = fixed.pop()
    assert pool[0] in text and "first report" in text and text.endswith("Report:")
    rng = random.Random(0)
    varied = {generation_prompt_for_row(ROW, rng, cfg, 3, pool) for _ in range(40)}
    assert len(varied) > 10  # instructions and reports are sampled
    off = PromptConfig(random_instruction=False, random_report=False)
    assert {generation_prompt_for_row(ROW, rng, off, 3, pool) for _ in range(10)} == {text}
    assert "Reports written" not in generation_prompt_for_row(ROW, None, cfg, 0, pool)
    with pytest.raises(PromptError):
        generation_prompt_for_row(ROW, None, cfg, 3, ())


def test_text_example_puts_loss_on_target_and_eos_only(tiny_tokenizer) -> None:
    tok = tiny_tokenizer
    ex = encode_text_example(tok, "Write it.\nReport:", "sinus rhythm, normal ecg", 64)
    labelled = [t for t, lab in zip(ex["input_ids"], ex["labels"]) if lab != IGNORE_INDEX]
    assert labelled[-1] == tok.eos_token_id
    assert tok.decode(labelled[:-1]).strip() == "sinus rhythm, normal ecg"
    short = encode_text_example(tok, "a long prompt " * 50, "target text", 16)
    assert len(short["input_ids"]) == 16 and short["labels"][-1] == tok.eos_token_id
