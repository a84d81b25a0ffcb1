"""Per-token lookup tables that let stop strings be found with a few gathers per step.

A stop string counts as generated when the decoded text of the last tokens covers it, where the
newest token may run past the end of the stop string and the earliest one may start before it.
Walking backwards from the newest token:

* the newest token must *end* the string: a prefix of its text equals a suffix of the stop string,
  covering ``e`` units of it (``e`` = the whole length if the token contains the string);
* every earlier token must *fit* where the walk has got to, with ``p`` units matched so far: it lies
  inside the stop string ending ``p`` units before the string's end, or it starts before the string
  and its suffix equals the string's prefix;
* the string is found once ``e`` plus the lengths of the earlier tokens reaches its length.

This module precomputes, with tensor operations over the whole vocabulary (no Python loop over the
tokens), for every stop string ``s``:

* ``end_overlaps[row, s, :]`` -- the values of ``e`` the token can end ``s`` with, 0-padded;
* ``fits[row, s, p]`` -- whether the token fits with ``p`` units of ``s`` matched (0 < p < len);
* ``token_length[id]`` -- the number of units of every token's text.

Only tokens that end or fit somewhere get a row; every other id maps to row 0, which holds nothing.
The matches found are exactly those of transformers' ``StopStringCriteria`` (5.23).
"""

from __future__ import annotations

import warnings
from typing import Sequence, Tuple

import attrs
import torch

from .token_texts import TokenTexts

MAX_CACHED_TABLES = 8  # per vocabulary, least recently used dropped first


@attrs.frozen(eq=False)
class StopStringTables:
    """What the criterion gathers from at every step; see the module docstring."""

    row_of_id: torch.Tensor  # (max_id + 2,) int64; the last slot is for ids outside the vocabulary
    token_length: torch.Tensor  # (max_id + 2,) int64
    end_overlaps: torch.Tensor  # (rows, strings, most overlaps of one token) int64, 0 = none
    fits: torch.Tensor  # (rows, strings, longest + 1) bool; the last column is always False
    target_lengths: torch.Tensor  # (strings,) int64
    window: int  # tokens to look back: the longest stop string, one unit per token

    def to(self, device: torch.device) -> "StopStringTables":
        return StopStringTables(self.row_of_id.to(device), self.token_length.to(device),
                                self.end_overlaps.to(device), self.fits.to(device),
                                self.target_lengths.to(device), self.window)


def cached_tables(texts: TokenTexts, stop_strings: Tuple[str, ...]) -> StopStringTables:
    """The tables for ``stop_strings`` over ``texts``, built once and kept with the vocabulary."""
    cache = texts.tables
    tables = cache.get(stop_strings)
    if tables is None:
        tables = build_tables(texts, stop_strings)
        cache[stop_strings] = tables
        while len(cache) > MAX_CACHED_TABLES:
            cache.popitem(last=False)
    else:
        cache.move_to_end(stop_strings)
    return tables


def build_tables(texts: TokenTexts, stop_strings: Sequence[str]) -> StopStringTables:
    """Build the tables for ``stop_strings`` (non-empty strings) over one vocabulary."""
    vocab = _Vocabulary.of(texts)
    targets = [texts.encode(s) for s in stop_strings]
    longest = max(len(t) for t in targets)
    found = [_overlaps(vocab, target) for target in targets]

    never = [s for s, (end_tokens, *_rest) in zip(stop_strings, found) if len(end_tokens) == 0]
    if len(never) == len(stop_strings):
        raise ValueError(
            f"no token of the vocabulary can end any of the stop strings {list(stop_strings)!r}, so they "
            "could never be matched; this usually means they hold characters the tokenizer cannot produce"
        )
    if never:
        warnings.warn(f"stop strings {never!r} can never be matched: no token of the vocabulary can end them",
                      UserWarning, stacklevel=4)

    # One row per token that ends or fits in any stop string; row 0 stays empty.
    useful = torch.cat([torch.cat([ends, fits]) for ends, _, fits, _ in found]).unique()
    row_of_token = torch.zeros(len(texts.ids), dtype=torch.int64)
    row_of_token[useful] = torch.arange(1, len(useful) + 1)

    overlap_lists = [_as_lists(row_of_token[tokens], e) for tokens, e, _, _ in found]
    most = max(max((int(slot.max()) + 1 if len(slot) else 1) for _, slot, _ in overlap_lists), 1)
    end_overlaps = torch.zeros((len(useful) + 1, len(targets), most), dtype=torch.int64)
    fits = torch.zeros((len(useful) + 1, len(targets), longest + 1), dtype=torch.bool)
    for s, ((rows, slot, e), (_, _, fit_tokens, p)) in enumerate(zip(overlap_lists, found)):
        end_overlaps[rows, s, slot] = e
        fits[row_of_token[fit_tokens], s, p] = True

    id_slots = int(texts.ids.max()) + 2 if len(texts.ids) else 1
    row_of_id = torch.zeros(id_slots, dtype=torch.int64)
    row_of_id[texts.ids] = row_of_token
    token_length = torch.zeros(id_slots, dtype=torch.int64)
    token_length[texts.ids] = texts.lengths
    target_lengths = torch.tensor([len(t) for t in targets], dtype=torch.int64)
    return StopStringTables(row_of_id, token_length, end_overlaps, fits, target_lengths, longest)


def _as_lists(rows: torch.Tensor, values: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Distinct (row, value) pairs with each pair's slot in its row's list: (rows, slots, values)."""
    if len(rows) == 0:
        return rows, rows, values
    pairs = torch.unique(torch.stack([rows, values], 1), dim=0)  # sorted by row
    rows, values = pairs[:, 0].contiguous(), pairs[:, 1].contiguous()
    first_of_row = torch.searchsorted(rows, rows)
    return rows, torch.arange(len(rows)) - first_of_row, values


def _overlaps(vocab: "_Vocabulary", target: torch.Tensor):
    """For one stop string of ``n`` units, as (token indices, column) pairs: which tokens can end it
    covering ``e`` units, and which fit with ``p`` units already matched."""
    n = len(target)
    ends = [(vocab.containing(target), n)]  # the token holds the whole string
    ends += [(vocab.starting_with(target[n - e:]), e) for e in range(1, n)]
    fits = []
    for end in range(1, n):  # the token ends `end` units into the string: p = n - end
        # it starts before the string, and its last `end` units are the string's first
        tokens = vocab.ending_with(target[:end])
        fits.append((tokens[vocab.lengths[tokens] > end], n - end))
    for start in range(n - 1):  # it lies inside the string from `start`, ending before the string's end
        tokens = vocab.prefixes_of(target[start:n - 1])
        fits.append((tokens, n - start - vocab.lengths[tokens]))
    empty = (vocab.lengths == 0).nonzero().squeeze(1)  # an empty token fits anywhere inside
    fits += [(empty, p) for p in range(1, n)]
    return _pairs(ends) + _pairs(fits)


def _pairs(found) -> Tuple[torch.Tensor, torch.Tensor]:
    if not found:
        return torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64)
    tokens = torch.cat([t for t, _ in found])
    columns = torch.cat([torch.as_tensor(c, dtype=torch.int64).expand(len(t)) for t, c in found])
    return tokens, columns


@attrs.frozen(eq=False)
class _Vocabulary:
    """Token texts laid out for the searches below; each search filters one unit position at a time,
    so it costs about one pass over the vocabulary whatever the stop string's length."""

    starts: torch.Tensor
    lengths: torch.Tensor
    units: torch.Tensor  # followed by one -1, the value read wherever a token has no unit
    first: torch.Tensor  # first unit of every token, -1 if empty
    last: torch.Tensor

    @classmethod
    def of(cls, texts: TokenTexts) -> "_Vocabulary":
        units = torch.cat([texts.units, torch.tensor([-1], dtype=texts.units.dtype)])
        nowhere = len(texts.units)
        nonempty = texts.lengths > 0
        first = units[torch.where(nonempty, texts.starts, nowhere)]
        last = units[torch.where(nonempty, texts.starts + texts.lengths - 1, nowhere)]
        return cls(texts.starts, texts.lengths, units, first, last)

    def _unit(self, tokens: torch.Tensor, offset) -> torch.Tensor:
        return self.units[(self.starts[tokens] + offset).clamp(0, len(self.units) - 1)]

    def starting_with(self, pattern: torch.Tensor) -> torch.Tensor:
        """Tokens whose text starts with ``pattern``."""
        tokens = (self.first == pattern[0]).nonzero().squeeze(1)
        tokens = tokens[self.lengths[tokens] >= len(pattern)]
        for x in range(1, len(pattern)):
            tokens = tokens[self._unit(tokens, x) == pattern[x]]
        return tokens

    def ending_with(self, pattern: torch.Tensor) -> torch.Tensor:
        """Tokens whose text ends with ``pattern``."""
        tokens = (self.last == pattern[-1]).nonzero().squeeze(1)
        tokens = tokens[self.lengths[tokens] >= len(pattern)]
        for x in range(2, len(pattern) + 1):
            tokens = tokens[self._unit(tokens, self.lengths[tokens] - x) == pattern[-x]]
        return tokens

    def prefixes_of(self, text: torch.Tensor) -> torch.Tensor:
        """Non-empty tokens whose whole text is a prefix of ``text``."""
        tokens = (self.first == text[0]).nonzero().squeeze(1)
        tokens = tokens[self.lengths[tokens] <= len(text)]
        for x in range(1, len(text)):
            length = self.lengths[tokens]
            tokens = tokens[(length <= x) | (self._unit(tokens, x) == text[x])]
        return tokens

    def containing(self, pattern: torch.Tensor) -> torch.Tensor:
        """Tokens whose text contains ``pattern`` (as a whole, not across the next token)."""
        at = (self.units[:-1] == pattern[0]).nonzero().squeeze(1)
        for x in range(1, len(pattern)):
            at = at[self.units[(at + x).clamp(max=len(self.units) - 1)] == pattern[x]]
        token_ends = self.starts + self.lengths
        owner = torch.searchsorted(token_ends, at, right=True)
        return owner[at + len(pattern) <= token_ends[owner]].unique()
