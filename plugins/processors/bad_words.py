"""Bad words: never generate the given token sequences."""

from __future__ import annotations

from typing import Any, List

from genplug import hookimpl

from . import enabling
from .chaining import in_place_capable
from .masking import NEG_INF, ban_tokens_
from .sequence_bias import SequenceBiasLogitsProcessor
from .validation import eos_list, token_sequences


@in_place_capable
class NoBadWordsLogitsProcessor(SequenceBiasLogitsProcessor):
    """Ban the token that would complete any of ``bad_words_ids`` (a -inf sequence bias).

    One-token entries equal to an EOS id are dropped, so that banning EOS as a "word" cannot stop
    generation from ending. If nothing is left, the processor does nothing (transformers raises).
    """

    field = "bad_words_ids"

    def __init__(self, bad_words_ids: List[List[int]], eos_token_id: Any = None):
        sequences = token_sequences(self.field, bad_words_ids)
        self.bad_word_ids = bad_words_ids
        eos = set(eos_list(eos_token_id))
        kept = [tuple(seq) for seq in sequences if not (len(seq) == 1 and seq[0] in eos)]
        self.sequence_bias = {seq: NEG_INF for seq in kept}
        self._set_up(list(self.sequence_bias.items()))
        self._field_value = bad_words_ids

    def prepare(self, vocab_size, device):
        super().prepare(vocab_size, device)
        self._banned_single = self._dense_single == NEG_INF

    def apply_(self, input_ids, scores):
        # Adding -inf or 0 is masking: two cheap in-place writes instead of building a bias matrix.
        self._ready(scores)
        scores.masked_fill_(self._banned_single, NEG_INF)
        if self.last_tokens.numel():
            completing = self.completing(input_ids)
            ban_tokens_(scores, self.last_tokens.expand(scores.shape[0], -1), completing)
        return scores

    def __call__(self, input_ids, scores):
        return self.apply_(input_ids, scores.clone())

    def at_prefix(self, tokens, length, scores):
        """``self(tokens[:, :length], scores)`` over the graph loop's buffer (no host read)."""
        self._ready(scores)
        scores = scores.masked_fill(self._banned_single, NEG_INF)
        if self.last_tokens.numel():
            ban_tokens_(scores, self.last_tokens.expand(scores.shape[0], -1), self.completing(tokens, length))
        return scores


def build(config, context):
    bad_words_ids = getattr(config, "bad_words_ids", None)
    if bad_words_ids is None:
        return None
    processor = NoBadWordsLogitsProcessor(bad_words_ids, enabling.eos_ids(context))
    processor.prepare(context.vocab_size, context.device)
    return processor


@hookimpl
def genplug_register_logits_processors(register):
    register("bad_words_ids", build, stage="penalty",
             after=enabling.after(enabling.PENALTY_ORDER, "bad_words_ids"),
             fields=("bad_words_ids", "eos_token_id"),
             description="bans the token that would complete any of the bad_words_ids sequences")
