"""Token suppression: always (suppress_tokens) or at the first generated position (begin_suppress_tokens)."""

from __future__ import annotations

from genplug import hookimpl

from . import enabling
from .chaining import in_place_capable
from .masking import MaskingProcessor, TokenSet
from .validation import fail, is_int, token_ids, within_vocab


@in_place_capable
class SuppressTokensLogitsProcessor(MaskingProcessor):
    """Set the scores of ``suppress_tokens`` to -inf at every step (Whisper's non-speech tokens)."""

    history_use = "none"  # see genplug.processing.LogitsProcessor.history_use

    def __init__(self, suppress_tokens, device: str = "cpu"):
        self.tokens = TokenSet(token_ids("suppress_tokens", suppress_tokens, allow_empty=True), device)
        self.suppress_tokens = self.tokens.ids

    def removal_mask(self, input_ids, scores):
        return self.tokens.mask(scores.shape[-1], scores.device)


@in_place_capable
class SuppressTokensAtBeginLogitsProcessor(MaskingProcessor):
    """Set the scores of ``begin_suppress_tokens`` to -inf when the sequence is ``begin_index`` long.

    That is the first generated position; generate() adds one when a forced BOS takes it.
    """

    history_use = "length"  # see genplug.processing.LogitsProcessor.history_use

    def __init__(self, begin_suppress_tokens, begin_index: int, device: str = "cpu"):
        self.tokens = TokenSet(token_ids("begin_suppress_tokens", begin_suppress_tokens, allow_empty=True), device)
        self.begin_suppress_tokens = self.tokens.ids
        self.set_begin_index(begin_index)

    def set_begin_index(self, begin_index: int) -> None:
        if not is_int(begin_index) or begin_index < 0:
            fail("begin_index", begin_index, "is not an int >= 0", "pass the sequence length at which to suppress")
        self.begin_index = int(begin_index)

    def removal_mask(self, input_ids, scores):
        if input_ids.shape[-1] != self.begin_index:
            return None
        return self.tokens.mask(scores.shape[-1], scores.device)

    def at_length(self, length, scores):
        """``self(input_ids, scores)`` for input_ids of ``length`` tokens (a 0-d device tensor): no host read."""
        at_begin = length == self.begin_index
        return scores.masked_fill(self.tokens.mask(scores.shape[-1], scores.device) & at_begin, self.filter_value)


def build_suppress(config, context):
    tokens = getattr(config, "suppress_tokens", None)
    if tokens is None:
        return None
    processor = SuppressTokensLogitsProcessor(tokens, device=context.device)
    within_vocab("suppress_tokens", tokens, processor.tokens.ids.tolist(), context.vocab_size)
    processor.tokens.mask(context.vocab_size, context.device)  # built now rather than in the first step
    return processor


def build_begin_suppress(config, context):
    tokens = getattr(config, "begin_suppress_tokens", None)
    if tokens is None:
        return None
    begin_index = context.prompt_length
    if begin_index <= 1 and getattr(config, "forced_bos_token_id", None) is not None:
        begin_index += 1  # the forced BOS takes the first position
    processor = SuppressTokensAtBeginLogitsProcessor(tokens, begin_index, device=context.device)
    within_vocab("begin_suppress_tokens", tokens, processor.tokens.ids.tolist(), context.vocab_size)
    processor.tokens.mask(context.vocab_size, context.device)
    return processor


@hookimpl
def genplug_register_logits_processors(register):
    register("suppress_tokens", build_suppress, stage="constraint",
             after=enabling.after(enabling.CONSTRAINT_ORDER, "suppress_tokens"),
             fields=("suppress_tokens",), description="sets the scores of suppress_tokens to -inf")
    register("begin_suppress_tokens", build_begin_suppress, stage="constraint",
             after=enabling.after(enabling.CONSTRAINT_ORDER, "begin_suppress_tokens"),
             fields=("begin_suppress_tokens", "forced_bos_token_id"),
             description="sets the scores of begin_suppress_tokens to -inf at the first generated position")
