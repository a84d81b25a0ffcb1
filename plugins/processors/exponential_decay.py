"""Exponential decay length penalty: raise the EOS score more and more after a number of new tokens."""

from __future__ import annotations

import torch

from genplug import hookimpl

from . import enabling
from .chaining import ChainableProcessor, in_place_capable
from .validation import eos_list, fail, is_int, is_number, within_vocab


@in_place_capable
class ExponentialDecayLengthPenalty(ChainableProcessor):
    """After ``start_index`` new tokens, each EOS score grows by ``|score| * (factor ** n - 1)``.

    ``n`` counts the tokens past the start. Using the absolute value makes negative scores rise too, so
    EOS becomes more likely smoothly instead of at a hard cut-off.
    """

    history_use = "length"  # see genplug.processing.LogitsProcessor.history_use

    def __init__(self, exponential_decay_length_penalty, eos_token_id, input_ids_seq_length: int):
        value = exponential_decay_length_penalty
        if (not isinstance(value, (list, tuple)) or len(value) != 2 or not is_int(value[0]) or value[0] < 0
                or not is_number(value[1])):
            fail("exponential_decay_length_penalty", value, "is not a pair (start_index >= 0, decay_factor)",
                 "use a pair like (10, 1.05)")
        if not is_int(input_ids_seq_length) or input_ids_seq_length < 0:
            fail("input_ids_seq_length", input_ids_seq_length, "is not an int >= 0", "pass the prompt length")
        eos = eos_list(eos_token_id)
        if not eos:
            fail("eos_token_id", eos_token_id, "is not set, but exponential_decay_length_penalty raises the EOS score",
                 "set eos_token_id, or leave exponential_decay_length_penalty unset")
        self.regulation_start = int(value[0]) + input_ids_seq_length
        self.regulation_factor = float(value[1])
        self.eos_token_id = torch.tensor(eos, dtype=torch.long)
        self._factor = torch.tensor(self.regulation_factor, dtype=torch.float64)  # for at_length

    def apply_(self, input_ids, scores):
        cur_len = input_ids.shape[-1]
        if cur_len <= self.regulation_start:
            return scores
        if self.eos_token_id.device != scores.device:
            self.eos_token_id = self.eos_token_id.to(scores.device)  # once
        eos_scores = scores[:, self.eos_token_id]
        boost = eos_scores.abs() * (pow(self.regulation_factor, cur_len - self.regulation_start) - 1)
        boost = boost.masked_fill(~torch.isfinite(eos_scores), 0.0)
        scores[:, self.eos_token_id] = eos_scores + boost
        return scores

    def __call__(self, input_ids, scores):
        if input_ids.shape[-1] <= self.regulation_start:
            return scores
        return self.apply_(input_ids, scores.clone())

    def at_length(self, length, scores):
        """``self(input_ids, scores)`` for input_ids of ``length`` tokens (a 0-d device tensor): no host read.

        The growth ``factor ** n - 1`` is computed in float64 and rounded once, as the host computes it."""
        if self._factor.device != scores.device:  # on the first step, which is not captured
            self.eos_token_id = self.eos_token_id.to(scores.device)
            self._factor = self._factor.to(scores.device)
        past = (length - self.regulation_start).clamp_min(0)
        growth = (self._factor.pow(past) - 1).to(scores.dtype)
        eos_scores = scores[:, self.eos_token_id]
        boost = (eos_scores.abs() * growth).masked_fill(~torch.isfinite(eos_scores), 0.0)
        boosted = scores.clone()
        boosted[:, self.eos_token_id] = eos_scores + boost
        return torch.where(length > self.regulation_start, boosted, scores)


def build(config, context):
    value = getattr(config, "exponential_decay_length_penalty", None)
    if value is None:
        return None
    eos = enabling.eos_ids(context)
    processor = ExponentialDecayLengthPenalty(value, eos, context.prompt_length)
    within_vocab("eos_token_id", eos, eos, context.vocab_size)
    return processor


@hookimpl
def genplug_register_logits_processors(register):
    register("exponential_decay_length_penalty", build, stage="constraint",
             after=enabling.after(enabling.CONSTRAINT_ORDER, "exponential_decay_length_penalty"),
             fields=("exponential_decay_length_penalty", "eos_token_id"),
             description="raises the EOS score exponentially after start_index new tokens")
