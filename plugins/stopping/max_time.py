"""Stop every row once generation has run for ``max_time`` seconds."""

from __future__ import annotations

import time
from typing import Optional

import torch

from genplug import hookimpl
from genplug.stopping import StoppingCriteria


class MaxTimeCriteria(StoppingCriteria):
    """Stop when more than ``max_time`` seconds have passed since ``initial_timestamp``.

    The clock starts when the criterion is built (once per generate() call, before the prompt is
    processed) unless ``initial_timestamp`` (a ``time.time()`` value) is given. The check reads the
    host clock, not the device, so it costs no synchronisation; it is not compile-safe, because a
    captured graph would freeze the answer.
    """

    compile_safe = False

    def __init__(self, max_time: float, initial_timestamp: Optional[float] = None):
        self.max_time = max_time
        self.initial_timestamp = time.time() if initial_timestamp is None else initial_timestamp

    def __call__(self, input_ids: torch.LongTensor, scores: Optional[torch.FloatTensor], **kwargs) -> torch.BoolTensor:
        done = time.time() - self.initial_timestamp > self.max_time
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


def build_max_time(config, context) -> Optional[MaxTimeCriteria]:
    if config.max_time is None:
        return None
    return MaxTimeCriteria(config.max_time)


@hookimpl
def genplug_register_stopping_criteria(register):
    register(
        "max_time",
        build_max_time,
        order=20,
        fields=("max_time",),
        description="stop when generation has run for max_time seconds (host clock)",
    )
