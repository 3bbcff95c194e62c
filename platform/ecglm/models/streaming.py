"""Token streaming of generation from an ECG prefix (the layer server-sent events sit on).

:func:`stream_from_prefix` runs :meth:`~ecglm.models.prefix_lm.PrefixLMMethods.generate_from_prefix`
in a background thread with a :class:`CancellableTextStreamer` (a
:class:`transformers.TextIteratorStreamer`, prompt and special tokens skipped) and yields the
answer text piece by piece as the LM produces it, for every fusion.

The pieces joined are exactly the non-streamed answer::

    "".join(stream_from_prefix(model, prefix, prefix_mask, ids, mask, n))
        == model.decode(model.generate_from_prefix(prefix, prefix_mask, ids, mask, n))[0]

(greedy decoding is the same; eos ends the stream and is not in the text; leading and trailing
whitespace is dropped as :meth:`~ecglm.models.prefix_lm.PrefixLMMethods.decode` drops it). This
holds for tokenizers whose decoding of a growing token list only ever appends text, as
byte-level BPE without ``clean_up_tokenization_spaces`` (the tiny LLM's, SmolLM2's); with
that clean-up a space the stream already sent may later be removed in the joined decode.

Pieces follow :class:`transformers.TextStreamer`'s rule: text is released up to the last space
(whole words) or at a newline, the rest when generation ends.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Iterator

from torch import Tensor
from transformers import PreTrainedTokenizerBase
from transformers.generation import TextIteratorStreamer

from ecglm.models.fusion import check_streaming
from ecglm.models.prefix_lm import PrefixLMMethods

DEFAULT_TOKEN_TIMEOUT_S = 120.0
"""Default longest wait, in seconds, for the next token (the first one includes the prefill)."""

THREAD_NAME = "ecglm-token-stream"
"""Name of the generating threads :func:`stream_from_prefix` starts."""


class GenerationCancelled(RuntimeError):
    """Raised in the generating thread, at its next token, once the stream's consumer has
    stopped (closed the iterator, or timed out); never reaches the consumer."""


class CancellableTextStreamer(TextIteratorStreamer):
    """:class:`~transformers.TextIteratorStreamer` over the new tokens only (prompt and special
    tokens skipped) that the consumer can cancel and the producer can abort.

    Args:
        tokenizer: the LM's tokenizer.
        timeout_s: longest wait for the next text piece when iterating (``queue.Empty``
            after it).
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, timeout_s: float) -> None:
        super().__init__(tokenizer, skip_prompt=True, timeout=timeout_s,
                         skip_special_tokens=True)
        self._cancelled = threading.Event()

    def put(self, value: Tensor) -> None:
        """Take ``value`` (first the prompt, skipped; then one new token ``(1,)``) as
        :class:`TextIteratorStreamer` does.

        Raises:
            GenerationCancelled: :meth:`cancel` was called (stops the generating loop).
        """
        if self._cancelled.is_set():
            raise GenerationCancelled("token stream: the consumer stopped reading")
        super().put(value)

    def cancel(self) -> None:
        """Consumer side: make the next :meth:`put` raise :class:`GenerationCancelled`."""
        self._cancelled.set()

    def abort(self) -> None:
        """Producer side, after a failure: end the iteration without releasing held-back
        text (unlike ``end()``)."""
        self.text_queue.put(self.stop_signal, timeout=self.timeout)


class WhitespaceTrim:
    """Turns text pieces into pieces whose concatenation is the original concatenation
    stripped: leading whitespace is dropped, each piece's trailing whitespace is held back
    until non-whitespace text follows (and dropped if none does)."""

    def __init__(self) -> None:
        self._started = False
        self._held = ""

    def feed(self, piece: str) -> str:
        """The text to send for ``piece`` now (``""`` when there is nothing yet)."""
        if not self._started:
            piece = piece.lstrip()
            self._started = bool(piece)
        body = piece.rstrip()
        if not body:
            self._held += piece
            return ""
        out, self._held = self._held + body, piece[len(body):]
        return out


def stream_from_prefix(model: PrefixLMMethods, prefix: Tensor, prefix_mask: Tensor,
                       input_ids: Tensor, attention_mask: Tensor,
                       max_new_tokens: int | None = None, *, prefix_at: Tensor | None = None,
                       timeout_s: float = DEFAULT_TOKEN_TIMEOUT_S) -> Iterator[str]:
    """Greedy answer to ONE prompt, streamed as text pieces while it is generated.

    Arguments as :meth:`~ecglm.models.prefix_lm.PrefixLMMethods.generate_from_prefix` with
    ``B == 1``: ``prefix (1, P, d_llm)``, ``prefix_mask (1, P)``, ``input_ids``/
    ``attention_mask (1, S)``, ``prefix_at (1,)`` or None.

    Generation starts at the first ``next()`` in a background thread. Closing the iterator
    early (e.g. the client disconnected) stops that thread at its next token and waits for
    it. Joining the pieces gives ``model.decode(model.generate_from_prefix(...))[0]`` (see the
    module docstring); every piece is non-empty.

    Args:
        timeout_s: longest wait for the next token (the first includes the prompt's
            forward pass).

    Raises:
        ValueError: at the call: batch size other than 1, or ``timeout_s <= 0``.
        Exception: while iterating: the exception ``generate_from_prefix`` raised in the
            thread (the same object, e.g. ``ModelInputError``), after the thread has ended.
        TimeoutError: while iterating: no token within ``timeout_s`` (the thread is told to
            stop and left to finish on its own).
    """
    if not timeout_s > 0:
        raise ValueError(f"timeout_s: must be > 0, got {timeout_s}")
    streamer = CancellableTextStreamer(model.tokenizer, timeout_s)
    check_streaming(streamer, input_ids.shape[0])

    def generate() -> None:
        model.generate_from_prefix(prefix, prefix_mask, input_ids, attention_mask,
                                   max_new_tokens, prefix_at=prefix_at, streamer=streamer)

    return _pieces(generate, streamer, timeout_s)


def _pieces(generate: Callable[[], None], streamer: CancellableTextStreamer,
            timeout_s: float) -> Iterator[str]:
    """Run ``generate`` (which feeds ``streamer``) in a thread; yield its trimmed, non-empty
    text pieces; re-raise its exception after joining it."""
    errors: list[BaseException] = []

    def work() -> None:
        try:
            generate()
        except BaseException as exc:  # handed to the consumer, re-raised there
            errors.append(exc)
            streamer.abort()

    thread = threading.Thread(target=work, name=THREAD_NAME, daemon=True)
    thread.start()
    trim = WhitespaceTrim()
    timed_out = False
    try:
        try:
            for piece in streamer:
                text = trim.feed(piece)
                if text:
                    yield text
        except queue.Empty:
            timed_out = not errors
            if timed_out:
                raise TimeoutError(f"token stream: no token within {timeout_s} s") from None
    finally:
        streamer.cancel()
        if not timed_out:
            thread.join()
    if errors and not isinstance(errors[0], GenerationCancelled):
        raise errors[0]
