"""Token choice over a large vocabulary in two fused Triton kernels, for the CUDA-graph loop.

``torch.argmax`` over one 128k-entry row runs in a handful of thread blocks, and Gumbel-max sampling
in PyTorch is five passes over the row (noise, clamp, log, subtract, argmax) before that. Here a first
kernel gives each 1,024-entry chunk of a row its own program -- drawing the Gumbel noise in registers
(Philox, ``tl.rand``) when sampling -- and writes the chunk's best value and index; a second kernel
picks the best chunk. Ties go to the lowest index at both levels, so :func:`first_argmax` is exactly
``torch.argmax``'s first maximum. :func:`top_values` finds the k highest scores the same way (each
chunk sorts itself, a small ``torch.topk`` merges) for top-k / top-p sampling.

Imported by :mod:`.vocab_ops` only where :func:`.triton_support.runs_on` says a kernel can run;
it uses PyTorch otherwise.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

CHUNK = 1024


@triton.jit
def _chunk_best_kernel(scores_ptr, width, chunks, seed_ptr, step_ptr, best_ptr, index_ptr,
                       GUMBEL: tl.constexpr, BLOCK: tl.constexpr):
    chunk_best(scores_ptr, width, chunks, seed_ptr, step_ptr, best_ptr, index_ptr, tl.program_id(0),
               tl.program_id(1), GUMBEL, BLOCK)

@triton.jit
def chunk_best(scores_ptr, width, chunks, seed_ptr, step_ptr, best_ptr, index_ptr, row, chunk,
               GUMBEL: tl.constexpr, BLOCK: tl.constexpr):
    """Chunk ``chunk`` of ``row``: its best (noisy, with GUMBEL) score and first index, stored at
    ``row * chunks + chunk`` (also the first part of :mod:`.loop_kernels`' fused choice and accept)."""
    cols = chunk * BLOCK + tl.arange(0, BLOCK)
    inside = cols < width
    scores = tl.load(scores_ptr + row * width + cols, mask=inside, other=float("-inf")).to(tl.float32)
    if GUMBEL:
        # argmax(score - log E), E = -log U ~ Exp(1): an exact draw from softmax(scores). A new
        # stream each step (seed + step); -inf scores stay -inf whatever the noise.
        seed = tl.load(seed_ptr) + tl.load(step_ptr) * 1000003
        uniform = tl.rand(seed.to(tl.int32), row * width + cols)
        noisy = scores - tl.log(-tl.log(uniform))
        scores = tl.where(scores == float("-inf"), float("-inf"), noisy)
    best = tl.max(scores, axis=0)
    index = tl.argmax(scores, axis=0, tie_break_left=True)
    tl.store(best_ptr + row * chunks + chunk, best)
    tl.store(index_ptr + row * chunks + chunk, chunk * BLOCK + index)

@triton.jit
def _chunk_top_kernel(scores_ptr, width, chunks, out_ptr, K: tl.constexpr, BLOCK: tl.constexpr):
    # each chunk's K highest scores, sorted (padding past the row's end is -inf)
    row = tl.program_id(0)
    chunk = tl.program_id(1)
    cols = chunk * BLOCK + tl.arange(0, BLOCK)
    scores = tl.load(scores_ptr + row * width + cols, mask=cols < width, other=float("-inf"))
    ranked = tl.sort(scores, descending=True)
    i = tl.arange(0, BLOCK)
    tl.store(out_ptr + (row * chunks + chunk) * K + i, ranked, mask=i < K)

@triton.jit
def _best_chunk_kernel(best_ptr, index_ptr, chunks, out_ptr, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    c = tl.arange(0, BLOCK)
    best = tl.load(best_ptr + row * chunks + c, mask=c < chunks, other=float("-inf"))
    winner = tl.argmax(best, axis=0, tie_break_left=True)
    tl.store(out_ptr + row, tl.load(index_ptr + row * chunks + winner).to(tl.int64))


MAX_TOP_K = 256


def top_values(scores: torch.Tensor, k: int, chunk: int = CHUNK) -> torch.Tensor:
    """``torch.topk(scores, k).values`` for ``scores [rows, vocab]`` (float32, k <= MAX_TOP_K): each
    ``chunk``-entry chunk's k best, sorted in its own program; then the same over those candidates, and
    so on until one chunk holds them all (128,256 scores, k 50: 6,300 candidates, then 350, then the 50).
    The k highest values of a row are the k highest of its chunks' candidates, so the result is
    exactly torch's (values only; which of tied entries were picked does not show). A final
    ``torch.topk`` over the first candidates instead cost ~40 us per call at batch 1 on an H100 -- its
    single-block radix select, and a sort of the k found -- against a few us per extra pass."""
    if not 0 < k <= chunk // 4 or chunk & (chunk - 1):  # a quarter at most: every round shrinks the candidates
        raise ValueError(f"top_values: k={k} must be positive and at most a quarter of the chunk size {chunk} "
                         "(a power of two)")
    rows, width = scores.shape
    candidates = scores.contiguous()
    while True:
        chunks = triton.cdiv(width, chunk)
        best = torch.empty(rows, chunks * k, dtype=torch.float32, device=scores.device)
        _chunk_top_kernel[(rows, chunks)](candidates, width, chunks, best, K=k, BLOCK=chunk, num_warps=4)
        if chunks == 1:
            return best
        candidates, width = best, chunks * k


def chunked_choice(scores: torch.Tensor, seed: torch.Tensor = None, step: torch.Tensor = None) -> torch.Tensor:
    """Per row: the first index of the maximum of ``scores [rows, vocab]`` (float32), or with ``seed``
    and ``step`` (0-d int64 device tensors) a Gumbel-max draw from ``softmax(scores)``."""
    best, index = chunk_bests(scores, seed, step)
    rows, chunks = best.shape
    out = torch.empty(rows, dtype=torch.int64, device=scores.device)
    _best_chunk_kernel[(rows,)](best, index, chunks, out, BLOCK=max(16, triton.next_power_of_2(chunks)), num_warps=4)
    return out


def chunk_bests(scores: torch.Tensor, seed: torch.Tensor = None, step: torch.Tensor = None):
    """The first pass of :func:`chunked_choice`: ``(best [rows, chunks] float32, index [rows, chunks]
    int32)``, each 1,024-entry chunk's best (noisy, with ``seed``) score and its first index in the row.
    ``scores`` may also be half precision (the CUDA-graph loop's logits with no processors): each is
    read as float32 -- exactly its value -- so the choice is the same as over a float32 copy."""
    rows, width = scores.shape
    scores = scores.contiguous()
    chunks = triton.cdiv(width, CHUNK)
    best = torch.empty(rows, chunks, dtype=torch.float32, device=scores.device)
    index = torch.empty(rows, chunks, dtype=torch.int32, device=scores.device)
    gumbel = seed is not None
    _chunk_best_kernel[(rows, chunks)](scores, width, chunks, seed if gumbel else best, step if gumbel else best,
                                       best, index, GUMBEL=gumbel, BLOCK=CHUNK, num_warps=4)
    return best, index
