"""Reading the tokens so far from the CUDA-graph loop's fixed-size buffer (the ``at_prefix`` forms).

The graph loop hands processors ``tokens [batch, max_length]`` whose first ``length`` columns are the
sequence so far, ``length`` being a 0-d device tensor: the shapes never change and nothing is read
back to the host, so the processors' work can sit inside a captured step.
"""

from __future__ import annotations

import torch


def tail(tokens: torch.LongTensor, length, count: int, before_start: int) -> torch.LongTensor:
    """The last ``count`` tokens before column ``length`` (``[batch, count]``); columns before the
    start of the buffer read as ``before_start``. ``length`` is an int or a 0-d tensor."""
    if tokens.shape[1] == 0:  # an empty history (generation from inputs_embeds alone)
        return torch.full((tokens.shape[0], count), before_start, dtype=tokens.dtype, device=tokens.device)
    at = length - count + torch.arange(count, device=tokens.device)
    picked = tokens.gather(1, at.clamp_min(0).expand(tokens.shape[0], count))
    return picked.masked_fill(at < 0, before_start)
