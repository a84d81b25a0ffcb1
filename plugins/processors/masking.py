"""Tensor helpers for processors that remove, ban or penalise tokens -- batched, no host syncs.

Banning and penalising go through ``scatter_reduce_`` with ``amin`` / ``amax``: a token named twice
in a row (once to ban or penalise, once not) then gets the stronger value whatever order the writes
happen in, so no spare vocabulary column (and no extra copy of the scores) is needed.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import torch

from .chaining import ChainableProcessor

NEG_INF = float("-inf")
POS_INF = float("inf")


class TokenSet:
    """A fixed set of token ids and, built once per (vocab size, device), its boolean vocabulary mask."""

    def __init__(self, ids: Sequence[int], device: Any = None):
        self._id_values = tuple(int(i) for i in ids)
        self.ids = torch.tensor(self._id_values, dtype=torch.long, device=device)
        self._masks: Dict[Tuple[int, torch.device], torch.BoolTensor] = {}

    def graph_key(self) -> Tuple[int, ...]:
        """What the masks follow from (for the graph loop's reuse check; no device read)."""
        return self._id_values

    def mask(self, vocab_size: int, device: torch.device) -> torch.BoolTensor:
        """(vocab_size,) bool, True at the set's ids; ids outside the vocabulary are ignored."""
        key = (vocab_size, torch.device(device))
        found = self._masks.get(key)
        if found is None:
            # Ids past the vocabulary land in a spare last slot, dropped after: no boolean indexing, which
            # would read the count back to the host.
            found = torch.zeros(vocab_size + 1, dtype=torch.bool, device=device)
            found[self.ids.to(device).clamp(max=vocab_size)] = True
            found = found[:vocab_size]
            self._masks = {key: found}  # one entry: a generate() call uses one vocab size and device
        return found

    def __len__(self) -> int:
        return self.ids.numel()


class MaskingProcessor(ChainableProcessor):
    """A processor that only sets some scores to ``filter_value`` (most warpers).

    Subclasses implement ``removal_mask``; the out-of-place and in-place forms then share it.
    """

    filter_value: float = NEG_INF

    def removal_mask(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> Optional[torch.BoolTensor]:
        """Where to put ``filter_value`` (broadcastable to scores), or None to change nothing this step."""
        raise NotImplementedError

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        mask = self.removal_mask(input_ids, scores)
        return scores if mask is None else scores.masked_fill(mask, self.filter_value)

    def apply_(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        mask = self.removal_mask(input_ids, scores)
        return scores if mask is None else scores.masked_fill_(mask, self.filter_value)


def ban_tokens_(scores: torch.FloatTensor, token_ids: torch.LongTensor, banned: torch.BoolTensor) -> torch.FloatTensor:
    """Set ``scores[row, token_ids[row, j]]`` to -inf wherever ``banned[row, j]``, in place.

    ``token_ids`` and ``banned`` are (batch, n). Ids outside the vocabulary (the embedding can be larger
    than the LM head) are skipped: the model cannot produce them anyway.
    """
    vocab_size = scores.shape[-1]
    banned = banned & (token_ids < vocab_size)
    values = torch.full(token_ids.shape, POS_INF, dtype=scores.dtype, device=scores.device)
    values.masked_fill_(banned, NEG_INF)
    return scores.scatter_reduce_(1, token_ids.clamp(0, vocab_size - 1), values, reduce="amin")


def penalize_tokens_(scores: torch.FloatTensor, token_ids: torch.LongTensor, counted: Optional[torch.BoolTensor],
                     penalty: float) -> torch.FloatTensor:
    """The repetition-penalty update, in place: each counted token once, however often it appears.

    A score below zero is multiplied by ``penalty``, any other divided by it, as in the CTRL paper and
    transformers. With ``penalty >= 1`` the new score is never above the old one, so ``amin`` keeps
    the penalised value over any uncounted duplicate (which writes +inf); below 1 it is the reverse.
    """
    index = token_ids.clamp(0, scores.shape[-1] - 1)
    inside = index == token_ids  # an id the clamp moved is outside the vocabulary
    counted = inside if counted is None else counted & inside
    seen = scores.gather(1, index)
    penalized = torch.where(seen < 0, seen * penalty, seen / penalty)
    lowers = penalty >= 1.0
    values = torch.where(counted, penalized, POS_INF if lowers else NEG_INF)
    return scores.scatter_reduce_(1, index, values, reduce="amin" if lowers else "amax")
