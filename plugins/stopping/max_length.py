"""Stop every row once the sequence (prompt included) is ``max_length`` tokens long."""

from __future__ import annotations

import warnings
from typing import Optional

import torch

from genplug import hookimpl
from genplug.stopping import StoppingCriteria


class MaxLengthCriteria(StoppingCriteria):
    """Stop when ``input_ids.shape[1] >= max_length`` (for decoder-only models the prompt counts).

    ``max_position_embeddings`` is the model's context size, if known: going past it still
    generates, but warns once, since many models degrade or fail beyond it.
    The answer depends only on the shape, so this costs one ``torch.full`` per step.
    """

    # The step loops stop at max_length themselves, so they skip calling this every step (they call
    # warn_if_past_context() once instead).
    stops_only_at_max_length = True

    def __init__(self, max_length: int, max_position_embeddings: Optional[int] = None):
        self.max_length = max_length
        self.max_position_embeddings = max_position_embeddings
        self._warned = False

    def __call__(self, input_ids: torch.LongTensor, scores: Optional[torch.FloatTensor], **kwargs) -> torch.BoolTensor:
        length = input_ids.shape[1]
        done = length >= self.max_length
        if (not done and not self._warned and self.max_position_embeddings is not None
                and length > self.max_position_embeddings):
            self._warned = True
            warnings.warn(
                f"the sequence is now {length} tokens long, past the model's max_position_embeddings="
                f"{self.max_position_embeddings}; the model may produce poor text or fail. Lower "
                "max_length / max_new_tokens to stay within it",
                UserWarning,
                stacklevel=2,
            )
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)

    def warn_if_past_context(self, prompt_length: int) -> None:
        """Warn once, up front, when generating up to max_length will pass the model's context size."""
        if self.max_position_embeddings is not None and self.max_length - 1 > self.max_position_embeddings:
            self._warned = True
            warnings.warn(
                f"max_length={self.max_length} goes past the model's max_position_embeddings="
                f"{self.max_position_embeddings}; the model may produce poor text or fail past it. Lower "
                "max_length / max_new_tokens to stay within it",
                UserWarning,
                stacklevel=3,
            )


def _max_position_embeddings(model) -> Optional[int]:
    """The model's context size: a genplug ModelAdapter knows it; a bare model keeps it in its config."""
    if model is None:
        return None
    value = getattr(model, "max_position_embeddings", None)
    if value is None:
        value = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return value if isinstance(value, int) else None


def build_max_length(config, context) -> Optional[MaxLengthCriteria]:
    if config.max_length is None:
        return None
    return MaxLengthCriteria(config.max_length, _max_position_embeddings(context.model))


@hookimpl
def genplug_register_stopping_criteria(register):
    register(
        "max_length",
        build_max_length,
        order=10,
        fields=("max_length", "max_new_tokens"),
        description="stop when the sequence reaches max_length tokens (max_new_tokens sets it from the prompt)",
    )
