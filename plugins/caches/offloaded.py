"""The ``offloaded`` and ``offloaded_static`` backends: full-attention layers live in host memory.

Only two layers are on the accelerator at any time, in two staging *slots* the cache owns. While
layer ``i`` runs from one slot, layer ``i + 1`` (after the last layer: layer 0, for the next step) is
copied into the other slot on a side CUDA stream, so the copy overlaps the computation::

    update(i):  wait for slot A (prefetched)  ->  write the new tokens into slot A and, with a
                non-blocking copy, into host memory  ->  start copying layer i+1 into slot B
                on the side stream  ->  return slot A

Device memory is therefore two layers' worth instead of all of them. Sliding-window layers are small
and stay on the device. Host buffers are pinned so the copies are asynchronous. On a machine without
CUDA everything works the same way with plain synchronous copies (the "device" is the CPU).

Host buffers and slots are stored token-major, ``[tokens, batch, heads, head_dim]``, so that "the
first ``n`` tokens" is one contiguous block: a copy of a strided slice between host and device would
make PyTorch gather it through unpinned memory, synchronously. ``update`` returns the usual
``[batch, heads, tokens, head_dim]`` layout as a permuted view.

The tensors ``update`` returns live in a slot and are overwritten two layers later: use them for the
layer's attention, as models do, and do not keep them.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

import torch

from genplug import hookimpl
from genplug.cache import CacheRequest
from genplug.errors import GenerationConfigError

from .encoder_decoder import for_request
from .layered_cache import FULL, LayeredCache, layer_plan
from .layers import CacheLayer, SlidingLayer, StaticSlidingLayer
from .static import resolve_max_cache_len

CAPABILITIES = frozenset({"crop", "reorder", "select", "repeat", "offload"})
STATIC_CAPABILITIES = frozenset({"static_shape", "crop", "reorder", "offload"})


def batch_major(tensor: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    """View a token-major ``[T, B, H, D]`` tensor as ``[B, H, T, D]`` (``inverse``: the other way round)."""
    return tensor.permute(2, 0, 1, 3) if inverse else tensor.permute(1, 2, 0, 3)


def _host_zeros(shape, dtype, pin: bool) -> torch.Tensor:
    return torch.zeros(shape, dtype=dtype, device="cpu", pin_memory=pin)


class HostLayer(CacheLayer):
    """A full-attention layer stored in host memory; the cache stages it on the device to use it.

    ``capacity`` fixes the buffer length (``offloaded_static``); without it the host buffer starts at
    ``initial_capacity`` tokens and doubles when full.
    """

    def __init__(self, capacity: Optional[int] = None, initial_capacity: int = 256) -> None:
        super().__init__()
        if capacity is not None and capacity < 1:
            raise GenerationConfigError(f"max_cache_len={capacity} must be >= 1 for an offloaded static cache")
        self.capacity_limit = capacity
        self.initial_capacity = max(1, initial_capacity)
        self.host_keys: Optional[torch.Tensor] = None
        self.host_values: Optional[torch.Tensor] = None
        self._pending_device: Optional[torch.device] = None  # set while device-to-host writes may be in flight

    @property
    def static(self) -> bool:
        return self.capacity_limit is not None

    @property
    def is_compileable(self) -> bool:
        return self.static  # static layers return their padded buffer, see LayeredCache.is_compileable

    @property
    def capacity(self) -> int:
        return 0 if self.host_keys is None else self.host_keys.shape[0]

    def wait_host(self) -> None:
        """Block until pending device-to-host writes have landed (before the host reads or edits them).

        Host reads are rare (row operations, ``.keys``), so waiting for the whole stream there is
        cheaper than recording an event at every write."""
        if self._pending_device is not None:
            torch.cuda.current_stream(self._pending_device).synchronize()
            self._pending_device = None

    @property
    def keys(self) -> Optional[torch.Tensor]:
        self.wait_host()
        return None if self.host_keys is None else batch_major(self.host_keys[: self.visible])

    @property
    def values(self) -> Optional[torch.Tensor]:
        self.wait_host()
        return None if self.host_values is None else batch_major(self.host_values[: self.visible])

    @property
    def visible(self) -> int:
        return self.capacity if self.static else self.seen

    def reserve(self, needed: int) -> None:
        """Make the host buffers hold ``needed`` tokens (allocating or growing them)."""
        if self.static and needed > self.capacity_limit:
            raise GenerationConfigError(
                f"offloaded static cache is too short: it holds max_cache_len={self.capacity_limit} tokens, but this "
                f"update needs {needed}; build it with a larger max_cache_len (cache_config={{'max_cache_len': {needed}}}) "
                "or use cache_implementation='offloaded'"
            )
        batch, heads, key_dim, value_dim = self.shape
        if (self.host_keys is not None and needed <= self.capacity and self.host_keys.shape[1:3] == (batch, heads)
                and self.host_keys.dtype == self.dtype):
            return
        new_capacity = self.capacity_limit if self.static else max(self.initial_capacity, needed, 2 * self.capacity)
        pin = self.device.type == "cuda"
        keys = _host_zeros((new_capacity, batch, heads, key_dim), self.dtype, pin)
        values = _host_zeros((new_capacity, batch, heads, value_dim), self.dtype, pin)
        if self.host_keys is not None and self.seen and self.host_keys.shape[1:3] == (batch, heads):
            self.wait_host()
            keys[: self.seen] = self.host_keys[: self.seen]
            values[: self.seen] = self.host_values[: self.seen]
        self.host_keys, self.host_values = keys, values

    def write_back(self, slot_keys: torch.Tensor, slot_values: torch.Tensor, start: int, end: int) -> None:
        """Copy tokens ``start .. end-1`` from the device slot to host memory, without waiting."""
        self.host_keys[start:end].copy_(slot_keys[start:end], non_blocking=True)
        self.host_values[start:end].copy_(slot_values[start:end], non_blocking=True)
        if slot_keys.is_cuda:
            self._pending_device = slot_keys.device

    def get_mask_sizes(self, query_length: int) -> Tuple[int, int]:
        if self.static:
            return self.capacity_limit, 0
        return self.seen + query_length, 0

    def get_max_length(self) -> int:
        return self.capacity_limit if self.static else -1

    def crop_to(self, target: int) -> None:
        self.seen = target  # tokens after ``target`` are overwritten by the next update

    def _rows(self, fn) -> None:
        if self.host_keys is None or self.shape is None:  # nothing stored (or reset): nothing to move
            return
        self.wait_host()
        keys, values = fn(self.host_keys), fn(self.host_values)
        if self.device.type == "cuda":
            keys, values = keys.pin_memory(), values.pin_memory()
        self.host_keys, self.host_values = keys, values
        self.shape = (keys.shape[1],) + self.shape[1:]

    def reorder(self, beam_idx: torch.Tensor) -> None:
        self._rows(lambda t: t.index_select(1, beam_idx.cpu()))

    def select(self, indices) -> None:
        if self.static:
            self._unsupported("select rows", "select")
        self._rows(lambda t: t[:, indices.cpu() if torch.is_tensor(indices) else indices])

    def repeat(self, repeats: int) -> None:
        if self.static:
            self._unsupported("repeat rows", "repeat")
        self._rows(lambda t: t.repeat_interleave(repeats, dim=1))

    def reset(self) -> None:
        """Forget the tokens; keep the host buffers for the next call when its shape matches."""
        self.wait_host()
        self.seen = 0
        self.forget_shape()

    def tensors(self):
        return () if self.host_keys is None else (self.host_keys, self.host_values)


class OffloadingCache(LayeredCache):
    """Host layers staged through two device slots, with prefetch on a side stream (see the module)."""

    def __init__(self, layers=(), new_layer=None) -> None:
        super().__init__(layers, new_layer)
        self._slot_buffers: List[Optional[Tuple[torch.Tensor, torch.Tensor]]] = [None, None]
        self._slot_layer: List[Optional[int]] = [None, None]
        self._slot_ready: List[Optional[torch.cuda.Event]] = [None, None]
        self._slot_on_stream = [False, False]  # record_stream done for the slot's current buffers
        self._last_slot = 1
        self._stream: Optional[torch.cuda.Stream] = None
        self._device: Optional[torch.device] = None

    # ------------------------------------------------------------------ slots

    def _wait_slot(self, slot: int) -> None:
        event = self._slot_ready[slot]
        if event is not None:
            torch.cuda.current_stream(self._device).wait_event(event)
            self._slot_ready[slot] = None

    def _slot(self, slot: int, layer: HostLayer, needed: int, keep: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """The slot's buffers, (re)allocated to hold ``needed`` tokens of ``layer``'s shape; the first
        ``keep`` tokens survive a reallocation."""
        batch, heads, key_dim, value_dim = layer.shape
        buffers = self._slot_buffers[slot]
        if buffers is not None:
            k, v = buffers
            fits = k.shape[0] >= needed and k.shape[1:] == (batch, heads, key_dim) and v.shape[3] == value_dim \
                and k.dtype == layer.dtype and k.device == layer.device
            if fits:
                return buffers
        self._wait_slot(slot)
        # Grow by a quarter (reallocations stay rare) but never past the host buffer, which bounds the layer.
        capacity = layer.capacity_limit if layer.static else min(max(needed + needed // 4, 16), layer.capacity)
        k = torch.zeros(capacity, batch, heads, key_dim, dtype=layer.dtype, device=layer.device)
        v = torch.zeros(capacity, batch, heads, value_dim, dtype=layer.dtype, device=layer.device)
        if buffers is not None and keep:
            k[:keep] = buffers[0][:keep]
            v[:keep] = buffers[1][:keep]
        self._slot_buffers[slot] = (k, v)
        self._slot_on_stream[slot] = False
        return k, v

    def _resident(self, layer_idx: int, layer: HostLayer, needed: int) -> int:
        """The slot holding ``layer_idx``'s tokens on the device, loading it now if no prefetch did."""
        for slot in (0, 1):
            if self._slot_layer[slot] == layer_idx:
                self._wait_slot(slot)
                self._slot(slot, layer, needed, keep=layer.seen)
                self._last_slot = slot
                return slot
        slot = 1 - self._last_slot
        self._wait_slot(slot)
        k, v = self._slot(slot, layer, needed, keep=0)
        if layer.seen:
            k[: layer.seen].copy_(layer.host_keys[: layer.seen], non_blocking=True)
            v[: layer.seen].copy_(layer.host_values[: layer.seen], non_blocking=True)
        self._slot_layer[slot] = layer_idx
        self._last_slot = slot
        return slot

    def _next_host_layer(self, layer_idx: int) -> Optional[int]:
        count = len(self.layers)
        for step in range(1, count + 1):
            candidate = (layer_idx + step) % count
            if isinstance(self.layers[candidate], HostLayer):
                return candidate
        return None

    def _prefetch(self, layer_idx: int, slot: int) -> None:
        """Start copying ``layer_idx`` into ``slot``; on CUDA on the side stream, else right away."""
        layer = self.layers[layer_idx]
        if self._slot_layer[slot] == layer_idx or layer.seen == 0 or layer.shape is None:
            return
        k, v = self._slot(slot, layer, layer.seen, keep=0)
        self._slot_layer[slot] = layer_idx
        source_k, source_v = layer.host_keys[: layer.seen], layer.host_values[: layer.seen]
        if not k.is_cuda:
            k[: layer.seen].copy_(source_k)
            v[: layer.seen].copy_(source_v)
            return
        if self._stream is None:
            self._stream = torch.cuda.Stream(device=k.device)
        # The side stream must not start before the work already queued (the host copy of this layer's
        # last tokens, and the attention still reading this slot's previous layer).
        self._stream.wait_stream(torch.cuda.current_stream(k.device))
        with torch.cuda.stream(self._stream):
            k[: layer.seen].copy_(source_k, non_blocking=True)
            v[: layer.seen].copy_(source_v, non_blocking=True)
            self._slot_ready[slot] = self._stream.record_event()
        if not self._slot_on_stream[slot]:
            # Tell the allocator the side stream uses these buffers, so freeing them waits for its copies.
            k.record_stream(self._stream)
            v.record_stream(self._stream)
            self._slot_on_stream[slot] = True

    def _forget_slots(self) -> None:
        self._slot_layer = [None, None]

    # ------------------------------------------------------------------ protocol

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        layer = self._layer(layer_idx)
        if not isinstance(layer, HostLayer):
            return layer.update(key_states, value_states)
        layer.check_states(key_states, value_states)
        self._device = key_states.device
        start, end = layer.seen, layer.seen + key_states.shape[-2]
        layer.reserve(end)
        slot = self._resident(layer_idx, layer, end)
        keys, values = self._slot_buffers[slot]
        keys[start:end] = batch_major(key_states, inverse=True)
        values[start:end] = batch_major(value_states, inverse=True)
        layer.write_back(keys, values, start, end)
        layer.seen = end
        following = self._next_host_layer(layer_idx)
        if following is not None and following != layer_idx:
            self._prefetch(following, 1 - slot)
        visible = layer.capacity_limit if layer.static else end
        return batch_major(keys[:visible]), batch_major(values[:visible])

    def resident_layers(self) -> List[int]:
        """Indices of the host layers whose tokens currently sit in a device slot (at most two)."""
        return [index for index in self._slot_layer if index is not None]

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self._forget_slots()
        super().reorder_cache(beam_idx)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._forget_slots()
        super().batch_select_indices(indices)

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._forget_slots()
        super().batch_repeat_interleave(repeats)

    def reset(self) -> None:
        self._forget_slots()
        super().reset()

    def extra_tensors(self):
        return [t for buffers in self._slot_buffers if buffers is not None for t in buffers]


def _layers(config, make_host, make_sliding):
    plan = layer_plan(config)
    if plan is None:
        return [], make_host
    return [make_host() if kind == FULL else make_sliding(window) for kind, window in plan], None


class OffloadedCache(OffloadingCache):
    """``OffloadedCache(config=None, *, initial_capacity=256, crop_margin=0)``: host layers that grow."""

    capabilities = CAPABILITIES

    def __init__(self, config: Any = None, *, initial_capacity: int = 256, crop_margin: int = 0) -> None:
        layers, new_layer = _layers(config, lambda: HostLayer(None, initial_capacity),
                                    lambda window: SlidingLayer(window, crop_margin))
        super().__init__(layers, new_layer)


class OffloadedStaticCache(OffloadingCache):
    """``OffloadedStaticCache(config, max_cache_len, *, crop_margin=0)``: fixed-size host layers and slots."""

    capabilities = STATIC_CAPABILITIES

    def __init__(self, config: Any, max_cache_len: int, *, crop_margin: int = 0) -> None:
        layers, new_layer = _layers(config, lambda: HostLayer(max_cache_len),
                                    lambda window: StaticSlidingLayer(window, max_cache_len, crop_margin))
        super().__init__(layers, new_layer)


def build(request: CacheRequest) -> Any:
    cache = OffloadedCache(request.model_config, initial_capacity=request.max_cache_len, crop_margin=request.crop_margin)
    return for_request(request, cache)


def build_static(request: CacheRequest) -> Any:
    length = resolve_max_cache_len(request, "offloaded_static")
    return for_request(request, OffloadedStaticCache(request.model_config, length, crop_margin=request.crop_margin))


@hookimpl
def genplug_register_cache_backends(register):
    register(
        "offloaded",
        build,
        capabilities=CAPABILITIES,
        config_keys=(),
        description="full layers in host memory, two staged on the device, next layer prefetched on a side stream",
    )
    register(
        "offloaded_static",
        build_static,
        capabilities=STATIC_CAPABILITIES,
        config_keys=("max_cache_len",),
        description="like offloaded, with fixed-size host buffers and device slots",
    )
