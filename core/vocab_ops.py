"""Row-wise reductions over a large vocabulary that stay fast when there are few rows.

On CUDA, ``torch.argmax`` or a ``sum`` over one 128k-entry row runs in very few thread blocks: on an
H100 an argmax over 128,256 scores takes ~28 us, about as long as the matmul of a 2048x8192 weight
(bench/probes/processor_kernels.py). Splitting the row into chunks gives the GPU one row per chunk,
then a small second pass combines them. The results are exact -- the first index of a maximum, the
same counts -- so the eager loop and the CUDA-graph loop agree whichever path a call takes.
(A per-chunk ``torch.topk`` and a second one measured slower than one pass; :func:`top_values`
instead sorts each chunk in one Triton program, :mod:`.vocab_kernels`.)
"""

from __future__ import annotations

from typing import Optional

import torch

from . import triton_support

SPLIT_MIN_VOCAB = 32768  # below this one pass is already cheap
SPLIT_MAX_ROWS = 64  # with many rows the GPU is busy anyway
MAX_CHUNKS = 256
MIN_CHUNK = 256


def chunk_count(rows: int, width: int, device: torch.device, least: int = 1) -> Optional[int]:
    """How many equal chunks to split each row into (None: reduce in one pass).

    Only while a CUDA graph is being captured (eagerly, the host's cost per launched kernel matters
    more than the GPU's), for wide rows and few of them, and only when some chunk count in 2..256
    divides the width with chunks of at least ``max(256, least)`` entries.
    """
    if device.type != "cuda" or width < SPLIT_MIN_VOCAB or rows > SPLIT_MAX_ROWS:
        return None
    if not torch.cuda.is_current_stream_capturing():
        return None
    return _divisor(width, max(MIN_CHUNK, least))


def _divisor(width: int, least_chunk: int) -> Optional[int]:
    for chunks in range(MAX_CHUNKS, 1, -1):
        if width % chunks == 0 and width // chunks >= least_chunk:
            return chunks
    return None


def first_argmax(scores: torch.Tensor, chunks: Optional[int] = None) -> torch.Tensor:
    """``torch.argmax(scores, -1)`` for a 2-D tensor: the first index of each row's maximum."""
    rows, width = scores.shape
    if chunks is None and _fused(scores):
        return _kernels().chunked_choice(scores)
    chunks = chunks or chunk_count(rows, width, scores.device)
    if not chunks:
        return torch.argmax(scores, dim=-1)
    split = scores.view(rows, chunks, width // chunks)
    inner = split.argmax(-1)  # first maximum within each chunk
    best = split.gather(-1, inner[..., None]).squeeze(-1).argmax(-1, keepdim=True)  # first chunk holding the maximum
    return best.squeeze(-1) * (width // chunks) + inner.gather(-1, best).squeeze(-1)


def gumbel_sample(scores: torch.Tensor, seed: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """One draw per row from ``softmax(scores)`` with no host read: the Gumbel-max trick,
    ``argmax(scores - log E)`` with ``E ~ Exp(1)``. ``seed`` and ``step`` (0-d int64 device tensors)
    choose the fused kernel's random stream; PyTorch's generator draws the noise without the kernel."""
    if _kernels_run_on(scores):
        return _kernels().chunked_choice(scores, seed, step)
    # E is kept above 0 so that a -inf score stays -inf instead of becoming nan
    noise = torch.empty_like(scores).exponential_(1).clamp_min_(torch.finfo(scores.dtype).tiny).log_()
    return first_argmax(scores - noise)


def top_values(scores: torch.Tensor, k: int) -> torch.Tensor:
    """``torch.topk(scores, k, dim=-1).values`` for a 2-D tensor (descending). While capturing a CUDA
    graph, a wide row's search runs chunked (``vocab_kernels.top_values``; same values):
    ``torch.topk``'s radix select over 128k entries is ~45 us per call on an H100."""
    if _fused(scores) and k <= _kernels().MAX_TOP_K:
        return _kernels().top_values(scores, k)
    return torch.topk(scores, k, dim=-1).values


def _fused(scores: torch.Tensor) -> bool:
    """Whether :func:`first_argmax` takes the fused kernels: while capturing a CUDA graph, for a wide
    row and few of them (the tests' interpreter: always)."""
    if not _kernels_run_on(scores):
        return False
    if not scores.is_cuda:
        return True
    rows, width = scores.shape
    return width >= SPLIT_MIN_VOCAB and rows <= SPLIT_MAX_ROWS and torch.cuda.is_current_stream_capturing()


def _kernels_run_on(scores: torch.Tensor) -> bool:
    return scores.dim() == 2 and triton_support.runs_on(scores, (torch.float32,))


def _kernels():
    """:mod:`.vocab_kernels`, imported on first use (it imports Triton)."""
    from . import vocab_kernels

    return vocab_kernels


def count_true(mask: torch.Tensor, chunks: Optional[int] = None) -> torch.Tensor:
    """``mask.sum(-1, keepdim=True)`` (int64) for a 2-D boolean tensor."""
    rows, width = mask.shape
    chunks = chunks or chunk_count(rows, width, mask.device)
    if not chunks:
        return mask.sum(-1, keepdim=True)
    return mask.view(rows, chunks, width // chunks).sum(-1).sum(-1, keepdim=True)
