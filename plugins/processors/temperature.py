"""Temperature: divide the logits by ``temperature`` to sharpen (< 1) or flatten (> 1) the distribution."""

from __future__ import annotations

import torch

from genplug import hookimpl

from . import enabling
from .chaining import ChainableProcessor, in_place_capable
from .validation import fail, is_number


@in_place_capable
class TemperatureLogitsWarper(ChainableProcessor):
    """Scale the logits by ``1 / temperature``; order-preserving, so greedy decoding can skip it."""

    history_use = "none"  # see genplug.processing.LogitsProcessor.history_use

    argmax_invariant = True

    def __init__(self, temperature: float):
        if not is_number(temperature) or not temperature > 0 or temperature == float("inf"):
            hint = (" For greedy decoding set do_sample=False instead." if is_number(temperature) and temperature == 0
                    else "")
            fail("temperature", temperature,
                 "is not a finite number > 0: temperature divides the logits before sampling." + hint,
                 "use a positive float, or 1.0 to leave the logits unchanged")
        self.temperature = float(temperature)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return scores / self.temperature

    def apply_(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return scores.div_(self.temperature)


def build(config, context):
    temperature = getattr(config, "temperature", None)
    if not enabling.sampling(config) or temperature is None or temperature == 1.0:
        return None
    return TemperatureLogitsWarper(temperature)


@hookimpl
def genplug_register_logits_processors(register):
    register("temperature", build, stage="temperature", fields=("temperature", "do_sample"),
             description="divides the logits by temperature (sampling only)")
