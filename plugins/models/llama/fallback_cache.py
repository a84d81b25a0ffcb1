"""FALLBACK ONLY: the growing KV cache a native model makes for itself when no cache backend is installed.

A native model called with ``use_cache=True`` and no ``past_key_values`` asks the ``"dynamic"`` backend
of the cache registry for a cache (see ``NativeLlamaForCausalLM.new_cache``). This class is used only
when that backend is missing (genplug installed without its cache plugins, or its plugin blocked), so
that the model still works on its own. It follows the :class:`genplug.cache.Cache` protocol with the
least code: every layer keeps all keys/values; sliding windows are enforced by the attention mask.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch

from genplug.cache import Cache


class FallbackDynamicCache(Cache):
    """Keys/values ``[batch, kv_heads, seq, head_dim]`` per layer, grown with ``torch.cat``."""

    capabilities = frozenset({"crop", "reorder", "select", "repeat"})
    is_compileable = False

    def __init__(self, num_layers: int):
        self.keys: List[Optional[torch.Tensor]] = [None] * num_layers
        self.values: List[Optional[torch.Tensor]] = [None] * num_layers
        self._is_user_defined = False

    def __len__(self) -> int:
        return len(self.keys)

    def update(self, key_states, value_states, layer_idx, *args, **kwargs) -> Tuple[torch.Tensor, torch.Tensor]:
        if self.keys[layer_idx] is None:
            self.keys[layer_idx], self.values[layer_idx] = key_states, value_states
        else:
            self.keys[layer_idx] = torch.cat((self.keys[layer_idx], key_states), dim=-2)
            self.values[layer_idx] = torch.cat((self.values[layer_idx], value_states), dim=-2)
        return self.keys[layer_idx], self.values[layer_idx]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        keys = self.keys[layer_idx]
        return 0 if keys is None else keys.shape[-2]

    def get_mask_sizes(self, query_length: int, layer_idx: int = 0) -> Tuple[int, int]:
        return self.get_seq_length(layer_idx) + query_length, 0

    def _each_layer(self, fn) -> None:
        for i, keys in enumerate(self.keys):
            if keys is not None:
                self.keys[i], self.values[i] = fn(keys), fn(self.values[i])

    def crop(self, max_length: int) -> None:
        """Keep the first ``max_length`` tokens (a negative value drops that many from the end)."""
        if max_length < 0:
            max_length = self.get_seq_length() + max_length
        self._each_layer(lambda t: t[..., :max_length, :])

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self._each_layer(lambda t: t.index_select(0, beam_idx.to(t.device)))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._each_layer(lambda t: t[indices])

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._each_layer(lambda t: t.repeat_interleave(repeats, dim=0))

    def reset(self) -> None:
        self.keys = [None] * len(self.keys)
        self.values = [None] * len(self.values)
