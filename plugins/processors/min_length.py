"""Minimum length: EOS cannot be generated before the sequence (or the new tokens) reach a length."""

from __future__ import annotations

from genplug import hookimpl

from . import enabling
from .chaining import in_place_capable
from .masking import MaskingProcessor, TokenSet
from .validation import fail, is_int, token_ids


def _count(field: str, value) -> int:
    if not is_int(value) or value < 0:
        fail(field, value, "is not an int >= 0", "use a token count, or 0 to disable it")
    return int(value)


@in_place_capable
class MinLengthLogitsProcessor(MaskingProcessor):
    """EOS scores are -inf while the sequence, prompt included, is shorter than ``min_length``."""

    history_use = "length"  # reads only input_ids.shape[-1]; at_length is its graph-safe form

    def __init__(self, min_length: int, eos_token_id, device: str = "cpu"):
        self.min_length = _count("min_length", min_length)
        self.tokens = TokenSet(token_ids("eos_token_id", eos_token_id, allow_empty=True), device)
        self.eos_token_id = self.tokens.ids

    def removal_mask(self, input_ids, scores):
        if input_ids.shape[-1] >= self.min_length:
            return None
        return self.tokens.mask(scores.shape[-1], scores.device)

    def at_length(self, length, scores):
        """``self(input_ids, scores)`` for input_ids of ``length`` tokens (a 0-d device tensor): no host read."""
        return scores.masked_fill(self.tokens.mask(scores.shape[-1], scores.device) & (length < self.min_length),
                                  self.filter_value)


@in_place_capable
class MinNewTokensLengthLogitsProcessor(MaskingProcessor):
    """EOS scores are -inf until ``min_new_tokens`` tokens follow the prompt's ``prompt_length_to_skip``."""

    history_use = "length"  # reads only input_ids.shape[-1]; at_length is its graph-safe form

    def __init__(self, prompt_length_to_skip: int, min_new_tokens: int, eos_token_id, device: str = "cpu"):
        self.prompt_length_to_skip = _count("prompt_length_to_skip", prompt_length_to_skip)
        self.min_new_tokens = _count("min_new_tokens", min_new_tokens)
        self.tokens = TokenSet(token_ids("eos_token_id", eos_token_id, allow_empty=True), device)
        self.eos_token_id = self.tokens.ids

    def removal_mask(self, input_ids, scores):
        if input_ids.shape[-1] - self.prompt_length_to_skip >= self.min_new_tokens:
            return None
        return self.tokens.mask(scores.shape[-1], scores.device)

    def at_length(self, length, scores):
        """``self(input_ids, scores)`` for input_ids of ``length`` tokens (a 0-d device tensor): no host read."""
        short = length - self.prompt_length_to_skip < self.min_new_tokens
        return scores.masked_fill(self.tokens.mask(scores.shape[-1], scores.device) & short, self.filter_value)


def build_min_length(config, context):
    min_length = getattr(config, "min_length", None)
    eos = enabling.eos_ids(context)
    if min_length is None or eos is None or min_length <= 0:
        return None
    processor = MinLengthLogitsProcessor(min_length, eos, device=context.device)
    processor.tokens.mask(context.vocab_size, context.device)  # built now rather than in the first step
    return processor


def build_min_new_tokens(config, context):
    min_new_tokens = getattr(config, "min_new_tokens", None)
    eos = enabling.eos_ids(context)
    if min_new_tokens is None or eos is None or min_new_tokens <= 0:
        return None
    processor = MinNewTokensLengthLogitsProcessor(context.prompt_length, min_new_tokens, eos, device=context.device)
    processor.tokens.mask(context.vocab_size, context.device)
    return processor


@hookimpl
def genplug_register_logits_processors(register):
    register("min_length", build_min_length, stage="length", fields=("min_length", "eos_token_id"),
             description="blocks EOS while the sequence (prompt included) is shorter than min_length")
    register("min_new_tokens", build_min_new_tokens, stage="length",
             after=enabling.after(enabling.LENGTH_ORDER, "min_new_tokens"),
             fields=("min_new_tokens", "eos_token_id"),
             description="blocks EOS until min_new_tokens tokens have been generated")
