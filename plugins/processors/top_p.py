"""Top-p (nucleus): keep the smallest set of most likely tokens whose probability mass reaches top_p."""

from __future__ import annotations

import torch

from genplug import hookimpl

from . import enabling
from .chaining import in_place_capable
from .masking import NEG_INF, MaskingProcessor
from .truncation import nucleus_threshold, sorted_rule
from .validation import min_tokens_to_keep as check_min_tokens, number_in


@sorted_rule
@in_place_capable
class TopPLogitsWarper(MaskingProcessor):
    """Remove the least likely tokens outside the top_p probability mass. Keeps the maximum.

    ``top_p=1.0`` keeps every token (transformers would still drop tokens whose float32 probability
    underflows to exactly 0).
    """

    history_use = "none"  # see genplug.processing.LogitsProcessor.history_use

    argmax_invariant = True
    needs_total_mass = True  # its threshold depends on tokens tied with the last top-k candidate

    def __init__(self, top_p: float, filter_value: float = NEG_INF, min_tokens_to_keep: int = 1):
        self.top_p = number_in("top_p", top_p, 0.0, 1.0, meaning="the probability mass to keep",
                               fix="use a value in (0, 1], or 1.0 to disable it")
        self.min_tokens_to_keep = check_min_tokens(min_tokens_to_keep)
        self.filter_value = filter_value

    def keep_threshold(self, values, threshold, extra):
        if self.top_p >= 1.0:
            return threshold
        return nucleus_threshold(values, threshold, extra, self.top_p, self.min_tokens_to_keep)

    def removal_mask(self, input_ids, scores):
        if self.top_p >= 1.0:
            return None
        values = torch.sort(scores, dim=-1, descending=True).values
        return scores < self.keep_threshold(values, None, None)


def build(config, context):
    top_p = getattr(config, "top_p", None)
    if not enabling.sampling(config) or top_p is None or not top_p < 1.0:
        return None
    return TopPLogitsWarper(top_p, min_tokens_to_keep=enabling.warper_min_tokens_to_keep(config, context))


@hookimpl
def genplug_register_logits_processors(register):
    register("top_p", build, stage="truncation", after=enabling.after(enabling.TRUNCATION_ORDER, "top_p"),
             fields=("top_p", "do_sample", "num_beams"),
             description="keeps the smallest set of likely tokens with probability mass >= top_p (sampling only)")
