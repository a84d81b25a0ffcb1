"""Repetition penalties: make tokens already in the sequence (or in the encoder input) less (more) likely."""

from __future__ import annotations

import warnings
from typing import Optional, Union

import torch

from genplug import hookimpl

from . import enabling
from .chaining import ChainableProcessor, in_place_capable
from .masking import penalize_tokens_
from .validation import fail, is_int, number_in


def _penalty(field: str, value) -> float:
    return number_in(field, value, 0.0, float("inf"), low_open=True, high_open=True,
                     meaning="the factor applied to the scores of repeated tokens",
                     fix="use a positive float (1.2 is typical), or 1.0 to disable it")


@in_place_capable
class RepetitionPenaltyLogitsProcessor(ChainableProcessor):
    """Penalise every token present in ``input_ids`` once (CTRL, Keskar et al., 2019).

    Negative scores are multiplied by ``penalty`` and others divided by it, so ``penalty > 1``
    discourages repeats and ``penalty < 1`` encourages them. The prompt counts, except its first
    ``prompt_ignore_length`` tokens (an int, or one count per row: generate() passes each row's left
    padding).
    """

    history_use = "set"  # see genplug.processing.LogitsProcessor.history_use

    def __init__(self, penalty: float, prompt_ignore_length: Optional[Union[int, torch.Tensor]] = None):
        self.penalty = _penalty("repetition_penalty", penalty)
        if prompt_ignore_length is not None:
            if isinstance(prompt_ignore_length, torch.Tensor):
                if prompt_ignore_length.dim() != 1:
                    fail("prompt_ignore_length", prompt_ignore_length, "is not a 1-D tensor",
                         "pass an int, or one count per batch row")
            elif not is_int(prompt_ignore_length) or prompt_ignore_length < 0:
                fail("prompt_ignore_length", prompt_ignore_length, "is not an int >= 0",
                     "pass the number of leading prompt tokens to leave unpenalised")
        self.prompt_ignore_length = prompt_ignore_length

    def apply_(self, input_ids, scores):
        if input_ids.dim() == 1:
            input_ids = input_ids[:, None]
        counted = None
        ignore = self.prompt_ignore_length
        if isinstance(ignore, torch.Tensor):
            if ignore.shape[0] != input_ids.shape[0]:
                fail("prompt_ignore_length", tuple(ignore.shape),
                     f"has {ignore.shape[0]} rows but input_ids has {input_ids.shape[0]}",
                     "pass one count per batch row")
            if ignore.device != input_ids.device:
                self.prompt_ignore_length = ignore = ignore.to(input_ids.device)  # once
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)
            counted = positions[None, :] >= ignore[:, None]
        elif ignore:
            input_ids = input_ids[:, ignore:]
        return penalize_tokens_(scores, input_ids, counted, self.penalty)


@in_place_capable
class EncoderRepetitionPenaltyLogitsProcessor(ChainableProcessor):
    """The inverse penalty on tokens of the encoder input (the prompt for decoder-only models).

    ``penalty > 1`` makes the input's tokens *more* likely, to keep summaries grounded in the source.
    """

    history_use = "none"  # see genplug.processing.LogitsProcessor.history_use

    def __init__(self, penalty: float, encoder_input_ids: torch.LongTensor):
        self.penalty = 1 / _penalty("encoder_repetition_penalty", penalty)
        self.encoder_input_ids = encoder_input_ids

    def apply_(self, input_ids, scores):
        encoder_ids = self.encoder_input_ids
        if encoder_ids.device != scores.device:
            self.encoder_input_ids = encoder_ids = encoder_ids.to(scores.device)  # once
        if scores.shape[0] > encoder_ids.shape[0]:  # beams / num_return_sequences share a prompt
            encoder_ids = encoder_ids.repeat_interleave(scores.shape[0] // encoder_ids.shape[0], dim=0)
        return penalize_tokens_(scores, encoder_ids, None, self.penalty)


def build_repetition_penalty(config, context):
    penalty = getattr(config, "repetition_penalty", None)
    if penalty is None or penalty == 1.0:
        return None
    if not context.is_encoder_decoder and context.prompt_length == 0:
        warnings.warn(
            "Passing `repetition_penalty` with `inputs_embeds` and without `input_ids` to `generate` will apply "
            "the penalty only to newly generated tokens, not to the prompt.",
            UserWarning,
            stacklevel=2,
        )
    return RepetitionPenaltyLogitsProcessor(penalty, prompt_ignore_length=enabling.prompt_padding(context))


def build_encoder_repetition_penalty(config, context):
    penalty = getattr(config, "encoder_repetition_penalty", None)
    if penalty is None or penalty == 1.0:
        return None
    encoder_ids = enabling.usable_encoder_ids(context, "encoder_repetition_penalty")
    if encoder_ids is None:
        return None
    return EncoderRepetitionPenaltyLogitsProcessor(penalty, encoder_ids)


@hookimpl
def genplug_register_logits_processors(register):
    register("encoder_repetition_penalty", build_encoder_repetition_penalty, stage="penalty",
             after=enabling.after(enabling.PENALTY_ORDER, "encoder_repetition_penalty"),
             fields=("encoder_repetition_penalty",),
             description="favours (> 1) or penalises (< 1) tokens of the encoder input / prompt")
    register("repetition_penalty", build_repetition_penalty, stage="penalty",
             after=enabling.after(enabling.PENALTY_ORDER, "repetition_penalty"),
             fields=("repetition_penalty",),
             description="penalises (> 1) or favours (< 1) tokens already in the sequence, prompt included")
