"""The ``sliding_window`` and ``sliding_window_static`` backends: every layer keeps only its window.

Use them to bound memory: for a model whose config says it slides (Mistral with ``sliding_window``)
they give the same output as any other backend; for a full-attention model they turn it into a
windowed one (each new token sees the last ``sliding_window`` tokens), which changes its output once
the sequence outgrows the window. ``get_seq_length`` still counts every token seen, so positions stay
right. The window comes from ``cache_config['sliding_window']``, else from the model config.
"""

from __future__ import annotations

from typing import Any, Optional

from genplug import hookimpl
from genplug.cache import CacheRequest
from genplug.errors import GenerationConfigError

from .dynamic import CAPABILITIES as DYNAMIC_CAPABILITIES
from .encoder_decoder import for_request
from .layered_cache import LayeredCache, config_get, decoder_config, layer_plan
from .layers import SlidingLayer, StaticSlidingLayer
from .static import CAPABILITIES as STATIC_CAPABILITIES, resolve_max_cache_len


class SlidingWindowCache(LayeredCache):
    """``SlidingWindowCache(config=None, sliding_window=None, *, static=False, max_cache_len=None, crop_margin=0)``.

    ``static=True`` preallocates ``min(sliding_window + crop_margin, max_cache_len)`` slots per layer
    (compile-friendly); otherwise layers grow up to the window.
    """

    def __init__(self, config: Any = None, sliding_window: Optional[int] = None, *, static: bool = False,
                 max_cache_len: Optional[int] = None, crop_margin: int = 0) -> None:
        window = sliding_window if sliding_window is not None else config_get(decoder_config(config), "sliding_window")
        if window is None:
            raise GenerationConfigError(
                "the sliding_window cache needs a window size: set cache_config={'sliding_window': N} or the "
                "model config's sliding_window"
            )
        if not isinstance(window, int) or isinstance(window, bool) or window < 1:
            raise GenerationConfigError(f"sliding_window={window!r} must be a positive int (tokens each query sees)")
        if static and max_cache_len is None:
            max_cache_len = window + crop_margin
        self.capabilities = STATIC_CAPABILITIES if static else DYNAMIC_CAPABILITIES

        def new_layer():
            return StaticSlidingLayer(window, max_cache_len, crop_margin) if static else SlidingLayer(window, crop_margin)

        plan = layer_plan(config, sliding_window=window, all_sliding=True)
        if not plan:
            super().__init__(new_layer=new_layer)
        else:
            super().__init__([new_layer() for _ in plan])


def build_dynamic(request: CacheRequest) -> Any:
    cache = SlidingWindowCache(request.model_config, request.cache_config.get("sliding_window"),
                               crop_margin=request.crop_margin)
    return for_request(request, cache)


def build_static(request: CacheRequest) -> Any:
    cache = SlidingWindowCache(request.model_config, request.cache_config.get("sliding_window"), static=True,
                               max_cache_len=resolve_max_cache_len(request, "sliding_window_static"),
                               crop_margin=request.crop_margin)
    return for_request(request, cache)


@hookimpl
def genplug_register_cache_backends(register):
    register(
        "sliding_window",
        build_dynamic,
        capabilities=DYNAMIC_CAPABILITIES,
        config_keys=("sliding_window",),
        description="every layer keeps only the last sliding_window tokens; grows up to the window",
    )
    register(
        "sliding_window_static",
        build_static,
        capabilities=STATIC_CAPABILITIES,
        config_keys=("sliding_window", "max_cache_len"),
        description="every layer keeps only the last sliding_window tokens in a preallocated buffer",
    )
