"""Token streaming (:mod:`ecglm.models.streaming`) for both fusions and both prefix positions.

Streamed text must be exactly the non-streamed decoded answer; the streamer protocol (what
``put`` receives) is the same for HF ``generate`` (input_prefix) and our cached loop
(kv_prefix). Failures inside generation are driven by forward hooks on the LM head.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from typing import Callable, Iterator

import pytest
import torch
from torch import Tensor, nn
from transformers.generation import BaseStreamer

from ecglm.config.schema import (
    EncoderConfig,
    ExperimentConfig,
    FusionConfig,
    MapperConfig,
    TemporalConvConfig,
)
from ecglm.models import ECGLanguageModel, build_ecg_lm
from ecglm.models.streaming import THREAD_NAME, WhitespaceTrim, stream_from_prefix

CfgFactory = Callable[..., ExperimentConfig]
Signals = Callable[..., Tensor]

FUSIONS = ["prepend", "placeholder", "kv_prefix"]
STEPS = 16
"""Enough new tokens for several whitespace-separated pieces from the tiny random LM."""


@dataclass(frozen=True)
class Case:
    """A tiny model (LoRA randomized) and one prompt with its ECG prefix."""

    model: ECGLanguageModel
    prefix: Tensor
    prefix_mask: Tensor
    input_ids: Tensor
    attention_mask: Tensor
    prefix_at: Tensor | None

    def generate(self, steps: int = STEPS, streamer: BaseStreamer | None = None) -> list[int]:
        return self.model.generate_from_prefix(self.prefix, self.prefix_mask, self.input_ids,
                                               self.attention_mask, steps,
                                               prefix_at=self.prefix_at, streamer=streamer)[0]

    def stream(self, steps: int = STEPS, timeout_s: float = 30.0) -> Iterator[str]:
        return stream_from_prefix(self.model, self.prefix, self.prefix_mask, self.input_ids,
                                  self.attention_mask, steps, prefix_at=self.prefix_at,
                                  timeout_s=timeout_s)


def fusion_cfg(make_cfg: CfgFactory, fusion: str) -> ExperimentConfig:
    """The conftest config with input_prefix prepended, at the placeholder, or kv_prefix
    (MEIT-style temporal_conv -> head_tile)."""
    base = make_cfg()
    if fusion == "placeholder":
        return replace(base, fusion=FusionConfig(position="placeholder"))
    if fusion == "kv_prefix":
        encoder = EncoderConfig(name="temporal_conv",
                                temporal_conv=TemporalConvConfig(channels=[8, 8], kernel=7,
                                                                 pool=2, proj_hidden=32))
        return replace(base, encoder=encoder, mapper=MapperConfig(name="head_tile", n_tokens=1),
                       fusion=FusionConfig(name="kv_prefix"))
    return base


@pytest.fixture(scope="module", params=FUSIONS)
def case(request: pytest.FixtureRequest, make_cfg: CfgFactory) -> Case:
    model = build_ecg_lm(fusion_cfg(make_cfg, request.param)).eval()
    with torch.no_grad():  # non-zero LoRA B (zero at init), as after training
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.1, generator=torch.Generator().manual_seed(len(name)))
    tok = model.tokenizer
    ids = torch.tensor([tok("Describe this ECG.", add_special_tokens=False)["input_ids"]])
    signals = torch.randn(1, 1, 12, 500, generator=torch.Generator().manual_seed(3))
    prefix, prefix_mask = model.ecg_prefix(signals, None)
    at = torch.tensor([1]) if request.param == "placeholder" else None
    return Case(model, prefix, prefix_mask, ids, torch.ones_like(ids), at)


class Recorder(BaseStreamer):
    """Records the streamer calls: ``("put", shape, values)`` and ``("end",)``."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def put(self, value: Tensor) -> None:
        self.calls.append(("put", tuple(value.shape), value.tolist()))

    def end(self) -> None:
        self.calls.append(("end",))


class HeadHook:
    """Forward hook on the LM head: counts calls and, from call ``at`` on (1-based), runs
    ``action`` (raise, block, or return new logits)."""

    def __init__(self, model: ECGLanguageModel, at: int,
                 action: Callable[[Tensor], Tensor | None]) -> None:
        self.calls = 0
        self.at = at
        self.action = action
        head: nn.Module = model.llm.get_output_embeddings()
        self.handle = head.register_forward_hook(self)

    def __call__(self, module: nn.Module, args: tuple, output: Tensor) -> Tensor | None:
        self.calls += 1
        return self.action(output) if self.calls >= self.at else None

    def remove(self) -> None:
        self.handle.remove()


def stream_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME and t.is_alive()]


def wait_for_no_stream_thread(deadline_s: float = 30.0) -> None:
    end = time.monotonic() + deadline_s
    while stream_threads() and time.monotonic() < end:
        time.sleep(0.01)
    assert not stream_threads()


# --------------------------------------------------------------------------------------------

def test_streamed_text_equals_decoded_generation(case: Case) -> None:
    expected = case.model.decode([case.generate()])[0]
    pieces = list(case.stream())
    assert "".join(pieces) == expected
    assert len(pieces) >= 2 and all(pieces)
    assert not stream_threads()


def test_streamer_calls_match_hf_protocol(case: Case) -> None:
    """Empty ``(1, 0)`` prompt put, one ``(1,)`` put per new token, then ``end()``: the same
    calls whether HF generate (input_prefix) or our cached loop (kv_prefix) decodes."""
    recorder = Recorder()
    row = case.generate(streamer=recorder)
    assert row == case.generate()
    assert recorder.calls[0] == ("put", (1, 0), [[]])
    assert recorder.calls[-1] == ("end",)
    tokens = recorder.calls[1:-1]
    assert all(c[0] == "put" and c[1] == (1,) for c in tokens)
    assert [c[2][0] for c in tokens] == row and len(row) == STEPS


def test_stream_stops_at_eos_like_generate(case: Case) -> None:
    eos = case.model.tokenizer.eos_token_id

    def force_eos(logits: Tensor) -> Tensor:
        out = logits.clone()
        out[..., eos] = out.amax() + 100.0
        return out

    hook = HeadHook(case.model, 6, force_eos)
    try:
        recorder = Recorder()
        row = case.generate(streamer=recorder)
        assert len(row) == 5 and eos not in row
        assert [c[2][0] for c in recorder.calls[1:-1]] == row + [eos]
        expected = case.model.decode([row])[0]
        hook.calls = 0
        assert "".join(case.stream()) == expected and expected
    finally:
        hook.remove()


def test_streaming_needs_batch_of_one(case: Case) -> None:
    two = {"prefix": case.prefix.expand(2, -1, -1), "prefix_mask": case.prefix_mask.expand(2, -1),
           "input_ids": case.input_ids.expand(2, -1),
           "attention_mask": case.attention_mask.expand(2, -1),
           "prefix_at": None if case.prefix_at is None else case.prefix_at.expand(2)}
    with pytest.raises(ValueError, match="batch size 1, got 2"):
        case.model.generate_from_prefix(**two, max_new_tokens=4, streamer=Recorder())
    with pytest.raises(ValueError, match="batch size 1, got 2"):
        stream_from_prefix(case.model, **two, max_new_tokens=4)  # at the call, not on next()
    with pytest.raises(ValueError, match="batch size 1, got 2"):
        case.model.fusion.generate(case.model.llm, two["prefix"], two["prefix_mask"],
                                   two["input_ids"], two["attention_mask"], two["prefix_at"],
                                   4, 0, 1, streamer=Recorder())
    assert len(case.model.generate_from_prefix(**two, max_new_tokens=2)) == 2  # no streamer


def test_exception_in_generation_reaches_the_consumer(case: Case) -> None:
    full = "".join(case.stream())

    def boom(logits: Tensor) -> None:
        raise RuntimeError("boom in the LM head")

    hook = HeadHook(case.model, 10, boom)
    got: list[str] = []
    try:
        with pytest.raises(RuntimeError, match="boom in the LM head"):
            for piece in case.stream():
                got.append(piece)
    finally:
        hook.remove()
    assert got and full.startswith("".join(got))  # pieces before the failure still arrive
    assert not stream_threads()  # joined before re-raising
    assert case.model.training is False


def blocker(gate: threading.Event) -> Callable[[Tensor], None]:
    """A :class:`HeadHook` action that holds the generating thread until ``gate`` is set."""

    def block(logits: Tensor) -> None:
        gate.wait(30)

    return block


def test_closing_the_stream_stops_generation(case: Case) -> None:
    gate = threading.Event()
    hook = HeadHook(case.model, STEPS // 2, blocker(gate))
    try:
        stream = case.stream()
        assert next(stream)
        threading.Timer(0.2, gate.set).start()
        stream.close()  # cancels, then joins the thread once the blocked step returns
        assert not stream_threads()
        assert hook.calls < STEPS
    finally:
        gate.set()
        hook.remove()


def test_no_token_within_timeout(case: Case) -> None:
    gate = threading.Event()
    hook = HeadHook(case.model, 1, blocker(gate))
    try:
        with pytest.raises(TimeoutError, match="no token within 0.5 s"):
            next(case.stream(timeout_s=0.5))
    finally:
        gate.set()  # the thread finishes its step, then stops at the next token
        wait_for_no_stream_thread()
        hook.remove()
    assert hook.calls <= 2


def test_whitespace_trim() -> None:
    trim = WhitespaceTrim()
    raw = ["", "  ", " Sinus", " rhythm ", "", "\n", "with", " ", "PVCs.", "  \n "]
    out = [trim.feed(p) for p in raw]
    assert "".join(out) == "".join(raw).strip()
    assert [p for p in out if p] == ["Sinus", " rhythm", " \nwith", " PVCs."]


def test_timeout_must_be_positive(case: Case) -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        case.stream(timeout_s=0)
