"""Rotary position embeddings (RoPE) for the native Llama family, with the scalings Llama checkpoints use.

Supported ``rope_type`` values, with transformers' formulas: ``default``, ``linear`` (positions divided
by ``factor``), ``dynamic`` (NTK-aware base growth once positions pass ``max_position_embeddings``) and
``llama3`` (Llama 3.1's per-frequency interpolation); for Phi-3 (``model_type="phi3"``) ``default`` and
``longrope`` (per-frequency short/long factors, switched by the length a forward reaches, and cos/sin
scaled), and a ``partial_rotary_factor`` that rotates only the first part of each head. The inverse
frequencies stay float32 whatever the model's dtype, because casting them to bf16 visibly shifts long
positions.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Tuple

import torch
from torch import nn

from .errors import CheckpointError

# rope_type -> keys its parameters must have (besides rope_type and rope_theta)
_REQUIRED_KEYS = {
    "default": (),
    "linear": ("factor",),
    "dynamic": ("factor",),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
    "longrope": ("short_factor", "long_factor", "original_max_position_embeddings"),
}
# The rope types each model family's transformers code computes (and the native models with it).
_TYPES_OF_FAMILY = {"phi3": ("default", "longrope")}
_LLAMA_TYPES = ("default", "linear", "dynamic", "llama3")


def check_rope_parameters(rope: Dict[str, Any], source: str, model_type: str = "llama") -> None:
    """Raise CheckpointError naming ``source`` when the RoPE parameters are not ones this module computes
    for a ``model_type`` model (only Phi-3 has longrope and partial rotary, as in transformers)."""
    rope_type = rope.get("rope_type")
    types = _TYPES_OF_FAMILY.get(model_type, _LLAMA_TYPES)
    if rope_type not in types:
        raise CheckpointError(
            f"{source} asks for rope_type={rope_type!r}; the native {model_type} models compute "
            f"{', '.join(types)}. Load this checkpoint with transformers instead."
        )
    missing = [key for key in _REQUIRED_KEYS[rope_type] if rope.get(key) is None]
    if missing:
        raise CheckpointError(
            f"{source}: rope_type={rope_type!r} needs {', '.join(missing)} in rope_parameters (or rope_scaling); "
            "add them from the model card or re-save the config with transformers."
        )
    partial = rope.get("partial_rotary_factor", 1.0)
    if model_type != "phi3" and partial != 1.0:
        raise CheckpointError(
            f"{source} sets partial_rotary_factor={partial}; {model_type} models rotate "
            "the whole head. Load this checkpoint with transformers instead."
        )
    if isinstance(partial, bool) or not isinstance(partial, (int, float)) or not 0 < partial <= 1:
        raise CheckpointError(
            f"{source} sets partial_rotary_factor={partial!r}; it is the fraction of each head that RoPE rotates, "
            "a number in (0, 1]. Fix the config (1.0 rotates the whole head)."
        )


def rotary_dim_of(rope: Dict[str, Any], head_dim: int) -> int:
    """How many leading dimensions of each head RoPE rotates: ``int(head_dim * partial_rotary_factor)``,
    transformers' rounding (Phi-4-mini: 96 * 0.75 = 72; the rest of the head passes through)."""
    return int(head_dim * rope.get("partial_rotary_factor", 1.0))


def base_inverse_frequencies(theta: float, head_dim: int, device=None) -> torch.Tensor:
    """``1 / theta^(2i/d)`` for i < d/2: one rotation speed per pair of dimensions."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim
    return 1.0 / (theta**exponents)


def llama3_inverse_frequencies(rope: Dict[str, Any], head_dim: int, device=None) -> torch.Tensor:
    """Llama 3.1's scaling: slow frequencies divided by ``factor``, fast ones kept, a smooth ramp between."""
    inv_freq = base_inverse_frequencies(float(rope["rope_theta"]), head_dim, device)
    factor = rope["factor"]
    low, high = rope["low_freq_factor"], rope["high_freq_factor"]
    old_context = rope["original_max_position_embeddings"]
    wavelength = 2 * math.pi / inv_freq
    scaled = torch.where(wavelength > old_context / low, inv_freq / factor, inv_freq)
    ramp = (old_context / wavelength - low) / (high - low)
    smoothed = (1 - ramp) * scaled / factor + ramp * scaled
    in_between = ~(wavelength < old_context / high) * ~(wavelength > old_context / low)
    return torch.where(in_between, smoothed, scaled)


def longrope_parameters(rope: Dict[str, Any], rotary_dim: int, max_position_embeddings: int, device=None):
    """``(short, long, attention_scaling)`` of Phi-3's LongRoPE: the base frequencies each divided by its
    own short or long factor, and the factor cos/sin are multiplied by (by default
    ``sqrt(1 + ln(s) / ln(original))`` for the context growth ``s = max_position_embeddings / original``,
    or ``rope["factor"]`` where given; 1 when nothing grew)."""
    theta = float(rope["rope_theta"])
    original = rope["original_max_position_embeddings"]
    exponents = torch.arange(0, rotary_dim, 2, dtype=torch.int64, device=device).float() / rotary_dim
    short, long = (1.0 / (torch.tensor(rope[key], dtype=torch.float32, device=device) * theta**exponents)
                   for key in ("short_factor", "long_factor"))
    growth = rope.get("factor")
    if growth is None:
        growth = max_position_embeddings / original
    scaling = rope.get("attention_factor")
    if scaling is None:
        scaling = 1.0 if growth <= 1.0 else math.sqrt(1 + math.log(growth) / math.log(original))
    return short, long, scaling


class RotaryEmbedding(nn.Module):
    """Turns position ids into the ``(cos, sin)`` pair every attention layer rotates queries and keys with.

    The pair is laid out for tensors shaped ``[batch, seq, heads, head_dim]`` and ``sin`` already carries
    the sign of "rotate half", so :func:`apply_rotary` is two multiplies, a roll and an add. With a
    ``partial_rotary_factor`` below 1 the pair covers the first ``rotary_dim`` dimensions of a head only.

    ``longrope`` keeps two sets of frequencies and picks, per forward, the long one when the furthest
    position plus one exceeds ``original_max_position_embeddings`` -- transformers' rule (its
    ``longrope_frequency_update``), on the device, so a captured step switches without a host read.
    """

    def __init__(self, rope: Dict[str, Any], head_dim: int, max_position_embeddings: int, device=None):
        super().__init__()
        self.rope_type = rope["rope_type"]
        self.head_dim = head_dim
        self.rotary_dim = rotary_dim_of(rope, head_dim)
        self.max_position_embeddings = max_position_embeddings
        self.rope = dict(rope)
        self.attention_scaling = 1.0  # only longrope rescales cos/sin
        self.long_inv_freq = None  # longrope's frequencies past the original context
        theta = float(rope["rope_theta"])
        device = device or "cpu"  # explicit, so that building the model on the meta device keeps real values
        if self.rope_type == "llama3":
            inv_freq = llama3_inverse_frequencies(rope, head_dim, device)
        elif self.rope_type == "longrope":
            inv_freq, self.long_inv_freq, self.attention_scaling = longrope_parameters(
                rope, self.rotary_dim, max_position_embeddings, device)
        else:
            inv_freq = base_inverse_frequencies(theta, self.rotary_dim, device)
            if self.rope_type == "linear":
                inv_freq = inv_freq / rope["factor"]
        # A plain attribute, not a buffer, so model.to(torch.bfloat16) cannot round it; forward() moves
        # it to the device of the positions when the model has moved.
        self.inv_freq = inv_freq
        # (cos, sin) tables by position, kept for the module's life: a captured CUDA graph reads them by address
        self.tables: Dict[Tuple[torch.dtype, torch.device], Tuple[torch.Tensor, torch.Tensor]] = {}
        self.retired_tables = []

    def tabulates(self) -> bool:
        """Whether ``(cos, sin)`` follow from the position alone, so :meth:`table` can hold them: not for
        ``dynamic`` and ``longrope``, whose frequencies depend on the furthest position of the forward."""
        return self.rope_type not in ("dynamic", "longrope")

    def table(self, length: int, dtype: torch.dtype, device) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(cos, sin)`` ``[rows >= length, rotary_dim]`` for positions ``0 .. rows - 1``: row ``p`` holds
        the bits that :meth:`forward` computes for position ``p`` (the same elementwise ops). A decode
        kernel reads the row of its token's position instead of the step launching RoPE's half-dozen
        small kernels. Grown to the next power of two when too short; a replaced table is kept, not
        freed, since a CUDA graph captured earlier still reads it."""
        key = (dtype, torch.device(device))
        held = self.tables.get(key)
        if held is not None and held[0].shape[0] >= length:
            return held
        if not self.tabulates():
            raise ValueError(f"{self.rope_type} RoPE has no table: its angles depend on the whole forward")
        rows = 1 << max(0, int(length) - 1).bit_length()
        cos, sin = self.forward(torch.arange(rows, device=device)[None], dtype)
        table = (cos.reshape(rows, -1).contiguous(), sin.reshape(rows, -1).contiguous())
        if held is not None:
            self.retired_tables.append(held)
        self.tables[key] = table
        return table

    def _dynamic_inverse_frequencies(self, position_ids: torch.Tensor) -> torch.Tensor:
        """NTK-aware growth of the base once the furthest position passes the trained length (no host sync)."""
        trained = self.max_position_embeddings
        seq_len = position_ids.max() + 1
        factor = self.rope["factor"]
        base = float(self.rope["rope_theta"]) * ((factor * seq_len / trained) - (factor - 1)) ** (
            self.head_dim / (self.head_dim - 2)
        )
        exponents = torch.arange(0, self.head_dim, 2, dtype=torch.int64, device=position_ids.device).float() / self.head_dim
        grown = 1.0 / (base**exponents)
        return torch.where(seq_len > trained, grown, self.inv_freq)

    def _longrope_inverse_frequencies(self, position_ids: torch.Tensor) -> torch.Tensor:
        """The short factors' frequencies, or the long ones where a position reaches past the original
        context (one choice for the whole forward, as in transformers)."""
        if self.long_inv_freq.device != position_ids.device:
            self.long_inv_freq = self.long_inv_freq.to(position_ids.device)
        beyond = position_ids.max() + 1 > self.rope["original_max_position_embeddings"]
        return torch.where(beyond, self.long_inv_freq, self.inv_freq)

    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(cos, sin)`` shaped ``[batch or 1, seq, 1, rotary_dim]`` in ``dtype`` for ``position_ids [batch, seq]``."""
        inv_freq = self.inv_freq
        if inv_freq.device != position_ids.device:
            inv_freq = self.inv_freq = inv_freq.to(position_ids.device)
        if self.rope_type == "dynamic":
            inv_freq = self._dynamic_inverse_frequencies(position_ids)
        elif self.rope_type == "longrope":
            inv_freq = self._longrope_inverse_frequencies(position_ids)
        angles = position_ids[..., None].float() * inv_freq
        cos, sin = angles.cos(), angles.sin()
        if self.attention_scaling != 1.0:
            cos, sin = cos * self.attention_scaling, sin * self.attention_scaling
        # [cos, cos] and [-sin, sin]: rotate_half(x) * [sin, sin] == roll(x, d/2) * [-sin, sin]
        cos = torch.cat((cos, cos), dim=-1)
        sin = torch.cat((-sin, sin), dim=-1)
        return cos.to(dtype).unsqueeze(2), sin.to(dtype).unsqueeze(2)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x [batch, seq, heads, head_dim]`` by the angles in ``cos``/``sin`` from RotaryEmbedding;
    where they cover fewer dimensions than a head (partial rotary), the rest of it passes unchanged."""
    rotary_dim = cos.shape[-1]
    if rotary_dim == x.shape[-1]:
        return x * cos + x.roll(rotary_dim // 2, dims=-1) * sin
    rotated = x[..., :rotary_dim]
    return torch.cat((rotated * cos + rotated.roll(rotary_dim // 2, dims=-1) * sin, x[..., rotary_dim:]), dim=-1)
