"""The ``static`` cache backend: buffers allocated once, written in place, compile / CUDA-graph safe.

Each full-attention layer is a ``[batch, heads, max_cache_len, head_dim]`` buffer; sliding layers get
a window-sized buffer (as transformers 5's ``StaticCache``). ``reset()`` zeroes the buffers so one
cache serves many calls without reallocating, and the decode step keeps one shape and one address,
which is what torch.compile(fullgraph=True) and CUDA graphs need (gpt-fast's ``KVCache`` idea).
"""

from __future__ import annotations

from typing import Any, Optional

from genplug import hookimpl
from genplug.cache import CacheRequest
from genplug.errors import GenerationConfigError

from .encoder_decoder import for_request
from .layered_cache import FULL, LayeredCache, layer_plan
from .layers import StaticLayer, StaticSlidingLayer

CAPABILITIES = frozenset({"static_shape", "crop", "reorder", "compile"})


def static_layers(plan, max_cache_len: int, crop_margin: int):
    return [
        StaticLayer(max_cache_len) if kind == FULL else StaticSlidingLayer(window, max_cache_len, crop_margin)
        for kind, window in plan
    ]


class StaticCache(LayeredCache):
    """``StaticCache(config, max_cache_len, *, crop_margin=0)``.

    Without a config, static full layers are added as the model uses them. Buffers are allocated at
    the first update (from the shapes that arrive) or by ``early_initialization``.
    """

    capabilities = CAPABILITIES

    def __init__(self, config: Any, max_cache_len: int, *, crop_margin: int = 0) -> None:
        self._max_cache_len = max_cache_len
        plan = layer_plan(config)
        if plan is None:
            super().__init__(new_layer=lambda: StaticLayer(max_cache_len))
        else:
            super().__init__(static_layers(plan, max_cache_len, crop_margin))


def resolve_max_cache_len(request: CacheRequest, backend: str) -> int:
    """The buffer length: ``cache_config['max_cache_len']`` if given (it must cover the request), else the request's."""
    asked: Optional[int] = request.cache_config.get("max_cache_len")
    if asked is None:
        return request.max_cache_len
    if not isinstance(asked, int) or isinstance(asked, bool) or asked < 1:
        raise GenerationConfigError(f"cache_config max_cache_len={asked!r} must be a positive int (tokens the {backend} cache holds)")
    if asked < request.max_cache_len:
        raise GenerationConfigError(
            f"cache_config max_cache_len={asked} is too short for this call, which may store {request.max_cache_len} "
            f"tokens (prompt + new tokens); raise max_cache_len to at least {request.max_cache_len}, lower "
            f"max_new_tokens, or use cache_implementation='dynamic'"
        )
    return asked


def build(request: CacheRequest) -> Any:
    length = resolve_max_cache_len(request, "static")
    return for_request(request, StaticCache(request.model_config, length, crop_margin=request.crop_margin))


@hookimpl
def genplug_register_cache_backends(register):
    register(
        "static",
        build,
        capabilities=CAPABILITIES,
        config_keys=("max_cache_len",),
        description="preallocated buffers written in place; compile / CUDA-graph safe (transformers' StaticCache)",
    )
