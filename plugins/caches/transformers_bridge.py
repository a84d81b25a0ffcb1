"""Views that make a genplug cache pass transformers' ``isinstance`` checks, sharing its storage.

A genplug cache works as ``past_key_values`` of a transformers decoder-only model by duck typing,
with two exceptions where transformers tests the class instead:

* encoder-decoder models (BART, T5, Whisper...) branch on
  ``isinstance(past_key_values, transformers.EncoderDecoderCache)``; without it the cross-attention
  keys are written into the self-attention cache;
* ``masking_utils.find_first_full_attention_index`` reads ``is_sliding`` only from a
  ``transformers.Cache``; otherwise it sizes the full-attention mask from layer 0, which is wrong for
  models whose first layer slides (Gemma 2/3, Cohere 2...).

:func:`to_transformers` wraps a genplug cache in a subclass of the matching transformers class whose
methods all forward to the genplug cache. transformers is imported only when it is called.
"""

from __future__ import annotations

import functools
from typing import Any


def to_transformers(cache: Any) -> Any:
    """A transformers ``Cache`` (or ``EncoderDecoderCache``) view of ``cache``; transformers caches pass through."""
    from transformers.cache_utils import Cache as TransformersCache

    if isinstance(cache, TransformersCache):
        return cache
    if hasattr(cache, "cross_attention_cache"):
        return _encoder_decoder_view_class()(cache)
    return _cache_view_class()(cache)


def from_transformers(cache: Any) -> Any:
    """The genplug cache behind a view made by :func:`to_transformers` (anything else unchanged)."""
    return getattr(cache, "genplug_cache", cache)


@functools.lru_cache(maxsize=None)
def _cache_view_class():
    from transformers.cache_utils import Cache as TransformersCache

    class GenplugCacheView(TransformersCache):
        """A transformers ``Cache`` whose every method forwards to a genplug cache."""

        def __init__(self, genplug_cache: Any) -> None:  # no super().__init__: there are no transformers layers
            self.genplug_cache = genplug_cache

        def __repr__(self) -> str:
            return f"GenplugCacheView({self.genplug_cache!r})"

        def __getattr__(self, name: str) -> Any:  # anything else (capabilities, storage_nbytes, ...)
            if name == "genplug_cache":
                raise AttributeError(name)
            return getattr(self.genplug_cache, name)

        @property
        def layers(self):
            return getattr(self.genplug_cache, "layers", [])

        def __len__(self) -> int:
            return len(self.genplug_cache)

        def update(self, key_states, value_states, layer_idx, *args, **kwargs):
            return self.genplug_cache.update(key_states, value_states, layer_idx, *args, **kwargs)

        def get_seq_length(self, layer_idx: int = 0):
            return self.genplug_cache.get_seq_length(layer_idx)

        def get_query_offset(self, layer_idx: int = 0):
            return self.genplug_cache.get_query_offset(layer_idx)

        def get_mask_sizes(self, query_length: int, layer_idx: int = 0):
            return self.genplug_cache.get_mask_sizes(query_length, layer_idx)

        def get_max_length(self, layer_idx=None) -> int:
            return self.genplug_cache.get_max_length(layer_idx)

        def reset(self) -> None:
            self.genplug_cache.reset()

        def reorder_cache(self, beam_idx) -> None:
            self.genplug_cache.reorder_cache(beam_idx)

        def crop(self, max_length: int) -> None:
            self.genplug_cache.crop(max_length)

        def batch_repeat_interleave(self, repeats: int) -> None:
            self.genplug_cache.batch_repeat_interleave(repeats)

        def batch_select_indices(self, indices) -> None:
            self.genplug_cache.batch_select_indices(indices)

        def activate_past_recording(self) -> None:
            if hasattr(self.genplug_cache, "activate_past_recording"):
                self.genplug_cache.activate_past_recording()

        def is_recording_past(self, layer_idx: int) -> bool:
            return bool(getattr(self.layers[layer_idx], "record_past", False))

        def early_initialization(self, batch_size, num_heads, head_dim, dtype, device) -> None:
            self.genplug_cache.early_initialization(batch_size, num_heads, head_dim, dtype, device)

        @property
        def batch_size(self) -> int:
            return getattr(self.genplug_cache, "batch_size", -1)

        @property
        def is_compileable(self) -> bool:
            return bool(self.genplug_cache.is_compileable)

        @property
        def is_initialized(self) -> bool:
            return bool(getattr(self.genplug_cache, "is_initialized", False))

        @property
        def is_croppable(self) -> bool:
            return "crop" in getattr(self.genplug_cache, "capabilities", ())

        @property
        def is_sliding(self):
            return list(self.genplug_cache.is_sliding)

        @property
        def is_linear(self):
            return [False] * len(self)

        @property
        def is_dummy(self):
            return [False] * len(self)

    return GenplugCacheView


@functools.lru_cache(maxsize=None)
def _encoder_decoder_view_class():
    from transformers.cache_utils import EncoderDecoderCache as TransformersEncoderDecoderCache

    class GenplugEncoderDecoderCacheView(TransformersEncoderDecoderCache):
        """A transformers ``EncoderDecoderCache`` over a genplug one; ``is_updated`` is shared."""

        def __init__(self, genplug_cache: Any) -> None:  # no super().__init__: it insists on transformers caches
            self.genplug_cache = genplug_cache
            self.self_attention_cache = to_transformers(genplug_cache.self_attention_cache)
            self.cross_attention_cache = to_transformers(genplug_cache.cross_attention_cache)
            self.is_updated = genplug_cache.is_updated

        def __repr__(self) -> str:
            return f"GenplugEncoderDecoderCacheView({self.genplug_cache!r})"

        def __getattr__(self, name: str) -> Any:
            if name == "genplug_cache":
                raise AttributeError(name)
            return getattr(self.genplug_cache, name)

        # transformers allows these only for two DynamicCaches; the genplug cache decides for itself.
        def crop(self, max_length: int) -> None:
            self.genplug_cache.crop(max_length)

        def batch_repeat_interleave(self, repeats: int) -> None:
            self.genplug_cache.batch_repeat_interleave(repeats)

        def batch_select_indices(self, indices) -> None:
            self.genplug_cache.batch_select_indices(indices)

        def reorder_cache(self, beam_idx) -> None:
            self.genplug_cache.reorder_cache(beam_idx)

        def reset(self) -> None:
            self.genplug_cache.reset()

        def get_query_offset(self, layer_idx: int = 0):
            return self.genplug_cache.get_query_offset(layer_idx)

    return GenplugEncoderDecoderCacheView
