"""Stop a row once its newest token is an end-of-sequence token (``eos_token_id``)."""

from __future__ import annotations

from typing import List, Optional, Union

import torch

from genplug import hookimpl
from genplug.stopping import StoppingCriteria


class EosTokenCriteria(StoppingCriteria):
    """Stop rows whose last ``new_token_length`` tokens hold one of ``eos_token_id``.

    ``eos_token_id`` is an int, a list of ints or a 1-D tensor. Having an ``eos_token_id`` attribute
    is what tells the loop to pad rows after they finish (with ``pad_token_id``), as in transformers.
    """

    def __init__(self, eos_token_id: Union[int, List[int], torch.Tensor]):
        if not isinstance(eos_token_id, torch.Tensor):
            eos_token_id = torch.tensor([eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id))
        self.eos_token_id = eos_token_id.reshape(-1).long()

    def __call__(self, input_ids: torch.LongTensor, scores: Optional[torch.FloatTensor],
                 new_token_length: int = 1, **kwargs) -> torch.BoolTensor:
        if self.eos_token_id.device != input_ids.device:  # moved once, on the first call
            self.eos_token_id = self.eos_token_id.to(input_ids.device)
        return torch.isin(input_ids[:, -new_token_length:], self.eos_token_id).any(dim=-1)


def build_eos(config, context) -> Optional[EosTokenCriteria]:
    # The core resolves eos_token_id (config, then the model's defaults) into context.eos_token_ids.
    if context.eos_token_ids is None:
        return None
    return EosTokenCriteria(context.eos_token_ids)


@hookimpl
def genplug_register_stopping_criteria(register):
    register(
        "eos",
        build_eos,
        order=40,
        fields=("eos_token_id",),
        description="stop a row when it generates eos_token_id; finished rows are then padded",
    )
