"""Per-layer KV storage shared by the built-in cache backends.

A cache is a list of layers (see ``layered_cache.py``); a layer stores one attention layer's keys and
values, ``[batch, kv_heads, seq, head_dim]``, and knows which absolute positions it returns:

* :class:`FullLayer` -- grows by concatenation, keeps every token.
* :class:`SlidingLayer` -- grows, but keeps only the last ``window - 1 (+ margin)`` tokens.
* :class:`StaticLayer` -- one preallocated buffer written in place; compile / CUDA-graph safe.
* :class:`StaticSlidingLayer` -- a preallocated window buffer.

Every layer counts the tokens it has *seen* (``seen``, also for sliding layers) separately from the
tokens it *stores*. The keys an ``update`` returns are the absolute positions
``kv_offset .. kv_offset + kv_length - 1`` that ``get_mask_sizes`` announced just before it; positions
later than the query are masked by the causal mask, so static buffers may return unfilled slots.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from genplug.errors import GenerationConfigError, GenerationInputError


def is_compiling() -> bool:
    """True while torch.compile traces: host-side bookkeeping must then not read Python counters."""
    return torch.compiler.is_compiling()


def on_device(index: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``index`` on ``device``; the same tensor, without a call into torch, where it is there already (beam search
    reorders every layer's keys and values each step: two no-op ``.to`` calls a layer cost more host time than
    the device comparison)."""
    return index if index.device == device else index.to(device)


def crop_target(max_length: int, seen: int) -> int:
    """The token count ``crop(max_length)`` leaves, with transformers' conventions.

    ``max_length > 0`` keeps the first ``max_length`` tokens (no-op if fewer were seen), ``< 0``
    removes ``-max_length`` tokens, ``0`` removes nothing (transformers 5 calls ``crop(0)``).
    """
    if not isinstance(max_length, int) or isinstance(max_length, bool):
        raise TypeError(f"crop(max_length={max_length!r}): max_length must be an int")
    if max_length == 0:
        return seen
    if max_length > 0:
        return min(max_length, seen)
    if -max_length > seen:
        raise ValueError(
            f"crop({max_length}) would remove {-max_length} tokens but the cache holds only {seen}; "
            f"a negative max_length counts tokens to remove from the end, at most {seen} here"
        )
    return seen + max_length


def zero_together(tensors) -> None:
    """Zero ``tensors`` in a few batched kernels (one per device and dtype) instead of one launch each: a
    16-layer static cache's reset was 48-64 launches, most of a short CUDA-graph call's host time
    (bench/probes/call_overhead.py). Grouped here because a foreach op given mixed dtypes or devices
    falls back to one kernel per tensor."""
    groups = {}
    for tensor in tensors:
        groups.setdefault((tensor.device, tensor.dtype), []).append(tensor)
    for group in groups.values():
        torch._foreach_zero_(group)


class CacheLayer:
    """Base of every layer: dtype/device/shape checks and the common counters."""

    is_sliding = False
    is_compileable = False
    window: Optional[int] = None

    def __init__(self) -> None:
        self.seen = 0
        self.dtype: Optional[torch.dtype] = None
        self.device: Optional[torch.device] = None
        self.shape: Optional[Tuple[int, int, int, int]] = None  # batch, heads, key dim, value dim

    # ------------------------------------------------------------------ checks

    def check_states(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """Raise on new states that cannot join the stored ones; remember them on first use."""
        if key_states.dim() != 4 or value_states.dim() != 4:
            raise GenerationInputError(
                f"cache update got keys of shape {tuple(key_states.shape)} and values of shape "
                f"{tuple(value_states.shape)}; both must be [batch, kv_heads, seq, head_dim]"
            )
        shape = (key_states.shape[0], key_states.shape[1], key_states.shape[-1], value_states.shape[-1])
        if self.dtype is None:
            self.dtype, self.device, self.shape = key_states.dtype, key_states.device, shape
        elif key_states.dtype != self.dtype or key_states.device != self.device:
            raise GenerationInputError(
                f"cache update got {key_states.dtype} keys on {key_states.device}, but this cache layer holds "
                f"{self.dtype} on {self.device}; a cache serves one model in one dtype on one device -- "
                "build a new cache (or call reset()) after moving or casting the model"
            )
        elif shape != self.shape:
            raise GenerationInputError(
                f"cache update got keys/values for (batch, heads, key_dim, value_dim)={shape}, but this cache "
                f"layer holds {self.shape}; use batch_select_indices / batch_repeat_interleave to change the "
                "batch, or reset() the cache for a new call"
            )
        if value_states.dtype != key_states.dtype or value_states.device != key_states.device:
            raise GenerationInputError(
                f"cache update got keys as {key_states.dtype} on {key_states.device} but values as "
                f"{value_states.dtype} on {value_states.device}; they must match"
            )
        if value_states.shape[:3] != key_states.shape[:3]:
            raise GenerationInputError(
                f"cache update got keys {tuple(key_states.shape)} and values {tuple(value_states.shape)} with "
                "different batch, heads or sequence length"
            )

    def forget_shape(self) -> None:
        self.dtype = self.device = self.shape = None

    # ------------------------------------------------------------------ protocol defaults

    @property
    def is_initialized(self) -> bool:
        return self.dtype is not None

    def get_seq_length(self) -> int:
        return self.seen

    def get_query_offset(self):
        return self.get_seq_length()

    def get_max_length(self) -> int:
        return -1

    def crop_problem(self, target: int) -> Optional[str]:
        """Why cropping to ``target`` tokens would not be exact, or None if it would."""
        return None

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors())

    def tensors(self):
        return ()

    def _unsupported(self, what: str, capability: str):
        raise NotImplementedError(
            f"{type(self).__name__} cannot {what}: its buffers have a fixed shape. Use a cache backend with "
            f"capability {capability!r} (e.g. cache_implementation='dynamic')"
        )


class FullLayer(CacheLayer):
    """Keeps every token; grows by concatenation (transformers' ``DynamicLayer``)."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: Optional[torch.Tensor] = None
        self.values: Optional[torch.Tensor] = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor):
        self.check_states(key_states, value_states)
        if self.keys is None:
            # A copy, not the argument itself: it may be a view that keeps a larger tensor alive.
            self.keys = key_states.clone(memory_format=torch.contiguous_format)
            self.values = value_states.clone(memory_format=torch.contiguous_format)
        else:
            self.keys = torch.cat([self.keys, key_states], dim=-2)
            self.values = torch.cat([self.values, value_states], dim=-2)
        self.seen += key_states.shape[-2]
        return self.keys, self.values

    def get_mask_sizes(self, query_length: int) -> Tuple[int, int]:
        return self.seen + query_length, 0

    def crop_to(self, target: int) -> None:
        if self.keys is not None:
            self.keys = self.keys[..., :target, :]
            self.values = self.values[..., :target, :]
        self.seen = target

    def reorder(self, beam_idx: torch.Tensor) -> None:
        if self.keys is not None:
            beam_idx = on_device(beam_idx, self.keys.device)
            self.keys = self.keys.index_select(0, beam_idx)
            self.values = self.values.index_select(0, on_device(beam_idx, self.values.device))

    def select(self, indices: torch.Tensor) -> None:
        if self.keys is not None:
            self.keys = self.keys[indices.to(self.keys.device) if torch.is_tensor(indices) else indices]
            self.values = self.values[indices.to(self.values.device) if torch.is_tensor(indices) else indices]
            self.shape = (self.keys.shape[0],) + self.shape[1:]

    def repeat(self, repeats: int) -> None:
        if self.keys is not None:
            self.keys = self.keys.repeat_interleave(repeats, dim=0)
            self.values = self.values.repeat_interleave(repeats, dim=0)
            self.shape = (self.keys.shape[0],) + self.shape[1:]

    def reset(self) -> None:
        self.keys = self.values = None
        self.seen = 0
        self.forget_shape()

    def tensors(self):
        return () if self.keys is None else (self.keys, self.values)


class SlidingLayer(FullLayer):
    """A sliding-window attention layer that grows but keeps only the tokens the next query can see.

    A query at position ``p`` attends to ``p - window + 1 .. p``, so after an update the layer keeps
    the last ``window - 1`` tokens, plus ``margin`` more so that a later ``crop`` of up to ``margin``
    tokens stays exact. ``update`` returns the stored tokens plus the new ones (they may reach further
    back than the window; the sliding mask hides those).
    """

    is_sliding = True

    def __init__(self, window: int, margin: int = 0) -> None:
        super().__init__()
        if window < 1:
            raise GenerationConfigError(f"sliding_window={window} must be >= 1")
        self.window = window
        self.keep = window - 1 + margin
        self.record_past = False

    @property
    def stored(self) -> int:
        return 0 if self.keys is None else self.keys.shape[-2]

    def activate_past_recording(self) -> None:
        """Keep every token until the next ``crop`` (transformers' assisted decoding calls this)."""
        self.record_past = True

    def _trim(self, force: bool = False) -> None:
        if self.keys is not None and (force or not self.record_past) and self.keys.shape[-2] > self.keep:
            start = self.keys.shape[-2] - self.keep
            self.keys = self.keys[..., start:, :]
            self.values = self.values[..., start:, :]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor):
        keys, values = super().update(key_states, value_states)
        self._trim()
        return keys, values

    def get_mask_sizes(self, query_length: int) -> Tuple[int, int]:
        return self.stored + query_length, self.seen - self.stored

    def get_max_length(self) -> int:
        return self.window

    def crop_problem(self, target: int) -> Optional[str]:
        still_stored = self.stored - (self.seen - target)
        if still_stored < min(self.window - 1, target):
            return (
                f"a sliding layer (window {self.window}) keeps only {self.stored} of its {self.seen} tokens, so it "
                f"cannot go back {self.seen - target} tokens exactly; build the cache with a larger crop_margin "
                "(CacheRequest.crop_margin) or call activate_past_recording() before the tokens to crop arrive"
            )
        return None

    def crop_to(self, target: int) -> None:
        keep = self.stored - (self.seen - target)
        if self.keys is not None:
            self.keys = self.keys[..., :keep, :]
            self.values = self.values[..., :keep, :]
        self.seen = target
        self._trim(force=True)  # a crop ends a stretch of past recording, as in transformers


class StaticLayer(CacheLayer):
    """One preallocated ``[batch, heads, max_cache_len, head_dim]`` buffer, written in place.

    Writes go to positions taken from a device-side counter, so the update has no host
    synchronisation and no shape that depends on the step: torch.compile(fullgraph=True) and CUDA
    graphs can capture it. The Python counter ``seen`` mirrors the device one in eager mode; while a
    compiled graph runs it is left alone and refreshed from the device counter on the next read.
    Returns the whole buffer; the unfilled tail lies after the query and is masked out.
    """

    is_compileable = True

    def __init__(self, max_cache_len: int) -> None:
        super().__init__()
        if max_cache_len < 1:
            raise GenerationConfigError(f"max_cache_len={max_cache_len} must be >= 1 for a static cache")
        self.max_cache_len = max_cache_len
        self.keys: Optional[torch.Tensor] = None
        self.values: Optional[torch.Tensor] = None
        self.position: Optional[torch.Tensor] = None  # 0-d long on the cache device
        self._seen_is_stale = False

    # ------------------------------------------------------------------ storage

    def allocate(self, batch: int, heads: int, key_dim: int, value_dim: int, dtype, device) -> None:
        """Allocate zeroed buffers (zeros, not empty: masked slots must hold finite numbers)."""
        shape = (batch, heads, key_dim, value_dim)
        if self.keys is not None and self.shape == shape and self.dtype == dtype and self.device == torch.device(device):
            return
        self.keys = torch.zeros(batch, heads, self.max_cache_len, key_dim, dtype=dtype, device=device)
        self.values = torch.zeros(batch, heads, self.max_cache_len, value_dim, dtype=dtype, device=device)
        self.position = torch.zeros((), dtype=torch.long, device=device)
        self.dtype, self.device, self.shape = dtype, self.keys.device, shape
        if not is_compiling():
            # Tell dynamo the buffers never move, so CUDA graphs can be captured over them.
            torch._dynamo.mark_static_address(self.keys)
            torch._dynamo.mark_static_address(self.values)
            torch._dynamo.mark_static_address(self.position)

    def early_initialization(self, batch_size, num_heads, head_dim, dtype, device) -> None:
        self.allocate(batch_size, num_heads, head_dim, head_dim, dtype, device)

    def _ensure_allocated(self, key_states, value_states) -> None:
        # An empty layer takes the shape of what arrives (a new call may have another batch size);
        # allocate() keeps the existing buffers when nothing changed.
        if self.keys is None or (not is_compiling() and self.get_seq_length() == 0):
            b, h, _, dk = key_states.shape
            self.allocate(b, h, dk, value_states.shape[-1], key_states.dtype, key_states.device)

    # ------------------------------------------------------------------ protocol

    def get_seq_length(self):
        if is_compiling():
            return self.position if self.position is not None else 0
        if self._seen_is_stale:
            self.seen = int(self.position.item())
            self._seen_is_stale = False
        return self.seen

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor):
        self._ensure_allocated(key_states, value_states)
        self.check_states(key_states, value_states)
        length = key_states.shape[-2]
        if not is_compiling():
            needed = self.get_seq_length() + length
            if needed > self.max_cache_len:
                raise GenerationConfigError(
                    f"static cache is too short: it holds max_cache_len={self.max_cache_len} tokens, but this update "
                    f"needs {needed}; build it with a larger max_cache_len (cache_config={{'max_cache_len': {needed}}}, "
                    "or a larger max_length / max_new_tokens) or use cache_implementation='dynamic'"
                )
        positions = self.position + torch.arange(length, device=self.position.device)
        self.keys.index_copy_(2, positions, key_states)
        self.values.index_copy_(2, positions, value_states)
        self.position.add_(length)
        if is_compiling():
            self._seen_is_stale = True
        else:
            self.seen += length
        return self.keys, self.values

    def mark_written(self, length: int) -> None:
        """Count ``length`` tokens that a model wrote into ``keys``/``values`` itself, at the slots
        from ``position`` on (a fused decode kernel does the write and the attention in one pass)."""
        self.get_seq_length()
        self.position.add_(length)
        self.seen += length

    def get_mask_sizes(self, query_length: int) -> Tuple[int, int]:
        return self.max_cache_len, 0

    def get_max_length(self) -> int:
        return self.max_cache_len

    def crop_to(self, target: int) -> None:
        self.get_seq_length()
        self.seen = target
        if self.position is not None:
            self.position.fill_(target)

    def reorder(self, beam_idx: torch.Tensor) -> None:
        if self.keys is not None:
            beam_idx = on_device(beam_idx, self.keys.device)
            self.keys.copy_(self.keys.index_select(0, beam_idx))  # in place: the address must not change
            self.values.copy_(self.values.index_select(0, beam_idx))

    def select(self, indices) -> None:
        self._unsupported("select rows", "select")

    def repeat(self, repeats: int) -> None:
        self._unsupported("repeat rows", "repeat")

    def reset(self) -> None:
        """Zero the buffers and counters; the buffers stay allocated for the next call."""
        zero_together(self.reset_deferring_zeros([]))

    def reset_deferring_zeros(self, to_zero: list) -> list:
        """Reset the counters and append the buffers that need zeroing to ``to_zero`` (returned), so that a
        cache can zero every layer's buffers together (:func:`zero_together`)."""
        if self.keys is not None:
            to_zero += [self.keys, self.values, self.position]
        self.seen = 0
        self._seen_is_stale = False
        return to_zero

    def tensors(self):
        return () if self.keys is None else (self.keys, self.values)


class StaticSlidingLayer(StaticLayer):
    """A sliding-window layer in a preallocated buffer of ``window + margin`` slots.

    ``stored`` tokens (the absolute positions ``seen - stored .. seen - 1``) sit at the start of the
    buffer. Three update cases, each announced by ``get_mask_sizes`` beforehand:

    * the new tokens fit: written in place, the whole buffer is returned;
    * one token into a full buffer (every decode step once the window is full): the buffer shifts
      left by one and the token goes last -- the buffer is returned, same shape and address;
    * anything else (a prompt longer than the window): the stored and new tokens are returned
      concatenated and the last ``capacity`` of them are kept.

    Under torch.compile only one-token steps run, as a single branch-free device computation (write
    in place or shift, chosen by a tensor condition), with ``seen`` / ``stored`` kept in device
    counters so the graph never depends on them. When ``max_cache_len`` is smaller than the window,
    the buffer has ``max_cache_len`` slots and refuses to overflow, like a full static layer.
    """

    is_sliding = True

    def __init__(self, window: int, max_cache_len: int, margin: int = 0) -> None:
        if window < 1:
            raise GenerationConfigError(f"sliding_window={window} must be >= 1")
        super().__init__(min(window + margin, max_cache_len))
        self.window = window
        self.can_evict = self.max_cache_len >= window
        self.stored = 0
        self.seen_counter: Optional[torch.Tensor] = None  # device mirror of ``seen``; ``position`` mirrors ``stored``

    def allocate(self, batch, heads, key_dim, value_dim, dtype, device) -> None:
        super().allocate(batch, heads, key_dim, value_dim, dtype, device)
        if self.seen_counter is None or self.seen_counter.device != self.keys.device:
            self.seen_counter = torch.zeros((), dtype=torch.long, device=self.keys.device)
            if not is_compiling():
                torch._dynamo.mark_static_address(self.seen_counter)

    def _refresh(self) -> None:
        """Bring the Python counters up to date after compiled steps moved only the device ones."""
        if self._seen_is_stale:
            self.seen = int(self.seen_counter.item())
            self.stored = int(self.position.item())
            self._seen_is_stale = False

    def get_seq_length(self):
        if is_compiling():
            return self.seen_counter if self.seen_counter is not None else 0
        self._refresh()
        return self.seen

    def get_query_offset(self):
        return self.get_seq_length()

    def _fits(self, length: int) -> bool:
        return self.stored + length <= self.max_cache_len

    def _shifts(self, length: int) -> bool:
        return length == 1 and self.stored == self.max_cache_len and self.can_evict

    def get_mask_sizes(self, query_length: int):
        if is_compiling():
            if self.position is None:
                return self.max_cache_len, 0
            shifted = (self.position >= self.max_cache_len).long() if self.can_evict else 0
            return self.max_cache_len, self.seen_counter - self.position + shifted
        self._refresh()
        if self._fits(query_length):
            return self.max_cache_len, self.seen - self.stored
        if self._shifts(query_length):
            return self.max_cache_len, self.seen - self.stored + 1
        return self.stored + query_length, self.seen - self.stored

    def get_max_length(self) -> int:
        return self.window

    def _compiled_step(self, key_states: torch.Tensor, value_states: torch.Tensor):
        if key_states.shape[-2] != 1:
            raise NotImplementedError(
                "a static sliding-window layer compiles one-token steps only; run the prompt (prefill) eagerly"
            )
        capacity = self.max_cache_len
        slot = self.position.clamp(max=capacity - 1).reshape(1)
        for buffer, new in ((self.keys, key_states), (self.values, value_states)):
            moved = torch.where(self.position >= capacity, buffer.roll(-1, dims=2), buffer) if self.can_evict else buffer
            buffer.copy_(moved.index_copy(2, slot, new))
        self.position.copy_((self.position + 1).clamp(max=capacity))
        self.seen_counter.add_(1)
        self._seen_is_stale = True
        return self.keys, self.values

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor):
        self._ensure_allocated(key_states, value_states)
        self.check_states(key_states, value_states)
        if is_compiling():
            return self._compiled_step(key_states, value_states)
        self._refresh()
        length = key_states.shape[-2]
        if self._fits(length):
            positions = self.position + torch.arange(length, device=self.position.device)
            self.keys.index_copy_(2, positions, key_states)
            self.values.index_copy_(2, positions, value_states)
            self.position.add_(length)
            self.stored += length
            keys, values = self.keys, self.values
        elif self._shifts(length):
            self.keys.copy_(torch.cat([self.keys[:, :, 1:], key_states], dim=-2))
            self.values.copy_(torch.cat([self.values[:, :, 1:], value_states], dim=-2))
            keys, values = self.keys, self.values
        elif not self.can_evict:
            raise GenerationConfigError(
                f"static sliding cache is too short: it holds max_cache_len={self.max_cache_len} tokens, less than "
                f"its window of {self.window}, and this update needs {self.stored + length}; build it with a larger "
                "max_cache_len"
            )
        else:
            keys = torch.cat([self.keys[:, :, : self.stored], key_states], dim=-2)
            values = torch.cat([self.values[:, :, : self.stored], value_states], dim=-2)
            self.keys.copy_(keys[:, :, -self.max_cache_len :])
            self.values.copy_(values[:, :, -self.max_cache_len :])
            self.stored = self.max_cache_len
            self.position.fill_(self.stored)
        self.seen += length
        self.seen_counter.add_(length)
        return keys, values

    def crop_problem(self, target: int) -> Optional[str]:
        self._refresh()
        still_stored = self.stored - (self.seen - target)
        if still_stored < min(self.window - 1, target):
            return (
                f"a static sliding layer (window {self.window}, {self.max_cache_len} slots) keeps only {self.stored} of "
                f"its {self.seen} tokens, so it cannot go back {self.seen - target} tokens exactly; build the cache "
                "with a larger crop_margin (CacheRequest.crop_margin)"
            )
        return None

    def crop_to(self, target: int) -> None:
        self._refresh()
        self.stored -= self.seen - target
        self.seen = target
        if self.position is not None:
            self.position.fill_(self.stored)
            self.seen_counter.fill_(target)

    def reset_deferring_zeros(self, to_zero: list) -> list:
        super().reset_deferring_zeros(to_zero)
        self.stored = 0
        if self.seen_counter is not None:
            to_zero.append(self.seen_counter)
        return to_zero
