"""Running neighbouring processors on one copy of the scores.

A processor's ``__call__`` never changes the tensor it is given: the decoding loop may keep the raw
logits it passed in (transformers' contract). Copying the whole (batch, vocab) score matrix in every
processor is what makes a chain of cheap processors slow, though, so genplug's processors also have an
in-place form, ``apply_``. When they sit next to each other in a LogitsProcessorList, ``fuse`` turns
them into one ProcessorChain that copies the scores once and lets each processor write into the copy.
The result is bit-identical to calling them one by one.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Set, Type

import torch

from genplug.processing import LogitsProcessor

_IN_PLACE_TYPES: Set[type] = set()


def in_place_capable(cls: Type["ChainableProcessor"]) -> Type["ChainableProcessor"]:
    """Class decorator: ``cls.apply_`` gives exactly what ``cls.__call__`` gives, so it may be chained.

    Only the decorated class itself is trusted, not its subclasses: a subclass that overrides
    ``__call__`` alone would otherwise be chained with its parent's in-place code.
    """
    _IN_PLACE_TYPES.add(cls)
    return cls


def runs_in_place(processor: Callable) -> bool:
    return type(processor) in _IN_PLACE_TYPES


class ChainableProcessor(LogitsProcessor):
    """A processor that can also work in place on scores its caller owns."""

    def apply_(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """Process ``scores``, writing into it where that is cheaper; return the result.

        The caller owns ``scores`` and gives up its old values. The result is ``scores`` itself or a new
        tensor, and the caller owns it too.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement apply_(input_ids, scores)")

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return self.apply_(input_ids, scores.clone())

    def merge(self, following: Callable) -> Optional["ChainableProcessor"]:
        """A single processor equal to ``self`` then ``following`` that does less work, or None.

        Used inside a chain, e.g. top-k followed by top-p shares one top-k (see truncation.py).
        """
        return None

    def fuse(self, following: Callable) -> Optional[LogitsProcessor]:
        if not (runs_in_place(self) and runs_in_place(following)):
            return None
        return ProcessorChain([self]).fuse(following)


class ProcessorChain(ChainableProcessor):
    """Several in-place processors run on one copy of the scores (built by ``fuse``)."""

    def __init__(self, steps: List[ChainableProcessor]):
        self.steps = list(steps)
        self.compile_safe = all(step.compile_safe for step in self.steps)
        self.argmax_invariant = all(step.argmax_invariant for step in self.steps)

    def apply_(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for step in self.steps:
            scores = step.apply_(input_ids, scores)
        return scores

    def fuse(self, following: Callable) -> Optional[LogitsProcessor]:
        if not runs_in_place(following):
            return None
        merged = self.steps[-1].merge(following)
        if merged is not None:
            return ProcessorChain(self.steps[:-1] + [merged])
        return ProcessorChain(self.steps + [following])

    def reorder(self, beam_idx: torch.LongTensor) -> None:
        for step in self.steps:
            step.reorder(beam_idx)

    def __repr__(self) -> str:
        return f"ProcessorChain({', '.join(type(step).__name__ for step in self.steps)})"


_IN_PLACE_TYPES.add(ProcessorChain)
