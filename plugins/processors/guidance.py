"""Classifier-free guidance (Sanchez et al., 2023), from ``guidance_scale`` and ``negative_prompt_ids``.

Each step the model also runs on an "unconditional" context -- the negative prompt, or by default only
the last prompt token -- with its own cache, and the scores are pushed away from what that context
predicts: ``scale * (log p(x | prompt) - log p(x | negative)) + log p(x | negative)``. A scale above 1
strengthens the prompt's influence. Like transformers' processor, the unconditional rows follow the
batch as given (they are not reordered with beams) and returned scores are log-probabilities.
"""

from __future__ import annotations

from typing import Optional

import torch

from genplug import hookimpl
from genplug.models import ModelAdapter, returned_cache
from genplug.processing import LogitsProcessor


class UnbatchedClassifierFreeGuidanceLogitsProcessor(LogitsProcessor):
    """``guidance_scale * (scores - unconditional) + unconditional`` over log-softmaxed scores.

    ``model`` (or its genplug adapter) is run once per step on the unconditional context, which grows
    by the newest token of each row; with ``use_cache`` only that token is fed after the first pass.
    """

    compile_safe = False  # runs a second forward with a cache of its own, held in Python
    history_use = "sequence"  # see genplug.processing.LogitsProcessor.history_use

    def __init__(self, guidance_scale: float, model, unconditional_ids: Optional[torch.LongTensor] = None,
                 unconditional_attention_mask: Optional[torch.LongTensor] = None, use_cache: bool = True):
        self.guidance_scale = guidance_scale
        self.adapter = model if isinstance(model, ModelAdapter) else ModelAdapter(model)
        self.unconditional_ids = unconditional_ids
        self.unconditional_mask = unconditional_attention_mask
        self.use_cache = use_cache
        self.cache = None
        self.first_pass = True

    def unconditional_logits(self, input_ids: torch.LongTensor) -> torch.FloatTensor:
        """The model's logits on the unconditional context, extended by each row's newest token."""
        if self.first_pass:
            if self.unconditional_ids is None:
                self.unconditional_ids = input_ids[:, -1:]
            if self.unconditional_mask is None:
                self.unconditional_mask = torch.ones_like(self.unconditional_ids, dtype=torch.long)
            feed = self.unconditional_ids
            self.first_pass = False
        else:
            newest = input_ids[:, -1:]
            self.unconditional_mask = torch.cat((self.unconditional_mask, torch.ones_like(newest, dtype=torch.long)), 1)
            feed = newest if self.use_cache else torch.cat((self.unconditional_ids, newest), dim=1)
            self.unconditional_ids = feed
        out = self.adapter.forward(input_ids=feed, attention_mask=self.unconditional_mask, use_cache=self.use_cache,
                                   past_key_values=self.cache)
        self.cache = returned_cache(out) if self.use_cache else None
        return out.logits

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = torch.log_softmax(scores, dim=-1)
        if self.guidance_scale == 1:
            return scores
        unconditional = torch.log_softmax(self.unconditional_logits(input_ids)[:, -1], dim=-1)
        return self.guidance_scale * (scores - unconditional) + unconditional


def build(config, context):
    scale = getattr(config, "guidance_scale", None)
    if scale is None or scale == 1:
        return None
    return UnbatchedClassifierFreeGuidanceLogitsProcessor(
        scale, context.model, context.negative_prompt_ids, context.negative_prompt_attention_mask,
        use_cache=bool(getattr(config, "use_cache", True)))


@hookimpl
def genplug_register_logits_processors(register):
    register("guidance_scale", build, stage="guidance", fields=("guidance_scale", "use_cache"),
             description="classifier-free guidance against the negative prompt (or the last prompt token)")
