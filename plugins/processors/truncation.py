"""Threshold arithmetic shared by top-p and min-p, and the fused top-k -> top-p / min-p group.

Top-k, top-p and min-p each keep the tokens scoring at least some per-row threshold. Top-p and min-p
can find their threshold from the row's scores sorted in descending order, and after a top-k only the
k highest scores are still finite: so when they follow a top-k in a LogitsProcessorList, one
``torch.topk`` serves all three instead of a full sort of the vocabulary per warper (TruncationGroup).

For the fused group to return exactly what the warpers return one by one, the arithmetic must not
depend on how many -inf entries follow the candidates:

* probabilities are taken relative to the row maximum, ``exp(score - max)``, with no normalising sum;
* top-p adds them as integers (``exp(score - max) * 2**40`` truncated): integer sums do not depend on
  the order or grouping of the additions, and the -inf entries add exact zeros.

Ties are kept together: a token tied with the last kept token is kept too (transformers keeps an
arbitrary subset of a tie at the boundary, depending on its sort).
"""

from __future__ import annotations

import math
from typing import Callable, List, Optional

import torch

from genplug import triton_support
from genplug.vocab_ops import count_true

from .chaining import in_place_capable
from .masking import NEG_INF, MaskingProcessor

MASS_SCALE = 2.0 ** 40  # exact for float32 values in [0, 1]; a 2**20-token vocabulary still sums below 2**63

_SORTED_RULES: set = set()


def sorted_rule(cls):
    """Class decorator for warpers whose ``keep_threshold`` works on descending top-k candidates."""
    _SORTED_RULES.add(cls)
    return cls


def mergeable_after_top_k(processor: Callable) -> bool:
    return type(processor) in _SORTED_RULES and processor.filter_value == NEG_INF


def relative_probabilities(scores: torch.FloatTensor, row_max: torch.FloatTensor) -> torch.FloatTensor:
    """``exp(score - row max)``: each token's probability times the row's normalising sum; 0 for -inf."""
    row_max = torch.nan_to_num(row_max, nan=math.nan, posinf=math.inf, neginf=0.0)  # an all -inf row: zeros, not nan
    return torch.exp(scores - row_max)


def integer_mass(relative: torch.FloatTensor) -> torch.LongTensor:
    return (relative * MASS_SCALE).to(torch.int64)


def nucleus_threshold(values: torch.FloatTensor, threshold: Optional[torch.FloatTensor],
                      extra: Optional[torch.LongTensor], top_p: float, min_keep: int) -> torch.FloatTensor:
    """The top-p threshold over the tokens still kept (scores >= ``threshold``; None: all of them).

    ``values`` are descending scores (the whole row, or top-k candidates); ``extra`` counts further
    tokens tied with the last candidate that are not among ``values`` (None: there are none). A token
    is kept when the mass of the tokens before it is below ``top_p`` of the total: the smallest prefix
    with mass >= top_p, then at least ``min_keep`` tokens. While a CUDA graph is captured this runs as
    one kernel (:mod:`.truncation_kernels`, same arithmetic) instead of ~24 small ones.
    """
    if _kernel_applies(values):
        from . import truncation_kernels  # imports Triton: only where it runs

        return truncation_kernels.nucleus_threshold(values, threshold, extra, top_p, min_keep, MASS_SCALE)
    mass = integer_mass(relative_probabilities(values, values[:, :1]))
    if threshold is not None:
        mass = mass.masked_fill(values < threshold, 0)
    total = mass.sum(-1, keepdim=True)
    if extra is not None:
        total = torch.addcmul(total, extra, mass[:, -1:])  # + extra * mass[:, -1:]
    # mass before < top_p * total  <=>  mass before < ceil(top_p * total), for integer masses.
    # float64 keeps the product exact enough; MPS has no float64, float32 still decides the same
    # way in the fused and the one-by-one paths.
    wide = torch.float32 if total.device.type == "mps" else torch.float64
    limit = torch.ceil(total.to(wide) * top_p).to(torch.int64)
    # the masses before each token never decrease: the tokens kept are a prefix, found by one search
    count = torch.searchsorted(mass.cumsum(-1) - mass, limit)
    count = count.clamp(min=min_keep, max=values.shape[-1])
    found = values.gather(-1, count - 1)
    return found if threshold is None else torch.maximum(threshold, found)


KERNEL_MAX_CANDIDATES = 1024


def _kernel_applies(values: torch.FloatTensor) -> bool:
    """Whether :func:`nucleus_threshold` runs as one Triton kernel: while a CUDA graph is captured
    (eagerly, PyTorch's ops), for at most KERNEL_MAX_CANDIDATES candidates."""
    if values.dim() != 2 or values.shape[-1] > KERNEL_MAX_CANDIDATES:
        return False
    if not triton_support.runs_on(values, (torch.float32,)):
        return False
    return not values.is_cuda or torch.cuda.is_current_stream_capturing()


def min_p_threshold(values: torch.FloatTensor, threshold: Optional[torch.FloatTensor], min_p: float,
                    min_keep: int) -> torch.FloatTensor:
    """The min-p threshold: keep tokens with probability >= min_p * top probability, at least ``min_keep``."""
    relative = relative_probabilities(values, values[:, :1])
    count = (relative >= min_p).sum(-1, keepdim=True)
    count = count.clamp(min=min_keep, max=values.shape[-1])
    found = values.gather(-1, count - 1)
    return found if threshold is None else torch.maximum(threshold, found)


@in_place_capable
class TruncationGroup(MaskingProcessor):
    """A top-k warper and the top-p / min-p warpers right after it, sharing one ``torch.topk``.

    Built by ``TopKLogitsWarper.merge``; bit-identical to running the warpers one after another.
    """

    def __init__(self, top_k_warper, rules: List):
        self.top_k_warper = top_k_warper
        self.rules = list(rules)
        warpers = [top_k_warper, *self.rules]
        self.compile_safe = all(w.compile_safe for w in warpers)
        self.argmax_invariant = all(w.argmax_invariant for w in warpers)

    def removal_mask(self, input_ids, scores):
        values = self.top_k_warper.kth_scores(scores)
        threshold = values[:, -1:]
        extra = None
        if any(rule.needs_total_mass for rule in self.rules):
            extra = count_true(scores >= threshold) - values.shape[-1]
        for rule in self.rules:
            threshold = rule.keep_threshold(values, threshold, extra)
        return scores < threshold

    def merge(self, following):
        if mergeable_after_top_k(following):
            return TruncationGroup(self.top_k_warper, self.rules + [following])
        return None

    def __repr__(self) -> str:
        return f"TruncationGroup({', '.join(type(w).__name__ for w in [self.top_k_warper, *self.rules])})"
