"""The ``quantized`` backend: KIVI-style KV cache quantization written in plain torch.

Recent tokens stay in full precision in a *residual* buffer; once it holds ``residual_length +
q_group_size`` tokens or more, its oldest tokens are quantized in whole groups of ``q_group_size``
tokens and appended to the quantized store, so the residual keeps between ``residual_length`` and
``residual_length + q_group_size - 1`` tokens. Quantization is asymmetric min/max per group::

    scale = (max - min) / (2**nbits - 1)        zero = min
    q = round((x - zero) / scale)               x' = q * scale + zero      |x - x'| <= scale / 2 (+ rounding)

``axis_key`` / ``axis_value`` pick what a group spans: ``-2`` = ``q_group_size`` consecutive tokens of
one channel ("per-channel", KIVI's choice for keys, whose outliers sit in fixed channels) or ``-1`` =
``q_group_size`` consecutive channels of one token ("per-token", KIVI's choice for values). int4 codes
are packed two per byte along the head dimension; scale and zero point are stored in the model dtype.
Tokens are quantized once and never re-quantized, so row reordering and cropping are exact on the
stored codes.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import torch

from genplug import hookimpl
from genplug.cache import CacheRequest
from genplug.errors import GenerationConfigError

from .encoder_decoder import for_request
from .layered_cache import FULL, LayeredCache, layer_plan
from .layers import CacheLayer, SlidingLayer, on_device

CAPABILITIES = frozenset({"crop", "reorder", "select", "repeat"})
PER_TOKEN, PER_CHANNEL = -1, -2


class QuantizedTensor:
    """Group-wise quantized ``[batch, heads, tokens, head_dim]`` codes with their scales and zero points.

    ``scale`` / ``zero`` are ``[B, H, tokens, head_dim // group]`` for per-token groups and
    ``[B, H, tokens // group, head_dim]`` for per-channel groups.
    """

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, nbits: int, group: int,
                 axis: int, head_dim: int) -> None:
        self.codes, self.scale, self.zero = codes, scale, zero
        self.nbits, self.group, self.axis, self.head_dim = nbits, group, axis, head_dim

    @property
    def tokens(self) -> int:
        return self.codes.shape[-2]

    def tensors(self):
        return self.codes, self.scale, self.zero

    def map_rows(self, fn) -> "QuantizedTensor":
        """Apply a batch-dimension operation (index_select, repeat_interleave, ...) to every part."""
        return QuantizedTensor(fn(self.codes), fn(self.scale), fn(self.zero), self.nbits, self.group, self.axis, self.head_dim)

    def tokens_slice(self, start: int, end: int) -> "QuantizedTensor":
        """Tokens ``start .. end-1``; for per-channel groups both must fall on group boundaries."""
        if self.axis == PER_CHANNEL:
            s, e = start // self.group, end // self.group
        else:
            s, e = start, end
        return QuantizedTensor(self.codes[:, :, start:end], self.scale[:, :, s:e], self.zero[:, :, s:e],
                               self.nbits, self.group, self.axis, self.head_dim)

    def append(self, other: "QuantizedTensor") -> "QuantizedTensor":
        return QuantizedTensor(torch.cat([self.codes, other.codes], dim=2), torch.cat([self.scale, other.scale], dim=2),
                               torch.cat([self.zero, other.zero], dim=2), self.nbits, self.group, self.axis, self.head_dim)


def channel_group(group: int, head_dim: int) -> int:
    """Per-token groups span at most the whole head dimension."""
    return min(group, head_dim)


def quantize(x: torch.Tensor, nbits: int, group: int, axis: int) -> QuantizedTensor:
    """Quantize ``x`` (``[B, H, T, D]``) group-wise to ``nbits`` unsigned codes."""
    b, h, t, d = x.shape
    levels = (1 << nbits) - 1
    if axis == PER_TOKEN:
        g = channel_group(group, d)
        grouped = x.float().reshape(b, h, t, d // g, g)
        reduce_dim = -1
    else:
        grouped = x.float().reshape(b, h, t // group, group, d)
        reduce_dim = 3
    low = grouped.amin(dim=reduce_dim, keepdim=True)
    high = grouped.amax(dim=reduce_dim, keepdim=True)
    # Round scale and zero to the storage dtype first, so the codes fit the values dequantization will use.
    scale = ((high - low) / levels).to(x.dtype)
    zero = low.to(x.dtype)
    scale_f = scale.float()
    safe_scale = torch.where(scale_f > 0, scale_f, torch.ones_like(scale_f))
    codes = ((grouped - zero.float()) / safe_scale).round_().clamp_(0, levels).to(torch.uint8).reshape(b, h, t, d)
    if nbits == 4:
        codes = codes[..., 0::2] | (codes[..., 1::2] << 4)
    return QuantizedTensor(codes, scale.squeeze(reduce_dim), zero.squeeze(reduce_dim), nbits, group, axis, d)


def dequantize(q: QuantizedTensor, dtype: torch.dtype) -> torch.Tensor:
    """The ``[B, H, T, D]`` tensor ``q`` stands for, in ``dtype``."""
    codes = q.codes
    if q.nbits == 4:
        codes = torch.stack([codes & 0x0F, codes >> 4], dim=-1).reshape(*codes.shape[:-1], q.head_dim)
    b, h, t, d = codes.shape
    if q.axis == PER_TOKEN:
        g = channel_group(q.group, d)
        grouped = codes.float().reshape(b, h, t, d // g, g)
        scale, zero = q.scale.float().unsqueeze(-1), q.zero.float().unsqueeze(-1)
    else:
        grouped = codes.float().reshape(b, h, t // q.group, q.group, d)
        scale, zero = q.scale.float().unsqueeze(3), q.zero.float().unsqueeze(3)
    return (grouped * scale + zero).reshape(b, h, t, d).to(dtype)


class _QuantizedStream:
    """The quantized store plus full-precision residual of one tensor (keys, or values) of a layer."""

    def __init__(self, nbits: int, group: int, axis: int) -> None:
        self.nbits, self.group, self.axis = nbits, group, axis
        self.quantized: Optional[QuantizedTensor] = None
        self.residual: Optional[torch.Tensor] = None

    @property
    def quantized_tokens(self) -> int:
        return 0 if self.quantized is None else self.quantized.tokens

    def visible(self, new: Optional[torch.Tensor] = None) -> torch.Tensor:
        parts = []
        if self.quantized is not None:
            parts.append(dequantize(self.quantized, (new if new is not None else self.residual).dtype))
        if self.residual is not None:
            parts.append(self.residual)
        if new is not None:
            parts.append(new)
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-2)

    def push(self, new: torch.Tensor, residual_length: int) -> None:
        """Append ``new`` to the residual, then quantize its oldest tokens in whole groups while it
        holds ``residual_length + group`` tokens or more."""
        residual = new if self.residual is None else torch.cat([self.residual, new], dim=-2)
        flush = ((residual.shape[-2] - residual_length) // self.group) * self.group
        if flush > 0:
            block = quantize(residual[:, :, :flush], self.nbits, self.group, self.axis)
            self.quantized = block if self.quantized is None else self.quantized.append(block)
            residual = residual[:, :, flush:]
        self.residual = residual.clone(memory_format=torch.contiguous_format)  # drop the flushed part's memory

    def crop_to(self, target: int) -> None:
        kept_quantized = self.quantized_tokens
        if target >= kept_quantized:
            if self.residual is not None:
                self.residual = self.residual[:, :, : target - kept_quantized]
            return
        granularity = self.group if self.axis == PER_CHANNEL else 1
        boundary = (target // granularity) * granularity
        dtype = self.residual.dtype
        tail = dequantize(self.quantized.tokens_slice(boundary, min(boundary + granularity, kept_quantized)), dtype)
        self.quantized = self.quantized.tokens_slice(0, boundary) if boundary > 0 else None
        self.residual = tail[:, :, : target - boundary]

    def map_rows(self, fn) -> None:
        if self.quantized is not None:
            self.quantized = self.quantized.map_rows(fn)
        if self.residual is not None:
            self.residual = fn(self.residual)

    def tensors(self):
        out = list(self.quantized.tensors()) if self.quantized is not None else []
        if self.residual is not None:
            out.append(self.residual)
        return out


class QuantizedLayer(CacheLayer):
    """A full-attention layer whose older tokens are stored quantized (see the module docstring)."""

    def __init__(self, nbits: int = 4, q_group_size: int = 64, residual_length: int = 128,
                 axis_key: int = PER_CHANNEL, axis_value: int = PER_TOKEN) -> None:
        super().__init__()
        self.nbits, self.q_group_size, self.residual_length = nbits, q_group_size, residual_length
        self.axis_key, self.axis_value = axis_key, axis_value
        self.k = _QuantizedStream(nbits, q_group_size, axis_key)
        self.v = _QuantizedStream(nbits, q_group_size, axis_value)

    def _check_head_dims(self) -> None:
        for name, axis, dim in (("key", self.axis_key, self.shape[2]), ("value", self.axis_value, self.shape[3])):
            if self.nbits == 4 and dim % 2:
                raise GenerationConfigError(f"int4 packs two codes per byte along the {name} head dimension, which is {dim} (odd); use nbits=8")
            if axis == PER_TOKEN and dim % channel_group(self.q_group_size, dim):
                raise GenerationConfigError(
                    f"q_group_size={self.q_group_size} does not divide the {name} head dimension {dim}, and "
                    f"axis_{name}=-1 groups channels; pick a q_group_size that divides {dim}"
                )

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor):
        first = self.shape is None
        self.check_states(key_states, value_states)
        if first:
            self._check_head_dims()
        keys, values = self.k.visible(key_states), self.v.visible(value_states)
        self.k.push(key_states, self.residual_length)
        self.v.push(value_states, self.residual_length)
        self.seen += key_states.shape[-2]
        return keys, values

    @property
    def keys(self) -> Optional[torch.Tensor]:
        return None if self.k.residual is None else self.k.visible()

    @property
    def values(self) -> Optional[torch.Tensor]:
        return None if self.v.residual is None else self.v.visible()

    def get_mask_sizes(self, query_length: int) -> Tuple[int, int]:
        return self.seen + query_length, 0

    def crop_to(self, target: int) -> None:
        self.k.crop_to(target)
        self.v.crop_to(target)
        self.seen = target

    def _rows(self, fn) -> None:
        self.k.map_rows(fn)
        self.v.map_rows(fn)
        if self.shape is not None and self.k.residual is not None:
            self.shape = (self.k.residual.shape[0],) + self.shape[1:]

    def reorder(self, beam_idx: torch.Tensor) -> None:
        self._rows(lambda t: t.index_select(0, on_device(beam_idx, t.device)))

    def select(self, indices) -> None:
        self._rows(lambda t: t[indices.to(t.device) if torch.is_tensor(indices) else indices])

    def repeat(self, repeats: int) -> None:
        self._rows(lambda t: t.repeat_interleave(repeats, dim=0))

    def reset(self) -> None:
        self.k = _QuantizedStream(self.nbits, self.q_group_size, self.axis_key)
        self.v = _QuantizedStream(self.nbits, self.q_group_size, self.axis_value)
        self.seen = 0
        self.forget_shape()

    def tensors(self):
        return [*self.k.tensors(), *self.v.tensors()]


def _check_options(nbits, q_group_size, residual_length, axis_key, axis_value) -> None:
    def is_int(value):
        return isinstance(value, int) and not isinstance(value, bool)

    if nbits not in (4, 8) or not is_int(nbits):
        raise GenerationConfigError(f"cache_config nbits={nbits!r} is not supported: the quantized cache stores 4- or 8-bit codes")
    if not is_int(q_group_size) or q_group_size < 1:
        raise GenerationConfigError(f"cache_config q_group_size={q_group_size!r} must be a positive int (values per scale/zero pair)")
    if not is_int(residual_length) or residual_length < 0:
        raise GenerationConfigError(f"cache_config residual_length={residual_length!r} must be an int >= 0 (recent tokens kept unquantized)")
    for name, axis in (("axis_key", axis_key), ("axis_value", axis_value)):
        if axis not in (PER_TOKEN, PER_CHANNEL) or not is_int(axis):
            raise GenerationConfigError(
                f"cache_config {name}={axis!r} is not supported: -1 groups channels of one token (per-token), "
                "-2 groups tokens of one channel (per-channel)"
            )


class QuantizedCache(LayeredCache):
    """``QuantizedCache(config=None, *, nbits=4, q_group_size=64, residual_length=128, axis_key=-2, axis_value=-1, crop_margin=0)``.

    Full-attention layers are quantized; sliding layers (already bounded by their window) are kept
    in full precision.
    """

    capabilities = CAPABILITIES

    def __init__(self, config: Any = None, *, nbits: int = 4, q_group_size: int = 64, residual_length: int = 128,
                 axis_key: int = PER_CHANNEL, axis_value: int = PER_TOKEN, crop_margin: int = 0) -> None:
        _check_options(nbits, q_group_size, residual_length, axis_key, axis_value)

        def quantized_layer():
            return QuantizedLayer(nbits, q_group_size, residual_length, axis_key, axis_value)

        plan = layer_plan(config)
        if plan is None:
            super().__init__(new_layer=quantized_layer)
        else:
            super().__init__([quantized_layer() if kind == FULL else SlidingLayer(window, crop_margin) for kind, window in plan])


CONFIG_KEYS = ("nbits", "q_group_size", "residual_length", "axis_key", "axis_value")


def build(request: CacheRequest) -> Any:
    options = {key: request.cache_config[key] for key in CONFIG_KEYS if key in request.cache_config}
    return for_request(request, QuantizedCache(request.model_config, crop_margin=request.crop_margin, **options))


@hookimpl
def genplug_register_cache_backends(register):
    register(
        "quantized",
        build,
        capabilities=CAPABILITIES,
        config_keys=CONFIG_KEYS,
        description="KIVI-style int4/int8 group-wise quantization with a full-precision residual window",
    )
