"""The KV-cache protocol every cache backend follows, and the request a backend is built from.

The surface is a superset of what transformers 5.x models call on ``past_key_values``, so a genplug
cache can be handed straight to a transformers model, and genplug's own models use the same object.
Backends live in plugins (``genplug.plugins.caches``) and are chosen by ``cache_implementation``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import attrs
import torch

# What a backend can do; a strategy declares what it needs (e.g. beam search needs "reorder").
CAPABILITIES = frozenset({"static_shape", "crop", "reorder", "select", "repeat", "offload", "compile"})


@attrs.define
class CacheRequest:
    """Everything a backend factory gets to build a cache for one generate() call.

    ``model_config`` is the (decoder) model config: num_hidden_layers, num_key_value_heads, head_dim,
    sliding_window, layer_types... ``max_cache_len`` is the most tokens the call will store.
    ``cache_config`` holds the backend's own options; a key it does not take is refused.
    """

    model_config: Any
    batch_size: int
    max_cache_len: int
    dtype: torch.dtype
    device: torch.device
    cache_config: Dict[str, Any] = attrs.field(factory=dict)
    is_encoder_decoder: bool = False
    encoder_length: int = 0


class Cache:
    """The protocol (and a base class) for KV caches; tensors are ``[batch, heads, seq, head_dim]``.

    Methods a model calls while running: ``update``, ``get_seq_length``, ``get_query_offset``,
    ``get_mask_sizes``, ``is_compileable``, ``is_sliding``. Methods strategies call: ``reorder_cache``,
    ``crop``, ``batch_repeat_interleave``, ``batch_select_indices``, ``reset``. ``capabilities`` says
    which of the strategy-facing operations the backend supports.
    """

    capabilities: frozenset = frozenset()
    is_compileable: bool = False

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs) -> Tuple[torch.Tensor, torch.Tensor]:
        """Store the new keys/values of ``layer_idx`` and return all keys/values to attend over."""
        raise NotImplementedError

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Tokens seen so far by ``layer_idx`` (the total, also for sliding layers)."""
        raise NotImplementedError

    def get_query_offset(self, layer_idx: int = 0) -> int:
        """Position of the first query token of the next forward (= tokens seen)."""
        return self.get_seq_length(layer_idx)

    def get_mask_sizes(self, query_length: int, layer_idx: int = 0) -> Tuple[int, int]:
        """``(kv_length, kv_offset)`` of the attention mask the next forward needs."""
        raise NotImplementedError

    @property
    def is_sliding(self) -> List[bool]:
        return [False] * len(self)

    def __len__(self) -> int:
        return 0

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot reorder (beam search needs 'reorder')")

    def crop(self, max_length: int) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot crop")

    def batch_repeat_interleave(self, repeats: int) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot repeat rows")

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot select rows")

    def reset(self) -> None:
        raise NotImplementedError
