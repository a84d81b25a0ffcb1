"""Renormalisation: log-softmax the final scores (always the last processor)."""

from __future__ import annotations

from genplug import hookimpl

from .chaining import ChainableProcessor, in_place_capable


@in_place_capable
class LogitNormalization(ChainableProcessor):
    """Turn the scores into log-probabilities again after the other processors changed them.

    Beam search compares hypotheses by summed log-probabilities, which processors may have denormalised.
    Order-preserving, so argmax-invariant.
    """

    argmax_invariant = True
    history_use = "none"  # see genplug.processing.LogitsProcessor.history_use

    def __call__(self, input_ids, scores):
        return scores.log_softmax(dim=-1)

    apply_ = __call__  # log_softmax makes a new tensor anyway


def build(config, context):
    return LogitNormalization() if getattr(config, "renormalize_logits", None) is True else None


@hookimpl
def genplug_register_logits_processors(register):
    register("renormalize_logits", build, stage="normalize", fields=("renormalize_logits",),
             description="log-softmaxes the scores after every other processor")
