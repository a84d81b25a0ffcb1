"""Forced tokens: the first generated token (forced BOS) and the last one at max_length (forced EOS)."""

from __future__ import annotations

import torch

from genplug import hookimpl

from . import enabling
from .chaining import ChainableProcessor, in_place_capable
from .masking import NEG_INF, TokenSet
from .validation import eos_list, fail, is_int, token_ids, within_vocab


class _ForceTokens(ChainableProcessor):
    """At one sequence length, every score becomes -inf except the forced tokens', which become 0."""

    history_use = "length"  # see genplug.processing.LogitsProcessor.history_use
    at: int  # the sequence length at which the tokens are forced

    def _active(self, input_ids) -> bool:
        return input_ids.shape[-1] == self.at

    def at_length(self, length, scores):
        """``self(input_ids, scores)`` for input_ids of ``length`` tokens (a 0-d device tensor): no host read."""
        return torch.where(length == self.at, self._forced(scores), scores)

    def _forced(self, scores):
        allowed = self.tokens.mask(scores.shape[-1], scores.device)
        return torch.zeros((), dtype=scores.dtype, device=scores.device).masked_fill(~allowed, NEG_INF)

    def __call__(self, input_ids, scores):
        if not self._active(input_ids):
            return scores
        return self._forced(scores).expand_as(scores).clone()

    def apply_(self, input_ids, scores):
        if not self._active(input_ids):
            return scores
        return scores.copy_(self._forced(scores).expand_as(scores))


@in_place_capable
class ForcedBOSTokenLogitsProcessor(_ForceTokens):
    """Force ``bos_token_id`` as the first generated token (when the sequence is one token long)."""

    def __init__(self, bos_token_id: int):
        if not is_int(bos_token_id) or bos_token_id < 0:
            fail("forced_bos_token_id", bos_token_id, "is not a token id (an int >= 0)", "use a token id")
        self.bos_token_id = int(bos_token_id)
        self.tokens = TokenSet([self.bos_token_id])
        self.at = 1


@in_place_capable
class ForcedEOSTokenLogitsProcessor(_ForceTokens):
    """Force an EOS token as the last token, when the sequence is ``max_length - 1`` long."""

    def __init__(self, max_length: int, eos_token_id, device: str = "cpu"):
        if not is_int(max_length) or max_length < 1:
            fail("max_length", max_length, "is not an int >= 1", "pass the maximum total length")
        self.max_length = int(max_length)
        self.tokens = TokenSet(token_ids("forced_eos_token_id", eos_token_id), device)
        self.eos_token_id = self.tokens.ids
        self.at = self.max_length - 1


def build_forced_bos(config, context):
    bos = getattr(config, "forced_bos_token_id", None)
    if bos is None:
        return None
    processor = ForcedBOSTokenLogitsProcessor(bos)
    within_vocab("forced_bos_token_id", bos, [processor.bos_token_id], context.vocab_size)
    processor.tokens.mask(context.vocab_size, context.device)  # built now rather than in the first step
    return processor


def build_forced_eos(config, context):
    eos = getattr(config, "forced_eos_token_id", None)
    if eos is None:
        return None
    processor = ForcedEOSTokenLogitsProcessor(config.max_length, eos, device=context.device)
    within_vocab("forced_eos_token_id", eos, eos_list(eos, "forced_eos_token_id"), context.vocab_size)
    processor.tokens.mask(context.vocab_size, context.device)
    return processor


@hookimpl
def genplug_register_logits_processors(register):
    register("forced_bos_token_id", build_forced_bos, stage="constraint",
             after=enabling.after(enabling.CONSTRAINT_ORDER, "forced_bos_token_id"),
             fields=("forced_bos_token_id",), description="forces forced_bos_token_id as the first generated token")
    register("forced_eos_token_id", build_forced_eos, stage="constraint",
             after=enabling.after(enabling.CONSTRAINT_ORDER, "forced_eos_token_id"),
             fields=("forced_eos_token_id", "max_length"),
             description="forces forced_eos_token_id as the last token before max_length")
