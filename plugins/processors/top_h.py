"""Top-H: keep likely tokens until their entropy reaches a share of the distribution's entropy."""

from __future__ import annotations

import torch

from genplug import hookimpl

from . import enabling
from .chaining import in_place_capable
from .masking import NEG_INF, MaskingProcessor
from .validation import number_in

CANDIDATES = 100  # transformers' cap: the entropy budget is computed over the 100 most likely tokens


@in_place_capable
class TopHLogitsWarper(MaskingProcessor):
    """Top-H decoding (arXiv 2509.02510), as transformers implements it; keeps the maximum.

    Over the ``CANDIDATES`` most likely tokens (renormalised), tokens are added in order of probability
    while their cumulative entropy ``sum(-p log p)`` stays within ``top_h`` times the candidates' entropy.
    """

    history_use = "none"  # see genplug.processing.LogitsProcessor.history_use

    argmax_invariant = True

    def __init__(self, top_h: float, filter_value: float = NEG_INF):
        self.top_h = number_in("top_h", top_h, 0.0, 1.0, low_open=True,
                               meaning="the share of the distribution's entropy to keep",
                               fix="use a value in (0, 1], or leave it unset")
        self.top_n = CANDIDATES
        self.filter_value = filter_value

    def removal_mask(self, input_ids, scores):
        top_scores, top_ids = torch.topk(scores, min(self.top_n, scores.shape[-1]), dim=-1)
        log_probs = top_scores - top_scores.logsumexp(dim=-1, keepdim=True)
        probs = torch.softmax(log_probs, dim=-1)
        entropy = -(log_probs.clamp(min=torch.finfo(log_probs.dtype).min) * probs).sum(-1, keepdim=True)
        cumulative = torch.cumsum(-probs * torch.log(probs), dim=-1)
        selected = cumulative <= entropy * self.top_h
        selected[:, 0] = True
        keep = torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, top_ids, selected)
        return ~keep


def build(config, context):
    top_h = getattr(config, "top_h", None)
    if not enabling.sampling(config) or top_h is None:
        return None
    return TopHLogitsWarper(top_h)


@hookimpl
def genplug_register_logits_processors(register):
    register("top_h", build, stage="truncation", after=enabling.after(enabling.TRUNCATION_ORDER, "top_h"),
             fields=("top_h", "do_sample"),
             description="keeps likely tokens within an entropy budget of top_h (sampling only)")
