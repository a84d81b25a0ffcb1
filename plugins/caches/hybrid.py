"""The ``hybrid`` backend: static buffers, full-attention and sliding layers mixed per the model.

Models such as Gemma 2/3, Cohere 2 or Qwen 2 with ``use_sliding_window`` alternate full-attention and
sliding-window layers (``config.layer_types``). Full layers get a ``max_cache_len`` buffer, sliding
layers a window-sized one, so memory grows only with the full layers (transformers' former
``HybridCache``). ``cache_config`` may override ``layer_types`` and ``sliding_window``, e.g. to run
a model whose config predates ``layer_types``. For the same mix with growing storage use ``dynamic``,
which reads the same config.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from genplug import hookimpl
from genplug.cache import CacheRequest

from .encoder_decoder import for_request
from .layered_cache import LayeredCache, layer_plan
from .static import CAPABILITIES, resolve_max_cache_len, static_layers
from .layers import StaticLayer


class HybridCache(LayeredCache):
    """``HybridCache(config, max_cache_len, *, layer_types=None, sliding_window=None, crop_margin=0)``."""

    capabilities = CAPABILITIES

    def __init__(self, config: Any, max_cache_len: int, *, layer_types: Optional[Sequence[str]] = None,
                 sliding_window: Optional[int] = None, crop_margin: int = 0) -> None:
        plan = layer_plan(config, layer_types=layer_types, sliding_window=sliding_window)
        if plan is None:
            super().__init__(new_layer=lambda: StaticLayer(max_cache_len))
        else:
            super().__init__(static_layers(plan, max_cache_len, crop_margin))


def build(request: CacheRequest) -> Any:
    cache = HybridCache(
        request.model_config,
        resolve_max_cache_len(request, "hybrid"),
        layer_types=request.cache_config.get("layer_types"),
        sliding_window=request.cache_config.get("sliding_window"),
        crop_margin=request.crop_margin,
    )
    return for_request(request, cache)


@hookimpl
def genplug_register_cache_backends(register):
    register(
        "hybrid",
        build,
        capabilities=CAPABILITIES,
        config_keys=("max_cache_len", "layer_types", "sliding_window"),
        description="static buffers; full and sliding layers mixed per config.layer_types (transformers' HybridCache)",
    )
