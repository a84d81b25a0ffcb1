"""Prefix-constrained generation: a user function names the tokens allowed after each prefix."""

from __future__ import annotations

import math
from typing import Callable, List

import torch

from genplug import hookimpl
from genplug.processing import LogitsProcessor

from .validation import fail, is_int, positive_int


class PrefixConstrainedLogitsProcessor(LogitsProcessor):
    """Keep only the tokens ``prefix_allowed_tokens_fn(batch_id, row_ids)`` allows for each row.

    The function is user Python called once per row and step, so this processor reads tensors on the
    host and cannot be compiled. If every beam of a batch item has only -inf scores left, the allowed
    tokens get a score of 0 so that the constraint still holds. ``num_beams`` is the number of consecutive
    rows per prompt: ``max(num_beams, num_return_sequences)`` of the call, as transformers documents.
    """

    compile_safe = False

    def __init__(self, prefix_allowed_tokens_fn: Callable[[int, torch.Tensor], List[int]], num_beams: int):
        if not callable(prefix_allowed_tokens_fn):
            fail("prefix_allowed_tokens_fn", prefix_allowed_tokens_fn, "is not callable",
                 "pass a function (batch_id, input_ids) -> list of allowed token ids")
        self._prefix_allowed_tokens_fn = prefix_allowed_tokens_fn
        self._num_beams = positive_int("num_beams", num_beams, meaning="the number of beams per batch item",
                                       fix="use an int >= 1")

    def _allowed(self, batch_id: int, beam: int, row_ids: torch.Tensor, vocab_size: int) -> List[int]:
        allowed = self._prefix_allowed_tokens_fn(batch_id, row_ids)
        where = f"for batch {batch_id}, beam {beam} at length {row_ids.shape[-1]}"
        if isinstance(allowed, torch.Tensor):
            allowed = allowed.reshape(-1).tolist()
        try:
            allowed = list(allowed)
        except TypeError:
            fail("prefix_allowed_tokens_fn", self._prefix_allowed_tokens_fn,
                 f"returned {allowed!r} {where}, which is not a list of token ids",
                 "return a list of allowed token ids")
        if not allowed:
            fail("prefix_allowed_tokens_fn", self._prefix_allowed_tokens_fn,
                 f"returned no allowed tokens {where}: the constraint cannot be satisfied",
                 "return at least one token id for every prefix")
        bad = [t for t in allowed if not is_int(t) or not 0 <= t < vocab_size]
        if bad:
            fail("prefix_allowed_tokens_fn", self._prefix_allowed_tokens_fn,
                 f"returned {bad[:5]} {where}, which are not token ids of this model (0..{vocab_size - 1})",
                 "return ints from the model's vocabulary")
        return allowed

    def __call__(self, input_ids, scores):
        rows, beams = input_ids.shape[0], self._num_beams
        if rows % beams:
            fail("num_beams", beams, f"does not divide the {rows} rows of input_ids",
                 "pass the num_beams generate() expanded the batch with")
        vocab_size = scores.shape[-1]
        row_index, token_index = [], []
        for row in range(rows):  # the user function is per-row Python: this loop is inherent
            allowed = self._allowed(row // beams, row % beams, input_ids[row], vocab_size)
            row_index.extend([row] * len(allowed))
            token_index.extend(allowed)
        mask = torch.full_like(scores, -math.inf)
        mask[torch.tensor(row_index, device=scores.device), torch.tensor(token_index, device=scores.device)] = 0
        constrained = scores + mask
        hopeless = constrained.amax(dim=-1).isneginf().view(rows // beams, beams).all(dim=-1, keepdim=True)
        return torch.where(hopeless.repeat_interleave(beams, dim=0), mask, constrained)


def build(config, context):
    fn = context.prefix_allowed_tokens_fn
    if fn is None:
        return None
    # generate() repeats each prompt over max(num_beams, num_return_sequences) consecutive rows, so batch_id
    # is the prompt's index also when sampling several sequences (transformers >= 5.24; before, it passed
    # the row index there, past the end of the caller's per-prompt data)
    rows_per_prompt = max(getattr(config, "num_beams", None) or 1, getattr(config, "num_return_sequences", None) or 1)
    return PrefixConstrainedLogitsProcessor(fn, rows_per_prompt)


@hookimpl
def genplug_register_logits_processors(register):
    register("prefix_allowed_tokens_fn", build, stage="constraint", fields=("num_beams",),
             description="keeps only the tokens generate(prefix_allowed_tokens_fn=...) allows for each row")
