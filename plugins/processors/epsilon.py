"""Epsilon sampling: drop tokens whose probability is below a fixed cutoff."""

from __future__ import annotations

import torch

from genplug import hookimpl

from . import enabling
from .chaining import in_place_capable
from .masking import NEG_INF, MaskingProcessor
from .validation import min_tokens_to_keep as check_min_tokens, number_in


def kth_highest(scores: torch.FloatTensor, k: int) -> torch.FloatTensor:
    """(batch, 1): the k-th highest score per row (the maximum when k is 1, without a top-k)."""
    if k <= 1:
        return scores.amax(-1, keepdim=True)
    return torch.topk(scores, min(k, scores.shape[-1]), dim=-1).values[:, -1:]


@in_place_capable
class EpsilonLogitsWarper(MaskingProcessor):
    """Truncation sampling with a fixed cutoff (Hewitt et al., 2022); keeps the maximum."""

    history_use = "none"  # see genplug.processing.LogitsProcessor.history_use

    argmax_invariant = True

    def __init__(self, epsilon: float, filter_value: float = NEG_INF, min_tokens_to_keep: int = 1):
        self.epsilon = number_in("epsilon_cutoff", epsilon, 0.0, 1.0, low_open=True, high_open=True,
                                 meaning="the probability below which tokens are dropped",
                                 fix="use a value in (0, 1) such as 3e-4, or 0.0 in the config to disable it")
        self.min_tokens_to_keep = check_min_tokens(min_tokens_to_keep)
        self.filter_value = filter_value

    def removal_mask(self, input_ids, scores):
        too_unlikely = scores.softmax(dim=-1) < self.epsilon
        return too_unlikely & (scores < kth_highest(scores, self.min_tokens_to_keep))


def build(config, context):
    epsilon = getattr(config, "epsilon_cutoff", None)
    if not enabling.sampling(config) or epsilon is None or not 0.0 < epsilon < 1.0:
        return None
    return EpsilonLogitsWarper(epsilon, min_tokens_to_keep=enabling.warper_min_tokens_to_keep(config, context))


@hookimpl
def genplug_register_logits_processors(register):
    register("epsilon_cutoff", build, stage="truncation",
             after=enabling.after(enabling.TRUNCATION_ORDER, "epsilon_cutoff"),
             fields=("epsilon_cutoff", "do_sample", "num_beams"),
             description="drops tokens with probability below epsilon_cutoff (sampling only)")
