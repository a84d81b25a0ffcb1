"""Rotary position embeddings (RoPE) for the native Llama family, with the scalings Llama checkpoints use.

Supported ``rope_type`` values, with transformers' formulas: ``default``, ``linear`` (positions divided
by ``factor``), ``dynamic`` (NTK-aware base growth once positions pass ``max_position_embeddings``) and
``llama3`` (Llama 3.1's per-frequency interpolation). The inverse frequencies stay float32 whatever the
model's dtype, because casting them to bf16 visibly shifts long positions.
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
}


def check_rope_parameters(rope: Dict[str, Any], source: str) -> None:
    """Raise CheckpointError naming ``source`` when the RoPE parameters are not ones this module computes."""
    rope_type = rope.get("rope_type")
    if rope_type not in _REQUIRED_KEYS:
        raise CheckpointError(
            f"{source} asks for rope_type={rope_type!r}; the native models compute "
            f"{', '.join(_REQUIRED_KEYS)}. Load this checkpoint with transformers instead."
        )
    missing = [key for key in _REQUIRED_KEYS[rope_type] if rope.get(key) is None]
    if missing:
        raise CheckpointError(
            f"{source}: rope_type={rope_type!r} needs {', '.join(missing)} in rope_parameters (or rope_scaling); "
            "add them from the model card or re-save the config with transformers."
        )
    if rope.get("partial_rotary_factor", 1.0) != 1.0:
        raise CheckpointError(
            f"{source} sets partial_rotary_factor={rope['partial_rotary_factor']}; Llama-family models rotate "
            "the whole head. Load this checkpoint with transformers instead."
        )


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


class RotaryEmbedding(nn.Module):
    """Turns position ids into the ``(cos, sin)`` pair every attention layer rotates queries and keys with.

    The pair is laid out for tensors shaped ``[batch, seq, heads, head_dim]`` and ``sin`` already carries
    the sign of "rotate half", so :func:`apply_rotary` is two multiplies, a roll and an add.
    """

    def __init__(self, rope: Dict[str, Any], head_dim: int, max_position_embeddings: int, device=None):
        super().__init__()
        self.rope_type = rope["rope_type"]
        self.head_dim = head_dim
        self.max_position_embeddings = max_position_embeddings
        self.rope = dict(rope)
        self.attention_scaling = 1.0  # none of the supported types rescales cos/sin
        theta = float(rope["rope_theta"])
        device = device or "cpu"  # explicit, so that building the model on the meta device keeps real values
        if self.rope_type == "llama3":
            inv_freq = llama3_inverse_frequencies(rope, head_dim, device)
        else:
            inv_freq = base_inverse_frequencies(theta, head_dim, device)
            if self.rope_type == "linear":
                inv_freq = inv_freq / rope["factor"]
        # A plain attribute, not a buffer, so model.to(torch.bfloat16) cannot round it; forward() moves
        # it to the device of the positions when the model has moved.
        self.inv_freq = inv_freq

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

    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(cos, sin)`` shaped ``[batch or 1, seq, 1, head_dim]`` in ``dtype`` for ``position_ids [batch, seq]``."""
        inv_freq = self.inv_freq
        if inv_freq.device != position_ids.device:
            inv_freq = self.inv_freq = inv_freq.to(position_ids.device)
        if self.rope_type == "dynamic":
            inv_freq = self._dynamic_inverse_frequencies(position_ids)
        angles = position_ids[..., None].float() * inv_freq
        cos, sin = angles.cos(), angles.sin()
        # [cos, cos] and [-sin, sin]: rotate_half(x) * [sin, sin] == roll(x, d/2) * [-sin, sin]
        cos = torch.cat((cos, cos), dim=-1)
        sin = torch.cat((-sin, sin), dim=-1)
        return cos.to(dtype).unsqueeze(2), sin.to(dtype).unsqueeze(2)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x [batch, seq, heads, head_dim]`` by the angles in ``cos``/``sin`` from RotaryEmbedding."""
    return x * cos + x.roll(x.shape[-1] // 2, dims=-1) * sin
