"""The ``dynamic`` cache backend: grows by one concatenation per step, supports every row operation.

Full-attention layers keep every token; layers the model config marks as sliding keep only their
window (as transformers 5's ``DynamicCache(config=...)`` does), so memory follows the model's
attention pattern. Without a config, full layers are added as the model uses them.
"""

from __future__ import annotations

from typing import Any

from genplug import hookimpl
from genplug.cache import CacheRequest

from .encoder_decoder import for_request
from .layered_cache import FULL, LayeredCache, layer_plan
from .layers import FullLayer, SlidingLayer

CAPABILITIES = frozenset({"crop", "reorder", "select", "repeat"})


class DynamicCache(LayeredCache):
    """``DynamicCache(config=None, *, crop_margin=0)``: the default cache.

    ``crop_margin`` -- tokens a later ``crop`` may remove; sliding layers keep that many extra.
    """

    capabilities = CAPABILITIES

    def __init__(self, config: Any = None, *, crop_margin: int = 0) -> None:
        plan = layer_plan(config)
        if plan is None:
            super().__init__(new_layer=FullLayer)
        else:
            super().__init__([FullLayer() if kind == FULL else SlidingLayer(window, crop_margin) for kind, window in plan])


def build(request: CacheRequest) -> Any:
    return for_request(request, DynamicCache(request.model_config, crop_margin=request.crop_margin))


@hookimpl
def genplug_register_cache_backends(register):
    register(
        "dynamic",
        build,
        capabilities=CAPABILITIES,
        config_keys=(),
        description="grows by concatenation; sliding layers keep their window (transformers' DynamicCache)",
    )
