"""The top-p threshold over top-k candidates in one Triton kernel, for the CUDA-graph loop.

:func:`.truncation.nucleus_threshold` is ~24 PyTorch operations on a ``[rows, k]`` tensor (exp, integer
masses, a cumulative sum, a gather...): each a kernel launch of a few microseconds on a few hundred
bytes, run every sampled token. Here one program per row does the same arithmetic -- ``exp(v - max)``
with CUDA's ``expf`` (libdevice, as PyTorch's kernels), masses scaled by 2**40 and truncated to
integers, the float64 limit ``ceil(total * top_p)`` -- so it decides exactly as the PyTorch version.
:func:`.truncation.nucleus_threshold` imports and uses it while a CUDA graph is captured, for
k <= 1,024 (Triton's interpreter in the tests, with its own ``exp``).
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice


@triton.jit
def _nucleus_kernel(values_ptr, threshold_ptr, extra_ptr, top_p_ptr, out_ptr, k, min_keep, mass_scale,
                    HAS_THRESHOLD: tl.constexpr, HAS_EXTRA: tl.constexpr, ACCURATE_EXP: tl.constexpr,
                    BLOCK: tl.constexpr):
    row = tl.program_id(0)
    i = tl.arange(0, BLOCK)
    inside = i < k
    values = tl.load(values_ptr + row * k + i, mask=inside, other=float("-inf"))
    top = tl.load(values_ptr + row * k)
    top = tl.where(top == float("-inf"), 0.0, top)  # an all -inf row gives zero masses, not nan
    if ACCURATE_EXP:
        relative = libdevice.exp(values - top)
    else:
        relative = tl.exp(values - top)
    mass = (relative * mass_scale).to(tl.int64)
    if HAS_THRESHOLD:
        threshold = tl.load(threshold_ptr + row)
        mass = tl.where(values < threshold, 0, mass)
    mass = tl.where(inside, mass, 0)
    total = tl.sum(mass, axis=0)
    if HAS_EXTRA:
        total += tl.load(extra_ptr + row) * tl.sum(tl.where(i == k - 1, mass, 0), axis=0)
    limit = tl.ceil(total.to(tl.float64) * tl.load(top_p_ptr)).to(tl.int64)
    before = tl.cumsum(mass, axis=0) - mass
    count = tl.sum(tl.where(inside & (before < limit), 1, 0), axis=0)
    count = tl.minimum(tl.maximum(count, min_keep), k)
    found = tl.sum(tl.where(i == count - 1, values, 0.0), axis=0)
    if HAS_THRESHOLD:
        found = tl.maximum(threshold, found)
    tl.store(out_ptr + row, found)


def nucleus_threshold(values: torch.Tensor, threshold: Optional[torch.Tensor], extra: Optional[torch.Tensor],
                      top_p: float, min_keep: int, mass_scale: float) -> torch.Tensor:
    """:func:`.truncation.nucleus_threshold` in one kernel: ``[rows, 1]`` thresholds."""
    rows, k = values.shape
    values = values.contiguous()
    out = torch.empty(rows, 1, dtype=values.dtype, device=values.device)
    top_p_tensor = torch.full((1,), top_p, dtype=torch.float64, device=values.device)
    _nucleus_kernel[(rows,)](
        values, threshold.contiguous() if threshold is not None else out,
        extra.contiguous() if extra is not None else out, top_p_tensor, out, k, min_keep, mass_scale,
        HAS_THRESHOLD=threshold is not None, HAS_EXTRA=extra is not None, ACCURATE_EXP=values.is_cuda,
        BLOCK=max(16, triton.next_power_of_2(k)), num_warps=4,
    )
    return out
