"""Stop a row once its decoded text ends with one of the configured stop strings (``stop_strings``).

The match is on decoded text, so a stop string spanning several tokens, or ending inside a token
("stop" in "...st" + "opped"), is found. It is checked after every token and only counts when the
newest token overlaps the stop string: a stop string further back was already seen when it was
generated. Which rows stop is the same as with transformers' ``StopStringCriteria`` (5.23); the
lookup tables are built with tensor operations (see :mod:`.stop_string_tables`) and cached per
tokenizer and set of stop strings, so a new set costs milliseconds rather than seconds.
"""

from __future__ import annotations

import threading
from typing import Optional, Sequence, Tuple, Union

import torch

from genplug import hookimpl
from genplug.errors import GenerationConfigError
from genplug.stopping import StoppingCriteria

from .stop_string_tables import StopStringTables, cached_tables
from .token_texts import token_texts

_TABLES_LOCK = threading.Lock()


class StopStringCriteria(StoppingCriteria):
    """Stop rows whose decoded text has just completed one of ``stop_strings``.

    ``tokenizer`` must provide what :mod:`genplug.plugins.stopping.token_texts` lists (any
    transformers tokenizer does). ``stop_strings`` is a string or a list of non-empty strings.

    Per step it looks at the last ``window`` tokens only (the longest stop string, one unit per
    token at worst) and does about a dozen tensor ops over a (batch, window, strings, overlaps)
    tensor, where ``overlaps`` is the most ways one token can end a stop string (usually 1 or 2).
    The lookup tables move to the input's device on the first call, or earlier with :meth:`to`.
    """

    def __init__(self, tokenizer, stop_strings: Union[str, Sequence[str]]):
        self.stop_strings: Tuple[str, ...] = _checked_stop_strings(stop_strings)
        texts = token_texts(tokenizer)
        with _TABLES_LOCK:
            self._tables: StopStringTables = cached_tables(texts, self.stop_strings)
        self._device = None  # (tables, arange(strings)[:, None]) on the last device used

    @property
    def window(self) -> int:
        """How many trailing tokens are looked at."""
        return self._tables.window

    def __call__(self, input_ids: torch.LongTensor, scores: Optional[torch.FloatTensor], **kwargs) -> torch.BoolTensor:
        return self._completed(input_ids[:, -self.window:].flip(1))

    def at_column(self, tokens: torch.LongTensor, column: torch.Tensor) -> torch.BoolTensor:
        """What ``self(tokens[:, :column + 1], None)`` answers, for a fixed-shape token buffer and a 0-d
        device ``column`` (the newest token's): no host read and no shape that depends on ``column``, so the
        CUDA-graph decode loop captures it in its step. Columns before the first are -1, a token that
        matches nothing, which decides as their absence does (tested against ``__call__``)."""
        back = torch.arange(self.window, device=tokens.device)
        at = column - back  # newest first
        recent = tokens.gather(1, at.clamp(min=0).expand(tokens.shape[0], -1))
        return self._completed(recent.masked_fill(at < 0, -1))

    def graph_key(self) -> tuple:
        """What a captured step's reads of this criterion follow from (the CUDA-graph loop's reuse key): the
        stop strings and the lookup tables, which are shared per tokenizer and strings -- a graph holding
        this criterion keeps its tables alive, so an equal id is the same tables."""
        return self.stop_strings, id(self._tables)

    def _completed(self, recent: torch.LongTensor) -> torch.BoolTensor:
        """Rows whose newest tokens ``recent`` (B, k; newest first) complete a stop string."""
        tables, string_index = self._on(recent.device)
        width = tables.fits.shape[-1]
        # Ids outside the vocabulary become -1, which indexes the last table slot: a token that matches nothing.
        recent = recent.clamp(-1, tables.row_of_id.shape[0] - 1)
        rows = tables.row_of_id[recent]  # (B, k)
        lengths = tables.token_length[recent]
        lengths[:, 0] = 0
        overlaps = tables.end_overlaps[rows[:, 0]]  # (B, S, M): units the newest token can cover
        # covered[b, j, s, m]: units of string s covered by tokens 0..j, if the newest covers overlaps[b, s, m]
        covered = overlaps[:, None] + lengths.cumsum(1)[:, :, None, None]  # (B, k, S, M)
        target = tables.target_lengths[:, None]  # (S, 1)

        # Token j >= 1 must fit where tokens 0..j-1 left off -- unless the string was complete already.
        before = covered[:, :-1]
        cells = (rows[:, 1:, None, None] * string_index.shape[0] + string_index) * width  # (B, k-1, S, 1)
        fits = torch.take(tables.fits, cells + before.clamp(max=width - 1))  # (B, k-1, S, M)
        consistent = (fits | (before >= target)).all(dim=1)  # (B, S, M)
        complete = covered[:, -1] >= target
        return ((overlaps > 0) & consistent & complete).flatten(1).any(dim=1)

    def to(self, device) -> "StopStringCriteria":
        """Move the lookup tables to ``device`` now rather than on the first call; returns self."""
        self._on(torch.device(device))
        return self

    def _on(self, device: torch.device):
        if self._device is None or self._device[0].row_of_id.device != device:
            tables = self._tables.to(device)
            string_index = torch.arange(tables.target_lengths.shape[0], device=device)[:, None]  # (S, 1)
            self._device = (tables, string_index)
        return self._device


def _checked_stop_strings(stop_strings) -> Tuple[str, ...]:
    if isinstance(stop_strings, str):
        stop_strings = [stop_strings]
    try:
        strings = tuple(stop_strings)
    except TypeError:
        strings = None
    if not strings or not all(isinstance(s, str) for s in strings):
        raise ValueError(
            f"stop_strings={stop_strings!r} must be a string or a non-empty list of strings, "
            "e.g. stop_strings=['\\n\\n', 'User:']"
        )
    if any(s == "" for s in strings):
        raise ValueError(
            f"stop_strings={list(strings)!r} holds an empty string, which every sequence ends with, so "
            "generation would stop at once; remove it"
        )
    return strings


def build_stop_strings(config, context) -> Optional[StopStringCriteria]:
    """The criterion for ``config.stop_strings``; needs the tokenizer passed to generate()."""
    if config.stop_strings is None:
        return None
    if context.tokenizer is None:
        raise GenerationConfigError(
            f"stop_strings={config.stop_strings!r} needs a tokenizer to know which tokens spell them, but "
            "none was given; pass the model's tokenizer to generate(..., tokenizer=tokenizer)"
        )
    try:
        criterion = StopStringCriteria(context.tokenizer, config.stop_strings)
    except ValueError as exc:
        raise GenerationConfigError(f"stop_strings={config.stop_strings!r}: {exc}") from exc
    device = getattr(context, "device", None)
    return criterion.to(device) if device is not None else criterion


@hookimpl
def genplug_register_stopping_criteria(register):
    register(
        "stop_strings",
        build_stop_strings,
        order=30,
        fields=("stop_strings",),
        description="stop a row once its decoded text ends in one of stop_strings (needs tokenizer=)",
    )
