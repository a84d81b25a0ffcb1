"""The attention mask of one forward: causal, left padding and sliding window combined, built once per forward.

Positions here are *cache* positions (the index of a token in the sequence the cache has seen), not
RoPE positions: with left padding the two differ, and the mask must follow the cache. The cache says
which keys the next forward attends over through ``get_mask_sizes(q_len, layer) -> (kv_length,
kv_offset)``: key ``j`` is the token at cache position ``kv_offset + j``.
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F

IntOrTensor = Union[int, torch.Tensor]


def attention_mask_for(
    padding_mask: Optional[torch.Tensor],
    q_len: int,
    q_offset: IntOrTensor,
    kv_length: int,
    kv_offset: int,
    window: Optional[int],
    device: torch.device,
    explicit: bool = False,
) -> Tuple[Optional[torch.Tensor], bool]:
    """``(mask, is_causal)`` for ``scaled_dot_product_attention``.

    ``mask`` is boolean ``[batch or 1, 1, q_len, kv_length]`` (True = attend) or None when SDPA needs
    none: a single new token attending to everything cached, or a causal prefill with nothing cached
    (then ``is_causal`` is True). ``padding_mask`` is the 2-D 0/1 ``attention_mask`` over all tokens so
    far; ``window`` limits each query to the last ``window`` tokens, itself included. ``explicit=True``
    always builds the mask (eager attention needs it).
    """
    if (
        padding_mask is None
        and not explicit
        and isinstance(q_offset, int)
        and kv_offset == 0
        and kv_length == q_offset + q_len
        and (window is None or kv_length <= window)
    ):
        if q_len == 1:
            return None, False
        if q_offset == 0:
            return None, True
    q_positions = torch.arange(q_len, device=device) + q_offset
    kv_positions = torch.arange(kv_length, device=device) + kv_offset
    allowed = kv_positions[None, :] <= q_positions[:, None]
    if window is not None:
        allowed = allowed & (kv_positions[None, :] > q_positions[:, None] - window)
    allowed = allowed[None, None]
    if padding_mask is not None:
        padding = padding_mask.to(device=device, dtype=torch.bool)
        end = kv_offset + kv_length
        if padding.shape[-1] < end:  # slots a static cache has not written yet
            padding = F.pad(padding, (0, end - padding.shape[-1]), value=False)
        allowed = allowed & padding[:, None, None, kv_offset:end]
    return allowed, False
