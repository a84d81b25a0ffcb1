"""N-gram blocking: ban the tokens that would repeat an n-gram of the sequence (or of the encoder input).

Vectorised: the history is unfolded into all its n-grams at once, the last n-1 tokens are compared
with every n-gram's first n-1 tokens, and the last tokens of the matching n-grams are banned with one
scatter. No Python loop over rows or n-grams, no host sync.
"""

from __future__ import annotations

import warnings

import torch

from genplug import hookimpl

from . import enabling
from .chaining import ChainableProcessor, in_place_capable
from .history import tail
from .masking import ban_tokens_
from .validation import fail, positive_int


def _ngram_size(field: str, value) -> int:
    return positive_int(field, value, meaning="the length of the n-grams that may occur only once",
                        fix="use an int >= 1, or 0 in the config to disable it")


def ban_repeated_ngrams_(scores: torch.FloatTensor, ngrams: torch.LongTensor, input_ids: torch.LongTensor,
                         ngram_size: int) -> torch.FloatTensor:
    """Ban, in place, the last token of every n-gram in ``ngrams`` (batch, count, n) that starts with
    the last n-1 tokens of ``input_ids``."""
    return ban_completions_(scores, ngrams, input_ids[:, input_ids.shape[1] - (ngram_size - 1):])


def ban_completions_(scores, ngrams, suffix, where=True):
    """Ban, in place, the last token of every n-gram (batch, count, n) whose first n-1 tokens are
    ``suffix`` (batch, n-1), among the n-grams ``where`` allows (a mask broadcast over them)."""
    completes = (ngrams[..., :-1] == suffix[:, None, :]).all(dim=-1) & where
    return ban_tokens_(scores, ngrams[..., -1], completes)


@in_place_capable
class NoRepeatNGramLogitsProcessor(ChainableProcessor):
    """Every n-gram of size ``ngram_size`` may occur only once in the sequence (prompt included)."""

    history_use = "prefix"  # see genplug.processing.LogitsProcessor.history_use

    def __init__(self, ngram_size: int):
        self.ngram_size = _ngram_size("no_repeat_ngram_size", ngram_size)

    def at_prefix(self, tokens, length, scores):
        """``self(tokens[:, :length], scores)`` over the graph loop's buffer: n-grams that end past
        ``length`` never match."""
        n = self.ngram_size
        if tokens.shape[1] < n:
            return scores
        ngrams = tokens.unfold(dimension=1, size=n, step=1)
        inside = torch.arange(ngrams.shape[1], device=tokens.device) <= length - n
        return ban_completions_(scores.clone(), ngrams, tail(tokens, length, n - 1, before_start=-1), inside)

    def __call__(self, input_ids, scores):
        if input_ids.shape[-1] < self.ngram_size:  # no complete n-gram yet
            return scores
        return self.apply_(input_ids, scores.clone())

    def apply_(self, input_ids, scores):
        if input_ids.shape[-1] < self.ngram_size:
            return scores
        ngrams = input_ids.unfold(dimension=1, size=self.ngram_size, step=1)
        return ban_repeated_ngrams_(scores, ngrams, input_ids, self.ngram_size)


@in_place_capable
class EncoderNoRepeatNGramLogitsProcessor(ChainableProcessor):
    """No n-gram of the encoder input (the prompt for decoder-only models) may be generated again.

    The encoder's n-grams are unfolded once, at construction; hypotheses map to their encoder row by
    ``row // (batch / encoder batch)`` (beams and returned sequences are interleaved).
    """

    history_use = "prefix"  # see genplug.processing.LogitsProcessor.history_use

    def __init__(self, encoder_ngram_size: int, encoder_input_ids: torch.LongTensor):
        self.ngram_size = _ngram_size("encoder_no_repeat_ngram_size", encoder_ngram_size)
        if encoder_input_ids.dim() == 1:
            encoder_input_ids = encoder_input_ids[None, :]
        if encoder_input_ids.dim() != 2:
            fail("encoder_input_ids", tuple(encoder_input_ids.shape), "is not a (batch, length) tensor",
                 "pass the encoder's input ids")
        self.batch_size = encoder_input_ids.shape[0]
        if encoder_input_ids.shape[1] >= self.ngram_size:
            self.ngrams = encoder_input_ids.unfold(dimension=1, size=self.ngram_size, step=1)
        else:
            self.ngrams = None  # the encoder input holds no complete n-gram: nothing to ban
        self._expanded = None

    def _ngrams_per_row(self, batch_size: int, device: torch.device) -> torch.LongTensor:
        if self._expanded is None or self._expanded.shape[0] != batch_size or self._expanded.device != device:
            ngrams = self.ngrams.to(device)
            self._expanded = ngrams.repeat_interleave(batch_size // self.batch_size, dim=0)  # once per call
        return self._expanded

    def __call__(self, input_ids, scores):
        if self.ngrams is None or input_ids.shape[-1] < self.ngram_size - 1:
            return scores
        return self.apply_(input_ids, scores.clone())

    def apply_(self, input_ids, scores):
        if self.ngrams is None or input_ids.shape[-1] < self.ngram_size - 1:
            return scores
        ngrams = self._ngrams_per_row(scores.shape[0], scores.device)
        return ban_repeated_ngrams_(scores, ngrams, input_ids, self.ngram_size)

    def at_prefix(self, tokens, length, scores):
        """``self(tokens[:, :length], scores)`` over the graph loop's buffer (no host read)."""
        if self.ngrams is None:
            return scores
        n = self.ngram_size
        ngrams = self._ngrams_per_row(scores.shape[0], scores.device)
        return ban_completions_(scores.clone(), ngrams, tail(tokens, length, n - 1, before_start=-1), length >= n - 1)


def build_no_repeat_ngram(config, context):
    size = getattr(config, "no_repeat_ngram_size", None)
    if size is None or size <= 0:
        return None
    if not context.is_encoder_decoder and context.prompt_length == 0:
        warnings.warn(
            "Passing `no_repeat_ngram_size` with `inputs_embeds` and without `input_ids` to `generate` will apply "
            "n-gram constraints only to newly generated tokens, not to the prompt.",
            UserWarning,
            stacklevel=2,
        )
    return NoRepeatNGramLogitsProcessor(size)


def build_encoder_no_repeat_ngram(config, context):
    size = getattr(config, "encoder_no_repeat_ngram_size", None)
    if size is None or size <= 0:
        return None
    encoder_ids = enabling.usable_encoder_ids(context, "encoder_no_repeat_ngram_size")
    if encoder_ids is None:
        return None
    return EncoderNoRepeatNGramLogitsProcessor(size, encoder_ids)


@hookimpl
def genplug_register_logits_processors(register):
    register("no_repeat_ngram_size", build_no_repeat_ngram, stage="penalty",
             after=enabling.after(enabling.PENALTY_ORDER, "no_repeat_ngram_size"),
             fields=("no_repeat_ngram_size",),
             description="bans tokens that would repeat an n-gram of the sequence")
    register("encoder_no_repeat_ngram_size", build_encoder_no_repeat_ngram, stage="penalty",
             after=enabling.after(enabling.PENALTY_ORDER, "encoder_no_repeat_ngram_size"),
             fields=("encoder_no_repeat_ngram_size",),
             description="bans tokens that would repeat an n-gram of the encoder input / prompt")
