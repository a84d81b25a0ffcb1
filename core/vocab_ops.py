"""Row-wise reductions over a large vocabulary that stay fast when there are few rows.

On CUDA, ``torch.argmax`` or a ``sum`` over one 128k-entry row runs in very few thread blocks: on an
H100 an argmax over 128,256 scores takes ~28 us, about as long as the matmul of a 2048x8192 weight
(bench/probes/processor_kernels.py). Splitting the row into chunks gives the GPU one row per chunk,
then a small second pass combines them. The results are exact -- the first index of a maximum, the
same counts -- so the eager loop and the CUDA-graph loop agree whichever path a call takes.
(``torch.topk`` is not split: a per-chunk top-k and a second one measured slower than one pass.)
"""

from __future__ import annotations

from typing import Optional

import torch

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
    chunks = chunks or chunk_count(rows, width, scores.device)
    if not chunks:
        return torch.argmax(scores, dim=-1)
    split = scores.view(rows, chunks, width // chunks)
    inner = split.argmax(-1)  # first maximum within each chunk
    best = split.gather(-1, inner[..., None]).squeeze(-1).argmax(-1, keepdim=True)  # first chunk holding the maximum
    return best.squeeze(-1) * (width // chunks) + inner.gather(-1, best).squeeze(-1)


def count_true(mask: torch.Tensor, chunks: Optional[int] = None) -> torch.Tensor:
    """``mask.sum(-1, keepdim=True)`` (int64) for a 2-D boolean tensor."""
    rows, width = mask.shape
    chunks = chunks or chunk_count(rows, width, mask.device)
    if not chunks:
        return mask.sum(-1, keepdim=True)
    return mask.view(rows, chunks, width // chunks).sum(-1).sum(-1, keepdim=True)
