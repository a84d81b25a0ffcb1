"""Min-p: keep the tokens at least min_p times as likely as the most likely token."""

from __future__ import annotations

import torch

from genplug import hookimpl

from . import enabling
from .chaining import in_place_capable
from .masking import NEG_INF, MaskingProcessor
from .truncation import min_p_threshold, relative_probabilities, sorted_rule
from .validation import min_tokens_to_keep as check_min_tokens, number_in


@sorted_rule
@in_place_capable
class MinPLogitsWarper(MaskingProcessor):
    """Remove tokens with probability below ``min_p * max probability``. Keeps the maximum.

    The comparison is made on ``exp(score - max score)``, which is the probability ratio without the
    softmax's normalising sum (transformers divides both sides by it).
    """

    history_use = "none"  # see genplug.processing.LogitsProcessor.history_use

    argmax_invariant = True
    needs_total_mass = False

    def __init__(self, min_p: float, filter_value: float = NEG_INF, min_tokens_to_keep: int = 1):
        self.min_p = number_in("min_p", min_p, 0.0, 1.0,
                               meaning="the minimum probability relative to the most likely token",
                               fix="use a value in [0, 1] (0.05 to 0.1 is typical), or leave it unset")
        self.min_tokens_to_keep = check_min_tokens(min_tokens_to_keep)
        self.filter_value = filter_value

    def keep_threshold(self, values, threshold, extra):
        return min_p_threshold(values, threshold, self.min_p, self.min_tokens_to_keep)

    def removal_mask(self, input_ids, scores):
        remove = relative_probabilities(scores, scores.amax(-1, keepdim=True)) < self.min_p
        if self.min_tokens_to_keep > 1:  # with one, the maximum always passes (its ratio is 1)
            k = min(self.min_tokens_to_keep, scores.shape[-1])
            remove &= scores < torch.topk(scores, k, dim=-1).values[:, -1:]
        return remove


def build(config, context):
    min_p = getattr(config, "min_p", None)
    if not enabling.sampling(config) or min_p is None:
        return None
    return MinPLogitsWarper(min_p, min_tokens_to_keep=enabling.warper_min_tokens_to_keep(config, context))


@hookimpl
def genplug_register_logits_processors(register):
    register("min_p", build, stage="truncation", after=enabling.after(enabling.TRUNCATION_ORDER, "min_p"),
             fields=("min_p", "do_sample", "num_beams"),
             description="keeps tokens at least min_p times as likely as the top token (sampling only)")
