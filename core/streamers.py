"""Streamers: receive tokens while generate() runs and turn them into text as soon as it is final.

generate() calls ``streamer.put(tokens)`` with CPU int64 tensors -- the prompt once as (batch,
prompt_len), then the new tokens of every step as (batch,), or (1, k) when a step accepts several
tokens (assisted decoding) -- and ``streamer.end()`` when it finishes. The classes keep the names,
arguments and output of transformers' streamers, so existing code switches by changing an import.

Text is released as soon as later tokens can no longer change it: the whole pending token list is
re-decoded on every ``put`` (a token alone may be half of a character or lose its leading space).
Letters, digits and spaces are released at once; text that ends in another symbol waits for the next
space (the symbol may start formatting such as ``<br>``, or be half of a character, ``\ufffd``); a
finished line or a CJK character is released whole. This is transformers' rule since 5.24 (before,
letters too waited for the next space, so a long word or a script without spaces did not stream).
"""

from __future__ import annotations

import asyncio
import unicodedata
from queue import Queue
from typing import Any, List, Optional

import torch


class BaseStreamer:
    """What generate() calls: ``put(value)`` with new tokens, ``end()`` once at the end."""

    def put(self, value: torch.Tensor) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement put(value)")

    def end(self) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement end()")


def is_cjk_codepoint(cp: int) -> bool:
    """True for CJK Unified Ideographs (and their extensions / compatibility blocks).

    transformers' list: Hangul, Hiragana and Katakana are not in it (as letters they are released at once anyway).
    """
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


def is_plain_text(char: str) -> bool:
    """True for a space, letter, combining mark or digit: text a later token can extend but not change."""
    return char.isspace() or unicodedata.category(char)[0] in "LMN"


class WordBuffer:
    """The pending tokens of one sequence and how much of their text was already released."""

    def __init__(self, tokenizer: Any, decode_kwargs: dict):
        self.tokenizer = tokenizer
        self.decode_kwargs = decode_kwargs
        self.token_cache: List[int] = []
        self.print_len = 0

    def push(self, token_ids: List[int]) -> str:
        """Add tokens; return the text that can be released now (possibly "")."""
        self.token_cache.extend(token_ids)
        text = self.tokenizer.decode(self.token_cache, **self.decode_kwargs)
        if text.endswith("\n"):  # a finished line can never change: release it
            released = text[self.print_len:]
            # Keep the newline's token as decoding context: a tokenizer that strips the leading space of what
            # it decodes (sentencepiece) would otherwise drop the space that starts the next line.
            self.token_cache = self.token_cache[-1:]
            self.print_len = len(self.tokenizer.decode(self.token_cache, **self.decode_kwargs))
        elif text and is_cjk_codepoint(ord(text[-1])):
            released = text[self.print_len:]
            self.print_len += len(released)
        elif all(is_plain_text(char) for char in text[self.print_len:]):
            released = text[self.print_len:]  # letters, digits and spaces: more tokens only append to them
            self.print_len += len(released)
        else:  # a symbol may still change; release up to and including the last space
            released = text[self.print_len: text.rfind(" ") + 1]
            self.print_len += len(released)
        return released

    def flush(self) -> str:
        """Release everything still pending and start afresh."""
        if not self.token_cache:
            return ""
        text = self.tokenizer.decode(self.token_cache, **self.decode_kwargs)
        released = text[self.print_len:]
        self.token_cache = []
        self.print_len = 0
        return released


def _as_token_lists(value: torch.Tensor) -> List[List[int]]:
    """Per row, the token ids in ``value``: (B, k) gives B rows of k, (B,) gives B rows of one."""
    if value.dim() == 2:
        return value.tolist()
    return [[t] for t in value.reshape(-1).tolist()]


class TextStreamer(BaseStreamer):
    """Print the text of one sequence to stdout as it is released.

    ``skip_prompt`` drops the first ``put`` (the prompt); ``decode_kwargs`` go to
    ``tokenizer.decode`` (e.g. ``skip_special_tokens=True``). Override :meth:`on_finalized_text` to
    send the text elsewhere. A batch of several sequences is refused; see :class:`BatchTextStreamer`.
    """

    def __init__(self, tokenizer: Any, skip_prompt: bool = False, **decode_kwargs: Any):
        self.tokenizer = tokenizer
        self.skip_prompt = skip_prompt
        self.decode_kwargs = decode_kwargs
        self._buffer = WordBuffer(tokenizer, decode_kwargs)
        self.next_tokens_are_prompt = True

    # transformers exposes these two; subclasses written for it may read them
    @property
    def token_cache(self) -> List[int]:
        return self._buffer.token_cache

    @property
    def print_len(self) -> int:
        return self._buffer.print_len

    def put(self, value: torch.Tensor) -> None:
        """Take new tokens: (1, k) or a 1-D tensor of ids of the one sequence."""
        if value.dim() > 1:
            if value.shape[0] > 1:
                raise ValueError(
                    f"{type(self).__name__} streams one sequence, but got tokens of shape {tuple(value.shape)} "
                    f"({value.shape[0]} sequences); generate one prompt at a time, or use "
                    "genplug.streamers.BatchTextStreamer to stream every row"
                )
            value = value[0]
        if self.skip_prompt and self.next_tokens_are_prompt:
            self.next_tokens_are_prompt = False
            return
        self.on_finalized_text(self._buffer.push(value.reshape(-1).tolist()))

    def end(self) -> None:
        """Release what is left and mark the end of the stream."""
        text = self._buffer.flush()
        self.next_tokens_are_prompt = True
        self.on_finalized_text(text, stream_end=True)

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        """Where released text goes: stdout here, followed by a newline at the end of the stream."""
        print(text, flush=True, end=None if stream_end else "")


class TextIteratorStreamer(TextStreamer):
    """Queue the released text for another thread to iterate over (``for text in streamer``).

    Run generate() in a worker thread and iterate in the consumer. ``timeout`` (seconds) bounds
    each wait on the queue: ``queue.Empty`` is raised when nothing arrives in time, which is how a
    consumer notices that generate() failed in its thread.
    """

    def __init__(self, tokenizer: Any, skip_prompt: bool = False, timeout: Optional[float] = None,
                 **decode_kwargs: Any):
        super().__init__(tokenizer, skip_prompt, **decode_kwargs)
        self.text_queue: Queue = Queue()
        self.stop_signal = None
        self.timeout = timeout

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        self.text_queue.put(text, timeout=self.timeout)
        if stream_end:
            self.text_queue.put(self.stop_signal, timeout=self.timeout)

    def __iter__(self) -> "TextIteratorStreamer":
        return self

    def __next__(self) -> str:
        value = self.text_queue.get(timeout=self.timeout)
        if value is self.stop_signal:
            raise StopIteration()
        return value


class AsyncTextIteratorStreamer(TextStreamer):
    """Queue the released text for a coroutine to iterate over (``async for text in streamer``).

    Create it inside the running event loop that will consume it; generate() then runs in a thread
    (e.g. ``loop.run_in_executor``) and hands text to the loop thread-safely. ``timeout`` bounds each
    wait: ``TimeoutError`` is raised when nothing arrives in time.
    """

    def __init__(self, tokenizer: Any, skip_prompt: bool = False, timeout: Optional[float] = None,
                 **decode_kwargs: Any):
        super().__init__(tokenizer, skip_prompt, **decode_kwargs)
        try:
            self.loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "AsyncTextIteratorStreamer must be created inside a running event loop (in a coroutine, "
                "e.g. under asyncio.run), because it hands text to that loop's queue"
            ) from None
        self.text_queue: asyncio.Queue = asyncio.Queue()
        self.stop_signal = None
        self.timeout = timeout

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        # put() runs in generate()'s thread; asyncio queues may only be touched from the loop's.
        self.loop.call_soon_threadsafe(self.text_queue.put_nowait, text)
        if stream_end:
            self.loop.call_soon_threadsafe(self.text_queue.put_nowait, self.stop_signal)

    def __aiter__(self) -> "AsyncTextIteratorStreamer":
        return self

    async def __anext__(self) -> str:
        try:
            value = await asyncio.wait_for(self.text_queue.get(), self.timeout)
        except asyncio.TimeoutError:  # a distinct class before Python 3.11
            raise TimeoutError(f"no text arrived from generate() within timeout={self.timeout} s") from None
        if value is self.stop_signal:
            raise StopAsyncIteration()
        return value


class BatchTextStreamer(BaseStreamer):
    """Stream every row of a batch: one text buffer per row (a genplug addition).

    Accepts what generate() sends for any batch size: the prompt (B, L), then (B,) per step or
    (B, k). Each ``put`` calls :meth:`on_finalized_text` with a list of B strings, the text each row
    released (often ""). The default keeps the text in :attr:`texts` (one string per row); override
    :meth:`on_finalized_text` to forward it, e.g. to one queue per client. Rows that finished early
    receive ``pad_token_id``: pass ``skip_special_tokens=True`` so the padding decodes to nothing.
    """

    def __init__(self, tokenizer: Any, skip_prompt: bool = False, **decode_kwargs: Any):
        self.tokenizer = tokenizer
        self.skip_prompt = skip_prompt
        self.decode_kwargs = decode_kwargs
        self.next_tokens_are_prompt = True
        self._buffers: List[WordBuffer] = []
        self.texts: List[str] = []

    def put(self, value: torch.Tensor) -> None:
        rows = _as_token_lists(value)
        if not self._buffers:
            self._buffers = [WordBuffer(self.tokenizer, self.decode_kwargs) for _ in rows]
            self.texts = [""] * len(rows)
        elif len(rows) != len(self._buffers):
            raise ValueError(
                f"BatchTextStreamer is streaming {len(self._buffers)} rows but got tokens for {len(rows)} "
                f"(shape {tuple(value.shape)}); use one streamer per generate() call"
            )
        if self.skip_prompt and self.next_tokens_are_prompt:
            self.next_tokens_are_prompt = False
            return
        self.on_finalized_text([buffer.push(ids) for buffer, ids in zip(self._buffers, rows)])

    def end(self) -> None:
        texts = [buffer.flush() for buffer in self._buffers]
        self._buffers = []
        self.next_tokens_are_prompt = True
        self.on_finalized_text(texts, stream_end=True)

    def on_finalized_text(self, texts: List[str], stream_end: bool = False) -> None:
        """Where each row's released text goes: appended to :attr:`texts` here."""
        for row, text in enumerate(texts):
            self.texts[row] += text
