"""Top-k: keep the k highest-scoring tokens (and any token tied with the k-th)."""

from __future__ import annotations

import torch

from genplug import hookimpl
from genplug.vocab_ops import top_values

from . import enabling
from .chaining import in_place_capable
from .masking import NEG_INF, MaskingProcessor
from .truncation import TruncationGroup, mergeable_after_top_k
from .validation import min_tokens_to_keep as check_min_tokens, positive_int


@in_place_capable
class TopKLogitsWarper(MaskingProcessor):
    """Remove every token scoring below the k-th highest score. Keeps the maximum: argmax-invariant."""

    history_use = "none"  # see genplug.processing.LogitsProcessor.history_use

    argmax_invariant = True

    def __init__(self, top_k: int, filter_value: float = NEG_INF, min_tokens_to_keep: int = 1):
        top_k = positive_int("top_k", top_k, meaning="the number of most likely tokens to keep",
                             fix="use a positive int, or top_k=0 in the config to disable top-k")
        self.min_tokens_to_keep = check_min_tokens(min_tokens_to_keep)
        self.top_k = max(top_k, self.min_tokens_to_keep)
        self.filter_value = filter_value

    def kth_scores(self, scores: torch.FloatTensor) -> torch.FloatTensor:
        """The k highest scores of each row, in descending order: (batch, k)."""
        return top_values(scores, min(self.top_k, scores.shape[-1]))

    def removal_mask(self, input_ids, scores):
        return scores < self.kth_scores(scores)[:, -1:]

    def merge(self, following):
        if self.filter_value == NEG_INF and mergeable_after_top_k(following):
            return TruncationGroup(self, [following])
        return None


def build(config, context):
    top_k = getattr(config, "top_k", None)
    if not enabling.sampling(config) or top_k is None or top_k == 0:
        return None
    return TopKLogitsWarper(top_k, min_tokens_to_keep=enabling.warper_min_tokens_to_keep(config, context))


@hookimpl
def genplug_register_logits_processors(register):
    register("top_k", build, stage="truncation", after=enabling.after(enabling.TRUNCATION_ORDER, "top_k"),
             fields=("top_k", "do_sample", "num_beams"),
             description="keeps the top_k most likely tokens (sampling only; 50 unless set)")
