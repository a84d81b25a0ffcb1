"""A cache made of one storage layer per attention layer, and the per-layer plan read from a model config.

Every built-in backend is a :class:`LayeredCache` whose layers come from ``layers.py`` (or, for the
quantized and offloaded backends, their own modules); the backends differ only in which layer class
each model layer gets. Which layers are full attention and which slide comes from the model config
(``layer_types``, else ``sliding_window``), as in transformers 5.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence, Tuple

import torch

from genplug.cache import ATTENTION_LAYER_TYPES, Cache
from genplug.errors import GenerationConfigError

from .layers import StaticLayer, crop_target, zero_together

FULL = "full_attention"
SLIDING = "sliding_attention"
# transformers handles chunked attention with a sliding-window layer of the chunk size; so do we.
_SLIDING_LIKE = {SLIDING: "sliding_window", "chunked_attention": "attention_chunk_size"}


def config_get(config: Any, name: str, default: Any = None) -> Any:
    """Read ``name`` from a config object, a dict, or None."""
    if config is None:
        return default
    if isinstance(config, dict):
        return config.get(name, default)
    return getattr(config, name, default)


def decoder_config(config: Any) -> Any:
    get_text_config = getattr(config, "get_text_config", None)
    return get_text_config(decoder=True) if callable(get_text_config) else config


def layer_plan(
    config: Any,
    *,
    layer_types: Optional[Sequence[str]] = None,
    sliding_window: Optional[int] = None,
    all_sliding: bool = False,
) -> Optional[List[Tuple[str, Optional[int]]]]:
    """``[(FULL | SLIDING, window or None), ...]``, one entry per model layer, or None when the config
    does not say how many layers there are (the cache then adds full layers as they are used).

    ``layer_types`` / ``sliding_window`` override the config's; ``all_sliding`` makes every layer slide.
    """
    config = decoder_config(config)
    types = list(layer_types) if layer_types is not None else config_get(config, "layer_types")
    count = config_get(config, "num_hidden_layers")
    if types is not None and count is not None and len(types) < count:
        raise GenerationConfigError(
            f"layer_types lists {len(types)} layers but the model has num_hidden_layers={count}; give one type per layer"
        )
    if types is None:
        if count is None:
            if all_sliding:
                return None if sliding_window is None else []
            return None
        default_type = SLIDING if config_get(config, "sliding_window") is not None else FULL
        types = [default_type] * count
    elif count is not None:
        types = types[:count]

    plan = []
    for index, layer_type in enumerate(types):
        if all_sliding or layer_type in _SLIDING_LIKE:
            field = _SLIDING_LIKE.get(layer_type, "sliding_window")
            window = sliding_window if sliding_window is not None else config_get(config, field)
            if window is None and all_sliding:
                window = config_get(config, "sliding_window")
            if window is None:
                raise GenerationConfigError(
                    f"layer {index} is a sliding-window layer but no window size is set: set sliding_window in the "
                    "model config or in cache_config={'sliding_window': N}"
                )
            plan.append((SLIDING, int(window)))
        elif layer_type == FULL:
            plan.append((FULL, None))
        else:
            raise GenerationConfigError(
                f"layer {index} has layer type {layer_type!r}, which genplug's cache backends do not store "
                f"(they handle {', '.join(sorted(map(repr, ATTENTION_LAYER_TYPES)))}); a transformers model with "
                "such layers gets transformers' own cache for cache_implementation 'dynamic', 'offloaded' or "
                "'static', or pass its cache as past_key_values"
            )
    return plan


class LayeredCache(Cache):
    """A list of storage layers behind the cache protocol.

    ``layers`` are built up front from the model config; with no config, ``new_layer()`` makes a
    layer whenever ``update`` reaches a layer index not seen yet.
    """

    capabilities = frozenset()

    def __init__(self, layers: Sequence[Any] = (), new_layer: Optional[Callable[[], Any]] = None):
        self.layers = list(layers)
        self._new_layer = new_layer

    def __repr__(self) -> str:
        return f"{type(self).__name__}(layers={[type(layer).__name__ for layer in self.layers]})"

    def _layer(self, layer_idx: int):
        if layer_idx >= len(self.layers):
            if self._new_layer is None:
                raise IndexError(
                    f"{type(self).__name__} was built for {len(self.layers)} layers (from the model config) but "
                    f"update() was called for layer {layer_idx}; build the cache from the config of this model"
                )
            while len(self.layers) <= layer_idx:
                self.layers.append(self._new_layer())
        return self.layers[layer_idx]

    # ------------------------------------------------------------------ what a model calls

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        return self._layer(layer_idx).update(key_states, value_states)

    def get_seq_length(self, layer_idx: int = 0):
        if layer_idx >= len(self.layers):
            return 0
        return self.layers[layer_idx].get_seq_length()

    def get_query_offset(self, layer_idx: int = 0):
        if layer_idx >= len(self.layers):
            return 0
        return self.layers[layer_idx].get_query_offset()

    def get_mask_sizes(self, query_length: int, layer_idx: int = 0) -> Tuple[int, int]:
        if layer_idx >= len(self.layers) and self._new_layer is None:
            return query_length, 0
        # A layer made on demand must answer now: a static one returns its whole buffer from the first update.
        return self._layer(layer_idx).get_mask_sizes(query_length)

    @property
    def is_compileable(self) -> bool:
        # transformers reads this as "update returns padded fixed-size buffers": a one-token step then
        # needs an explicit mask instead of SDPA's is_causal shortcut. So it follows the layers, not
        # the "compile" capability (an offloaded static cache returns padded buffers too).
        for layer in self.layers:  # a plain loop: older dynamo versions cannot trace a generator here
            if not layer.is_compileable:
                return False
        return len(self.layers) > 0

    @property
    def is_sliding(self) -> List[bool]:
        return [layer.is_sliding for layer in self.layers]

    @property
    def is_initialized(self) -> bool:
        return bool(self.layers) and all(layer.is_initialized for layer in self.layers)

    @property
    def is_croppable(self) -> bool:
        return "crop" in self.capabilities

    def __len__(self) -> int:
        return len(self.layers)

    def get_max_length(self, layer_idx: Optional[int] = None) -> int:
        if layer_idx is not None:
            return self.layers[layer_idx].get_max_length() if layer_idx < len(self.layers) else -1
        # Sliding layers are bounded by their window; the cache is bounded only if every full layer is.
        full = [layer.get_max_length() for layer in self.layers if not layer.is_sliding]
        if not full:
            return max((layer.get_max_length() for layer in self.layers), default=-1)
        return -1 if any(length < 0 for length in full) else max(full)

    @property
    def batch_size(self) -> int:
        for layer in self.layers:
            if layer.shape is not None:
                return layer.shape[0]
        return -1

    # ------------------------------------------------------------------ what strategies call

    def _require(self, capability: str, operation: str) -> None:
        if capability not in self.capabilities:
            raise NotImplementedError(
                f"{type(self).__name__} cannot {operation}: it lacks capability {capability!r} (it has "
                f"{', '.join(sorted(self.capabilities)) or 'none'}); use a cache backend that has it, e.g. 'dynamic'"
            )

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self._require("reorder", "reorder rows")
        for layer in self.layers:
            layer.reorder(beam_idx)

    def crop(self, max_length: int) -> None:
        self._require("crop", "crop")
        crop_target(max_length, self.get_seq_length())  # validates max_length before anything changes
        for index, layer in enumerate(self.layers):  # check every layer before touching any
            problem = layer.crop_problem(crop_target(max_length, layer.get_seq_length()))
            if problem:
                raise ValueError(f"crop({max_length}) is not possible: layer {index}: {problem}")
        for layer in self.layers:
            layer.crop_to(crop_target(max_length, layer.get_seq_length()))

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._require("repeat", "repeat rows")
        if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
            raise ValueError(f"batch_repeat_interleave(repeats={repeats!r}): repeats must be a positive int")
        for layer in self.layers:
            layer.repeat(repeats)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._require("select", "select rows")
        for layer in self.layers:
            layer.select(indices)

    def reset(self) -> None:
        to_zero = []  # static layers' buffers, zeroed together (see layers.zero_together)
        for layer in self.layers:
            if type(layer).reset is StaticLayer.reset:  # (a subclass overriding reset() is called as it is)
                layer.reset_deferring_zeros(to_zero)
            else:
                layer.reset()
        zero_together(to_zero)

    def activate_past_recording(self) -> None:
        for layer in self.layers:
            if hasattr(layer, "activate_past_recording"):
                layer.activate_past_recording()

    def early_initialization(self, batch_size: int, num_heads: int, head_dim: int, dtype, device) -> None:
        """Allocate static buffers now instead of at the first update (needed when the prefill is compiled)."""
        for layer in self.layers:
            if hasattr(layer, "early_initialization"):
                layer.early_initialization(batch_size, num_heads, head_dim, dtype, device)

    # ------------------------------------------------------------------ accounting

    def storage_nbytes(self) -> dict:
        """Bytes of tensor storage the cache holds, by device type (``{"cpu": n, "cuda": m}``)."""
        totals: dict = {}
        for layer in self.layers:
            for tensor in layer.tensors():
                kind = tensor.device.type
                totals[kind] = totals.get(kind, 0) + tensor.numel() * tensor.element_size()
        for tensor in self.extra_tensors():
            kind = tensor.device.type
            totals[kind] = totals.get(kind, 0) + tensor.numel() * tensor.element_size()
        return totals

    def extra_tensors(self):
        """Tensors held by the cache itself rather than by a layer (e.g. offloading's device slots)."""
        return ()
