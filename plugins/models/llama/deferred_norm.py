"""A one-row residual add whose RMS norm is left to the GEMV that reads it (a step variant, off by default).

At batch 1 the add+norm kernel (:func:`.decode_kernels.add_rms_norm`) is one program: the norm needs
the whole row's sum of squares, so one multiprocessor reads the previous GEMV's partial sums (8 x 2,048
floats for the 1B shape) while the rest of the GPU waits -- ~3 us of each layer's critical path, twice
a layer (bench/probes/step_timeline.py, H100, sixteenth session). Here the add runs in many programs, each
over a slice of the row, leaving the summed residual and the slice's sum of squares; the consuming GEMV
reads ``residual * weight`` and multiplies its sums by 1/rms from those partial sums
(:class:`.decode_kernels.PendingNorm`). The same map, rounded differently: the normed input is not rounded
to the model dtype before the matmul.

:data:`DEFERRED_NORM` switches it on for :mod:`.fused_step` (bench/probes/step_variants.py times it).
:data:`RESIDUAL_IN_GEMV` goes further: the output and down projections' GEMVs do the add themselves
(``gemv(..., residual=)``: one split, so each program owns whole output columns and leaves their sum of
squares), and no add kernel runs at all -- the step's only remaining norm kernel is the first layer's,
which looks the token up.
"""

from __future__ import annotations

from typing import Tuple

import torch
import triton
import triton.language as tl

from genplug import triton_support

from .decode_kernels import PendingNorm, _after_previous_kernel, _as_parts, _summed

DEFERRED_NORM = False
# The add in the epilogue of the GEMV before instead (the output and down projections, one split each, so
# each program owns whole output columns: :class:`.decode_kernels.SummedResidual`): no add kernel at all,
# two kernel boundaries a layer fewer.
RESIDUAL_IN_GEMV = False
SLICE = 128  # columns a program adds: 16 programs for a 2,048-wide row


@triton.jit
def _add_squares_kernel(x_ptr, delta_ptr, delta_parts_stride, sum_ptr, squares_ptr, width,
                        DELTA_PARTS: tl.constexpr, BLOCK: tl.constexpr, PDL: tl.constexpr):
    row = tl.program_id(0)
    piece = tl.program_id(1)
    cols = piece * BLOCK + tl.arange(0, BLOCK)
    inside = cols < width
    _after_previous_kernel(PDL)
    x = tl.load(x_ptr + row * width + cols, mask=inside, other=0.0).to(tl.float32)
    x += _summed(delta_ptr, row * width + cols, inside, DELTA_PARTS, delta_parts_stride)
    x = x.to(sum_ptr.dtype.element_ty)  # the residual stream is stored in the model dtype
    tl.store(sum_ptr + row * width + cols, x, mask=inside)
    x = x.to(tl.float32)
    tl.store(squares_ptr + row * tl.num_programs(1) + piece, tl.sum(x * x, axis=0))


def add_deferring_norm(x: torch.Tensor, delta, weight: torch.Tensor, eps: float) -> Tuple[torch.Tensor, PendingNorm]:
    """``(x + delta, the pending rms_norm(x + delta) * weight)`` for ONE row ``x [1, 1, width]``; ``delta``
    the same shape or :class:`.decode_kernels.PartialSums`. The sum is rounded to the model dtype, as
    :func:`.decode_kernels.add_rms_norm` rounds it."""
    width = x.shape[-1]
    if x.numel() != width:
        raise ValueError(f"add_deferring_norm: one row only, not {tuple(x.shape)}")
    x = x.contiguous()
    delta, delta_parts, delta_stride = _as_parts(delta)
    total = torch.empty_like(x)
    pieces = triton.cdiv(width, SLICE)
    squares = torch.empty(pieces, dtype=torch.float32, device=x.device)
    pdl = triton_support.dependent_launch(x.device)
    _add_squares_kernel[(1, pieces)](
        x, delta, delta_stride, total, squares, width, DELTA_PARTS=delta_parts, BLOCK=SLICE, PDL=pdl,
        num_warps=1, launch_pdl=pdl,
    )
    return total, PendingNorm(total, weight, eps, squares)
