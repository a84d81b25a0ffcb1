"""Sequence bias: add a bias to the token that would complete each given token sequence.

The sequences are turned into padded tensors once: single tokens become a dense (vocab,) bias, longer
sequences a (count, longest prefix) matrix of right-aligned prefixes. Each step compares the tail of
every row with all prefixes at once and adds the biases of the matches with one ``index_add_``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch

from genplug import hookimpl

from .chaining import ChainableProcessor, in_place_capable
from .history import tail
from .validation import fail, is_number, token_ids, within_vocab

_WILDCARD = -1  # prefix padding: matches any token
_BEFORE_START = -2  # history padding for prompts shorter than a prefix: matches no real token


def _bias_pairs(field: str, sequence_bias: Any) -> List[Tuple[Tuple[int, ...], float]]:
    """``{(ids...): bias}`` or ``[[ids, bias], ...]`` as a list of (ids, bias), checked."""
    fix = "use {(token, ...): bias} or [[[token, ...], bias], ...] with token ids >= 0 and float biases"
    if isinstance(sequence_bias, dict):
        items = list(sequence_bias.items())
        for key, _ in items:
            if not isinstance(key, tuple):
                fail(field, sequence_bias, f"has the key {key!r}, but keys must be tuples of token ids", fix)
    elif isinstance(sequence_bias, (list, tuple)):
        items = []
        for entry in sequence_bias:
            if not isinstance(entry, (list, tuple)) or len(entry) != 2 or not isinstance(entry[0], (list, tuple)):
                fail(field, sequence_bias, f"contains {entry!r}, but each entry must be [[token ids], bias]", fix)
            items.append((tuple(entry[0]), entry[1]))
    else:
        fail(field, sequence_bias, "is neither a dict nor a list", fix)
    if not items:
        fail(field, sequence_bias, "is empty", fix)
    pairs = []
    for ids, bias in items:
        if not ids:
            fail(field, sequence_bias, "contains an empty token sequence", fix)
        ids = tuple(token_ids(field, list(ids), within=sequence_bias))
        if not is_number(bias):
            fail(field, sequence_bias, f"has the bias {bias!r} for {ids}, which is not a number", fix)
        pairs.append((ids, float(bias)))
    return pairs


@in_place_capable
class SequenceBiasLogitsProcessor(ChainableProcessor):
    """Add ``bias`` to the last token of a sequence whenever the tokens before it end the history.

    A one-token sequence is biased at every step. Biases of several sequences ending in the same token
    add up. Sequences whose prefix is longer than the history are ignored.
    """

    field = "sequence_bias"
    history_use = "prefix"  # see genplug.processing.LogitsProcessor.history_use

    def __init__(self, sequence_bias: Any):
        pairs = _bias_pairs(self.field, sequence_bias)
        self.sequence_bias: Dict[Tuple[int, ...], float] = dict(pairs)
        self._set_up(list(self.sequence_bias.items()))

    def _set_up(self, pairs: List[Tuple[Tuple[int, ...], float]]) -> None:
        self._field_value = {ids: bias for ids, bias in pairs}
        self._single = [(ids[0], bias) for ids, bias in pairs if len(ids) == 1]
        # Grouped by prefix length in order of first appearance, so that the biases of matches add up
        # in the same order as in transformers (whose float sums we reproduce bit for bit).
        groups: Dict[int, list] = {}
        for ids, bias in pairs:
            if len(ids) > 1:
                groups.setdefault(len(ids) - 1, []).append((ids, bias))
        longer = [item for group in groups.values() for item in group]
        self.longest_prefix = max((len(ids) - 1 for ids, _ in longer), default=0)
        width = self.longest_prefix
        self.prefixes = torch.tensor([[_WILDCARD] * (width - len(ids) + 1) + list(ids[:-1]) for ids, _ in longer],
                                     dtype=torch.long).reshape(len(longer), width)
        self.wildcards = self.prefixes == _WILDCARD
        self.last_tokens = torch.tensor([ids[-1] for ids, _ in longer], dtype=torch.long)
        self.biases = torch.tensor([bias for _, bias in longer], dtype=torch.float32)
        self.biased_ids = sorted({i for ids, _ in pairs for i in ids})
        self._dense_single: Optional[torch.Tensor] = None

    def graph_key(self):
        """What every tensor here follows from (for the graph loop's reuse check)."""
        vocab = None if self._dense_single is None else (self._dense_single.shape[0], str(self._dense_single.device))
        return tuple(sorted(self.sequence_bias.items())), vocab

    def prepare(self, vocab_size: int, device: Any) -> None:
        """Check the ids against the vocabulary and move the tensors to ``device`` (once)."""
        within_vocab(self.field, self._field_value, self.biased_ids, vocab_size)
        dense = torch.zeros(vocab_size, dtype=torch.float32)
        if self._single:
            dense[[i for i, _ in self._single]] = torch.tensor([b for _, b in self._single])
        self._dense_single = dense.to(device)
        self.prefixes = self.prefixes.to(device)
        self.wildcards = self.wildcards.to(device)
        self.last_tokens = self.last_tokens.to(device)
        self.biases = self.biases.to(device)

    def _ready(self, scores: torch.FloatTensor) -> None:
        dense = self._dense_single
        if dense is None or dense.shape[0] != scores.shape[-1] or dense.device != scores.device:
            self.prepare(scores.shape[-1], scores.device)

    def completing(self, input_ids: torch.LongTensor, length=None) -> torch.BoolTensor:
        """(batch, sequences): which multi-token sequences the next token would complete, after the
        first ``length`` tokens of ``input_ids`` (default: all of them)."""
        length = input_ids.shape[1] if length is None else length
        recent = tail(input_ids, length, self.longest_prefix, before_start=_BEFORE_START)
        same = (recent[:, None, :] == self.prefixes[None]) | self.wildcards[None]
        return same.all(dim=-1)

    def bias(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, length=None) -> torch.FloatTensor:
        """The (batch, vocab) bias to add this step (after the first ``length`` tokens)."""
        self._ready(scores)
        bias = torch.zeros_like(scores)
        bias += self._dense_single
        if self.last_tokens.numel():
            matched = torch.where(self.completing(input_ids, length), self.biases, 0.0).to(bias.dtype)
            bias.index_add_(1, self.last_tokens, matched)
        return bias

    def __call__(self, input_ids, scores):
        return scores + self.bias(input_ids, scores)

    def apply_(self, input_ids, scores):
        return scores.add_(self.bias(input_ids, scores))

    def at_prefix(self, tokens, length, scores):
        """``self(tokens[:, :length], scores)`` over the graph loop's buffer (no host read)."""
        return scores + self.bias(tokens, scores, length)


def build(config, context):
    sequence_bias = getattr(config, "sequence_bias", None)
    if sequence_bias is None:
        return None
    processor = SequenceBiasLogitsProcessor(sequence_bias)
    processor.prepare(context.vocab_size, context.device)
    return processor


@hookimpl
def genplug_register_logits_processors(register):
    register("sequence_bias", build, stage="bias", fields=("sequence_bias",),
             description="adds a bias to the token completing each given token sequence")
