"""The KV-cache protocol every cache backend follows, the request a backend is built from, and the
two set-up checks the core runs before a call: "does this backend do what the strategy needs?" and
"build the backend the config names".

The surface is a superset of what transformers 5.x models call on ``past_key_values``, so a genplug
cache can be handed straight to a transformers model, and genplug's own models use the same object.
Backends live in plugins (``genplug.plugins.caches`` for the built-in ones) and are chosen by name
(``cache_implementation``); docs/caches.md describes each one.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import attrs
import torch

from .errors import GenerationConfigError, PluginError, did_you_mean

# What a backend can do; a strategy declares what it needs (e.g. beam search needs "reorder").
#   static_shape -- tensors returned by update() keep one shape for the whole call
#   crop         -- crop(max_length) removes the most recent tokens exactly
#   reorder      -- reorder_cache(beam_idx) (beam search)
#   select       -- batch_select_indices(indices) (rows leave the batch)
#   repeat       -- batch_repeat_interleave(repeats) (rows are duplicated)
#   offload      -- the bulk of the cache lives in host memory
#   compile      -- update() can be captured by torch.compile(fullgraph=True) / CUDA graphs
CAPABILITIES = frozenset({"static_shape", "crop", "reorder", "select", "repeat", "offload", "compile"})

# The layer types genplug's backends store keys and values for (transformers' ``config.layer_types``;
# chunked attention is stored as a window of the chunk size). Others -- "linear_attention", "conv",
# "mamba"... -- keep a recurrent state the model's own cache family holds.
ATTENTION_LAYER_TYPES = frozenset({"full_attention", "sliding_attention", "chunked_attention"})


def recurrent_layer_types(model_config: Any) -> List[str]:
    """The layer types of ``model_config`` (``layer_types``) that are not attention, each named once."""
    types = model_config.get("layer_types") if isinstance(model_config, Mapping) else getattr(
        model_config, "layer_types", None)
    return sorted({t for t in types or () if t not in ATTENTION_LAYER_TYPES})


@attrs.define
class CacheRequest:
    """Everything a backend factory gets to build a cache for one generate() call.

    * ``model_config`` -- the (decoder) model config: ``num_hidden_layers``, ``num_key_value_heads``,
      ``head_dim``, ``sliding_window``, ``layer_types``... (an object or a dict).
    * ``max_cache_len`` -- the most tokens the call will store (prompt plus new tokens).
    * ``cache_config`` -- the backend's own options; a key it does not take is refused by
      :func:`build_cache`.
    * ``is_encoder_decoder`` / ``encoder_length`` -- set for encoder-decoder models; the backend then
      returns an ``EncoderDecoderCache`` (self-attention cache + cross-attention cache).
    * ``crop_margin`` -- how many of the most recent tokens the caller may later remove with
      ``crop``. Sliding-window layers keep that many tokens beyond their window so such a crop stays
      exact; 0 means the caller never crops once a window is full.
    """

    model_config: Any
    batch_size: int
    max_cache_len: int
    dtype: torch.dtype
    device: torch.device
    cache_config: Dict[str, Any] = attrs.field(factory=dict)
    is_encoder_decoder: bool = False
    encoder_length: int = 0
    crop_margin: int = 0


class Cache:
    """The protocol (and a base class) for KV caches; tensors are ``[batch, kv_heads, seq, head_dim]``.

    A backend need not subclass this: any object with these members works (duck typing), which is
    also all a transformers model uses. Subclassing gives the defaults below.

    Called by a model while it runs:

    * ``update(key_states, value_states, layer_idx, *args, **kwargs) -> (keys, values)`` -- store the
      new keys/values of one layer and return every key/value that layer attends over. RoPE is
      already applied. The returned tensors may be longer than the tokens seen (static caches return
      their whole buffer); ``get_mask_sizes`` says which positions they hold.
    * ``get_seq_length(layer_idx=0) -> int`` -- tokens seen so far (the total, also for sliding layers).
    * ``get_query_offset(layer_idx=0)`` -- position of the first query token of the next forward.
    * ``get_mask_sizes(query_length, layer_idx) -> (kv_length, kv_offset)`` -- the keys the next
      ``update`` of that layer will return are the absolute positions
      ``kv_offset .. kv_offset + kv_length - 1``.
    * ``is_compileable`` (bool) -- must be True when ``update`` returns buffers longer than the
      tokens seen: transformers then builds an explicit mask for one-token steps instead of relying
      on SDPA's ``is_causal`` shortcut, which would attend to the unfilled slots.
    * ``is_sliding`` (one bool per layer).

    Called by strategies and the loop: ``reorder_cache``, ``crop``, ``batch_repeat_interleave``,
    ``batch_select_indices``, ``reset``. ``capabilities`` says which of them the backend supports.
    """

    capabilities: frozenset = frozenset()

    # ------------------------------------------------------------------ what a model calls

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs) -> Tuple[torch.Tensor, torch.Tensor]:
        """Store the new keys/values of ``layer_idx`` and return all keys/values to attend over."""
        raise NotImplementedError(f"{type(self).__name__} must implement update(key_states, value_states, layer_idx)")

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Tokens seen so far by ``layer_idx`` (the total, also for sliding layers)."""
        raise NotImplementedError(f"{type(self).__name__} must implement get_seq_length(layer_idx=0)")

    def get_query_offset(self, layer_idx: int = 0) -> int:
        """Position of the first query token of the next forward (= tokens seen)."""
        return self.get_seq_length(layer_idx)

    def get_mask_sizes(self, query_length: int, layer_idx: int = 0) -> Tuple[int, int]:
        """``(kv_length, kv_offset)`` of the attention mask the next forward needs."""
        return self.get_seq_length(layer_idx) + query_length, 0

    @property
    def is_compileable(self) -> bool:
        return "static_shape" in self.capabilities or "compile" in self.capabilities

    @property
    def is_sliding(self) -> List[bool]:
        return [False] * len(self)

    @property
    def is_initialized(self) -> bool:
        """Whether the first ``update`` (or an early initialisation) has allocated the storage."""
        return self.get_seq_length() > 0

    def __len__(self) -> int:
        return 0

    @property
    def max_cache_len(self) -> Optional[int]:
        """The most tokens one layer can hold, or None when it grows without bound."""
        longest = self.get_max_length()
        return None if longest < 0 else longest

    def get_max_length(self, layer_idx: Optional[int] = None) -> int:
        """transformers' spelling of :attr:`max_cache_len`: -1 means unbounded."""
        return -1

    # ------------------------------------------------------------------ what strategies call

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Replace row ``i`` by row ``beam_idx[i]`` (beam search)."""
        raise NotImplementedError(f"{type(self).__name__} cannot reorder rows (beam search needs capability 'reorder')")

    def crop(self, max_length: int) -> None:
        """Drop the most recent tokens: ``max_length > 0`` keeps the first ``max_length`` tokens (a
        no-op if fewer were seen), ``max_length < 0`` removes ``-max_length`` tokens, and ``0`` is a
        no-op (transformers 5 calls ``crop(0)`` to mean "remove nothing")."""
        raise NotImplementedError(f"{type(self).__name__} cannot crop (needs capability 'crop')")

    def batch_repeat_interleave(self, repeats: int) -> None:
        """Repeat every row ``repeats`` times in place (row ``i`` becomes rows ``i*r .. i*r+r-1``)."""
        raise NotImplementedError(f"{type(self).__name__} cannot repeat rows (needs capability 'repeat')")

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep only the rows ``indices``."""
        raise NotImplementedError(f"{type(self).__name__} cannot select rows (needs capability 'select')")

    def reset(self) -> None:
        """Forget every token but keep the storage, so the cache can serve another call."""
        raise NotImplementedError(f"{type(self).__name__} must implement reset()")


# ---------------------------------------------------------------------------------- set-up checks


def _entry_option(entry: Any, name: str, default: Any) -> Any:
    options = getattr(entry, "options", None)
    if isinstance(options, Mapping):
        return options.get(name, default)
    return getattr(entry, name, default)


def _provider(entry: Any) -> str:
    return getattr(entry, "provider", None) or "unknown provider"


def check_capabilities(strategy_name: str, required: Iterable[str], backend_name: str, entry: Any) -> None:
    """Raise GenerationConfigError when cache backend ``backend_name`` lacks a capability the
    strategy needs. ``entry`` is the backend's registry entry (or anything with ``capabilities``)."""
    have = frozenset(_entry_option(entry, "capabilities", frozenset()))
    missing = sorted(frozenset(required) - have)
    if not missing:
        return
    raise GenerationConfigError(
        f"cache_implementation={backend_name!r}: strategy {strategy_name!r} needs cache "
        f"capabilit{'y' if len(missing) == 1 else 'ies'} {', '.join(repr(m) for m in missing)}, which "
        f"cache backend {backend_name!r} (provided by {_provider(entry)}) does not have; it has "
        f"{', '.join(sorted(have)) or 'none'}. Choose a cache_implementation that has "
        f"{' and '.join(missing)} (e.g. 'dynamic') or another decoding strategy."
    )


def _cache_registry(registry: Any):
    """Accept the cache-backend registry itself or the Registries holding it."""
    return getattr(registry, "cache_backends", registry)


def build_cache(registry: Any, name: str, request: CacheRequest) -> Any:
    """Build cache backend ``name`` for ``request``.

    ``registry`` is a plugin manager's ``registries.cache_backends`` (or ``registries``). An unknown
    name raises the registry's PluginError listing the known backends and their providers; a
    ``cache_config`` key the backend did not declare in ``config_keys`` raises GenerationConfigError
    naming the key and the accepted ones.
    """
    registry = _cache_registry(registry)
    entry = registry.lookup(name, asked_by="cache_implementation")
    provider = _provider(entry)

    declared = frozenset(_entry_option(entry, "capabilities", frozenset()))
    unknown_capabilities = declared - CAPABILITIES
    if unknown_capabilities:
        raise PluginError(
            f"cache backend {name!r} ({provider}) declares unknown capabilities "
            f"{sorted(unknown_capabilities)}; known capabilities are {sorted(CAPABILITIES)}"
        )

    cache_config = request.cache_config
    if cache_config is None:
        cache_config = {}
    elif not isinstance(cache_config, Mapping):
        to_dict = getattr(cache_config, "to_dict", None)
        if not callable(to_dict):
            raise GenerationConfigError(
                f"cache_config={cache_config!r} is not a dict: it holds the options of cache backend {name!r}"
            )
        cache_config = to_dict()
    accepted = tuple(_entry_option(entry, "config_keys", ()))
    for key in cache_config:
        if key not in accepted:
            raise GenerationConfigError(
                f"cache_config key {key!r} is not an option of cache backend {name!r} ({provider}).{did_you_mean(key, accepted)} "
                f"It accepts: {', '.join(accepted) or 'no options'}. Remove the key or pick the backend that takes it."
            )
    if request.batch_size < 1:
        raise GenerationConfigError(f"cannot build a cache for batch_size={request.batch_size}: it must be at least 1")
    if request.crop_margin < 0:
        raise GenerationConfigError(f"crop_margin={request.crop_margin} must be >= 0: it counts tokens a later crop may remove")

    cache = entry.obj(attrs.evolve(request, cache_config=dict(cache_config)))
    if cache is None:
        raise PluginError(f"cache backend {name!r} ({provider}) returned None instead of a cache")
    if request.is_encoder_decoder and not hasattr(cache, "cross_attention_cache"):
        raise PluginError(
            f"cache backend {name!r} ({provider}) built a decoder-only cache for an encoder-decoder model; "
            "its build function must wrap it, e.g. genplug.EncoderDecoderCache(cache, genplug.DynamicCache())"
        )
    if not hasattr(cache, "capabilities"):
        try:
            cache.capabilities = declared
        except AttributeError:
            pass
    return cache
