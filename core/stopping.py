"""Stopping criteria: the base class and the list that ORs them into one per-row flag.

A criterion answers, for every row, "is this sequence finished?" as a bool tensor of shape (batch,)
with no host synchronisation; the loop decides when to look at the flags on the host.
"""

from __future__ import annotations

from typing import Iterable, Optional

import torch


class StoppingCriteria:
    """Base class of stopping criteria (transformers' name and signature).

    ``__call__(input_ids, scores, **kwargs) -> torch.BoolTensor`` of shape (batch,). A criterion that
    stops on end-of-sequence tokens has an ``eos_token_id`` attribute: its presence tells the loop to
    pad finished rows with ``pad_token_id``, as in transformers.
    """

    compile_safe: bool = True

    def __call__(self, input_ids: torch.LongTensor, scores: Optional[torch.FloatTensor], **kwargs) -> torch.BoolTensor:
        raise NotImplementedError(f"{type(self).__name__} must implement __call__(input_ids, scores)")


class StoppingCriteriaList(list):
    """An ordered list of criteria; calling it ORs their answers row by row."""

    def __init__(self, criteria: Iterable[StoppingCriteria] = ()):
        super().__init__(criteria)

    def __call__(self, input_ids: torch.LongTensor, scores: Optional[torch.FloatTensor], **kwargs) -> torch.BoolTensor:
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for criterion in self:
            done = done | criterion(input_ids, scores, **kwargs)
        return done

    @property
    def max_length(self) -> Optional[int]:
        for criterion in self:
            if hasattr(criterion, "max_length"):
                return criterion.max_length
        return None

    def per_step(self) -> "PerStepCriteria":
        """The criteria a step loop must call each step: those that stop only at max_length are left
        out (the loop stops there itself) after their up-front context warning."""
        kept = []
        for criterion in self:
            if getattr(criterion, "stops_only_at_max_length", False):
                warn = getattr(criterion, "warn_if_past_context", None)
                if warn is not None:
                    warn(0)
            else:
                kept.append(criterion)
        return PerStepCriteria(kept)

    @property
    def has_eos(self) -> bool:
        return any(hasattr(c, "eos_token_id") for c in self)

    @property
    def eos_token_ids(self) -> Optional[torch.Tensor]:
        """The EOS ids (1-D) of the first criterion that stops on them, or None."""
        for criterion in self:
            ids = getattr(criterion, "eos_token_id", None)
            if ids is not None:
                return torch.as_tensor(ids).flatten()
        return None


class PerStepCriteria(StoppingCriteriaList):
    """:meth:`StoppingCriteriaList.per_step`'s list, called once a step by loops that only read the flags it
    returns: the first criterion's answer starts the OR, so a step allocates no all-False tensor and runs no
    OR with it (two of the ~22 tensor operations of a greedy step around the forward)."""

    def __call__(self, input_ids: torch.LongTensor, scores: Optional[torch.FloatTensor], **kwargs) -> torch.BoolTensor:
        if not self:
            return super().__call__(input_ids, scores, **kwargs)
        done = self[0](input_ids, scores, **kwargs)
        for criterion in self[1:]:
            done = done | criterion(input_ids, scores, **kwargs)
        return done
