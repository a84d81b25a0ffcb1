"""The cache of an encoder-decoder model: a self-attention cache plus a cross-attention cache.

The attributes mimic transformers' ``EncoderDecoderCache`` (``self_attention_cache``,
``cross_attention_cache``, ``is_updated``, ``layers[i].keys`` on the cross cache), so genplug's own
encoder-decoder code and user code written against transformers read it the same way.

transformers' BART/T5/Whisper layers test ``isinstance(past_key_values, transformers.EncoderDecoderCache)``
and, if that fails, treat the object as a plain decoder cache -- cross-attention keys then land in
the self-attention cache and the output is wrong. A duck-typed object is therefore not enough for
them; :meth:`EncoderDecoderCache.to_transformers` returns a transformers ``EncoderDecoderCache`` that
shares this cache's storage (see ``transformers_bridge.py``).
"""

from __future__ import annotations

from typing import Any, Tuple

import torch

from genplug.cache import Cache, CacheRequest


class EncoderDecoderCache(Cache):
    """``EncoderDecoderCache(self_attention_cache, cross_attention_cache)``.

    Positions, masks and cropping follow the self-attention cache (cross-attention keys are the
    encoder output, computed once); row operations (reorder, select, repeat) apply to both.
    ``is_updated[layer]`` says whether the cross-attention keys of a layer are already stored.
    """

    def __init__(self, self_attention_cache: Any, cross_attention_cache: Any) -> None:
        for name, cache in (("self_attention_cache", self_attention_cache), ("cross_attention_cache", cross_attention_cache)):
            if not (hasattr(cache, "update") and hasattr(cache, "get_seq_length")):
                raise TypeError(f"EncoderDecoderCache: {name} must be a cache (with update/get_seq_length), got {type(cache).__name__}")
        self.self_attention_cache = self_attention_cache
        self.cross_attention_cache = cross_attention_cache
        self.is_updated = {
            layer_idx: bool(cross_attention_cache.get_seq_length(layer_idx) > 0)
            for layer_idx in range(len(cross_attention_cache))
        }

    def __repr__(self) -> str:
        return f"EncoderDecoderCache(self_attention_cache={self.self_attention_cache!r}, cross_attention_cache={self.cross_attention_cache!r})"

    @property
    def capabilities(self) -> frozenset:
        own = frozenset(getattr(self.self_attention_cache, "capabilities", frozenset()))
        cross = frozenset(getattr(self.cross_attention_cache, "capabilities", frozenset()))
        both = {"reorder", "select", "repeat", "static_shape", "compile"}
        return frozenset(c for c in own if c not in both or c in cross)

    # ------------------------------------------------------------------ what a model calls

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        raise TypeError(
            "EncoderDecoderCache has no update() of its own: a model updates .self_attention_cache or "
            ".cross_attention_cache. A transformers model that called this did not recognise the cache -- pass "
            "cache.to_transformers() instead"
        )

    def get_seq_length(self, layer_idx: int = 0):
        return self.self_attention_cache.get_seq_length(layer_idx)

    def get_query_offset(self, layer_idx: int = 0):
        return self.self_attention_cache.get_query_offset(layer_idx)

    def get_mask_sizes(self, query_length: int, layer_idx: int = 0) -> Tuple[int, int]:
        return self.self_attention_cache.get_mask_sizes(query_length, layer_idx)

    @property
    def is_compileable(self) -> bool:
        return bool(getattr(self.self_attention_cache, "is_compileable", False))

    @property
    def is_sliding(self):
        return self.self_attention_cache.is_sliding

    @property
    def is_initialized(self) -> bool:
        return bool(getattr(self.self_attention_cache, "is_initialized", False))

    def __len__(self) -> int:
        return len(self.self_attention_cache)

    def get_max_length(self, layer_idx=None) -> int:
        return self.self_attention_cache.get_max_length(layer_idx)

    # ------------------------------------------------------------------ what strategies call

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.self_attention_cache.reorder_cache(beam_idx)
        self.cross_attention_cache.reorder_cache(beam_idx)

    def crop(self, max_length: int) -> None:
        self.self_attention_cache.crop(max_length)

    def batch_repeat_interleave(self, repeats: int) -> None:
        self.self_attention_cache.batch_repeat_interleave(repeats)
        self.cross_attention_cache.batch_repeat_interleave(repeats)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.self_attention_cache.batch_select_indices(indices)
        self.cross_attention_cache.batch_select_indices(indices)

    def reset(self) -> None:
        self.self_attention_cache.reset()
        self.cross_attention_cache.reset()
        for layer_idx in self.is_updated:
            self.is_updated[layer_idx] = False

    def activate_past_recording(self) -> None:
        if hasattr(self.self_attention_cache, "activate_past_recording"):
            self.self_attention_cache.activate_past_recording()

    def storage_nbytes(self) -> dict:
        totals: dict = {}
        for cache in (self.self_attention_cache, self.cross_attention_cache):
            for kind, n in getattr(cache, "storage_nbytes", dict)().items():
                totals[kind] = totals.get(kind, 0) + n
        return totals

    def to_transformers(self):
        """A transformers ``EncoderDecoderCache`` sharing this cache's storage (needs transformers)."""
        from .transformers_bridge import to_transformers

        return to_transformers(self)


def for_request(request: CacheRequest, self_attention_cache: Any) -> Any:
    """Wrap a decoder cache for an encoder-decoder request; return it unchanged otherwise.

    The cross-attention cache holds the encoder output once: a static one sized to the encoder
    length when the self-attention cache is static (so the whole cache stays compile-friendly),
    else a dynamic one. It never slides -- cross-attention sees the whole input.
    """
    if not request.is_encoder_decoder:
        return self_attention_cache
    from .dynamic import DynamicCache
    from .static import StaticCache

    static = "static_shape" in getattr(self_attention_cache, "capabilities", ())
    if static and request.encoder_length > 0:
        cross = StaticCache(None, max_cache_len=request.encoder_length)
    else:
        cross = DynamicCache()
    return EncoderDecoderCache(self_attention_cache, cross)
