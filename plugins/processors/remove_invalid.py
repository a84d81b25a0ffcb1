"""Invalid-value removal: replace nan and +-inf scores so that sampling cannot fail."""

from __future__ import annotations

import torch

from genplug import hookimpl

from . import enabling
from .chaining import ChainableProcessor, in_place_capable


@in_place_capable
class InfNanRemoveLogitsProcessor(ChainableProcessor):
    """nan becomes 0, +inf the largest finite value and -inf the smallest (of the scores' dtype)."""

    history_use = "none"  # see genplug.processing.LogitsProcessor.history_use

    def __call__(self, input_ids, scores):
        return torch.nan_to_num(scores)

    def apply_(self, input_ids, scores):
        return scores.nan_to_num_()


def build(config, context):
    return InfNanRemoveLogitsProcessor() if getattr(config, "remove_invalid_values", None) is True else None


@hookimpl
def genplug_register_logits_processors(register):
    register("remove_invalid_values", build, stage="constraint",
             after=enabling.after(enabling.CONSTRAINT_ORDER, "remove_invalid_values"),
             fields=("remove_invalid_values",), description="replaces nan and inf scores by finite values")
