"""Typical sampling: keep the tokens whose surprise is closest to the distribution's entropy."""

from __future__ import annotations

import torch

from genplug import hookimpl

from . import enabling
from .chaining import in_place_capable
from .masking import NEG_INF, MaskingProcessor
from .validation import min_tokens_to_keep as check_min_tokens, number_in


@in_place_capable
class TypicalLogitsWarper(MaskingProcessor):
    """Locally typical sampling (Meister et al., 2022).

    Tokens are ranked by ``|-log p - H|`` (how far their surprise is from the entropy H) and the
    closest ones are kept until their mass reaches ``mass``. Not argmax-invariant: the most likely
    token can be far from typical and be removed.
    """

    history_use = "none"  # see genplug.processing.LogitsProcessor.history_use

    argmax_invariant = False

    def __init__(self, mass: float = 0.9, filter_value: float = NEG_INF, min_tokens_to_keep: int = 1):
        self.mass = number_in("typical_p", mass, 0.0, 1.0, low_open=True, high_open=True,
                              meaning="the mass of locally typical tokens to keep",
                              fix="use a value in (0, 1), or 1.0 in the config to disable it")
        self.min_tokens_to_keep = check_min_tokens(min_tokens_to_keep)
        self.filter_value = filter_value

    def removal_mask(self, input_ids, scores):
        log_probs = torch.log_softmax(scores, dim=-1)
        entropy = -(log_probs * log_probs.exp()).nansum(-1, keepdim=True)
        distance = (-log_probs - entropy).abs()
        sorted_distance, order = torch.sort(distance, dim=-1)
        mass_so_far = scores.gather(-1, order).softmax(dim=-1).cumsum(dim=-1)
        last_kept = (mass_so_far < self.mass).sum(-1, keepdim=True).clamp(max=scores.shape[-1] - 1)
        cutoff = sorted_distance.gather(-1, last_kept)
        if self.min_tokens_to_keep > 1:
            k = min(self.min_tokens_to_keep, scores.shape[-1])
            cutoff = torch.maximum(cutoff, sorted_distance[:, k - 1 : k])
        return distance > cutoff


def build(config, context):
    typical_p = getattr(config, "typical_p", None)
    if not enabling.sampling(config) or typical_p is None or not typical_p < 1.0:
        return None
    return TypicalLogitsWarper(typical_p, min_tokens_to_keep=enabling.warper_min_tokens_to_keep(config, context))


@hookimpl
def genplug_register_logits_processors(register):
    register("typical_p", build, stage="truncation",
             after=enabling.after(enabling.TRUNCATION_ORDER, "typical_p"),
             fields=("typical_p", "do_sample", "num_beams"),
             description="keeps the locally typical tokens up to mass typical_p (sampling only)")
