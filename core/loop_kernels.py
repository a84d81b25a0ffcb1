"""The CUDA-graph loop's per-step bookkeeping in Triton instead of ~15 PyTorch kernels.

Around the model's forward, a decode step of :mod:`.graph_loop` reads the fed token, advances the
positions, marks the cache slot valid, computes the next column, then -- after the token choice --
masks finished rows with the pad token, writes the token, counts the step, updates the rows' EOS
flags and moves the slot on. In PyTorch each of those is a kernel of its own: at batch 1, where a
step is ~1.2 ms, they cost ~60-80 us of launches and waits (bench/results/gpu_decode_h100.txt).

Here :func:`advance` does the first group in one program, and :func:`choose_and_accept` runs
:mod:`.vocab_kernels`' per-chunk choice and then one program that picks each row's best chunk and does
the second group -- optionally followed by the next step's :func:`advance` (``feed_next``), and in the
same launch as the chunks (``arrivals``: the last chunk's program to finish accepts), so that the graph
loop's step launches none of its own. The results are the same integers as the PyTorch step's (the
choice is the first maximum, as ``torch.argmax``), so the eager loop and the graph loop still agree
token for token. Imported by :mod:`.graph_loop` only where :func:`.triton_support.runs_on` says a
kernel can run.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from . import triton_support, vocab_kernels

ROWS_PER_BLOCK = 64  # rows handled together by the single program of each kernel
# The fused choice and accept takes part in programmatic dependent launch where the device has it
# (triton_support.dependent_launch): its programs are resident, waiting, when the kernel before them (the
# output head through genplug's GEMV) finishes, instead of being launched only then.
CHOICE_PDL = True


@triton.jit
def _feed(token, r, r_in, slot, token_out_ptr, positions_ptr, positions_row, valid_ptr, valid_row, valid_cols,
          BLOCK_R: tl.constexpr):
    # rows r are fed `token` from `slot`: token_out = token; positions += 1; valid[:, slot] = True (a slot
    # inside the cache: the last step's next slot is past it, never fed)
    tl.store(token_out_ptr + r, token, mask=r_in)
    at = positions_ptr + r * positions_row
    tl.store(at, tl.load(at, mask=r_in) + 1, mask=r_in)
    if slot < valid_cols:
        tl.store(valid_ptr + r * valid_row + slot, tl.full([BLOCK_R], 1, tl.uint8), mask=r_in)


@triton.jit
def _advance_kernel(tokens_ptr, tokens_row, slot_ptr, positions_ptr, positions_row, valid_ptr, valid_row,
                    token_out_ptr, column_out_ptr, rows, valid_cols, BLOCK_R: tl.constexpr):
    # the rows are fed tokens[:, slot] (_feed); column = slot + 1
    slot = tl.load(slot_ptr)
    for first in range(0, rows, BLOCK_R):
        r = first + tl.arange(0, BLOCK_R)
        r_in = r < rows
        _feed(tl.load(tokens_ptr + r * tokens_row + slot, mask=r_in), r, r_in, slot, token_out_ptr, positions_ptr,
              positions_row, valid_ptr, valid_row, valid_cols, BLOCK_R)
    tl.store(column_out_ptr, slot + 1)


@triton.jit
def _accept_kernel(best_ptr, index_ptr, chunks, rows, tokens_ptr, tokens_row, column_ptr, slot_ptr,
                   unfinished_ptr, generated_ptr, eos_ptr, eos_count, pad,
                   fed_ptr, positions_ptr, positions_row, valid_ptr, valid_row, valid_cols,
                   HAS_EOS: tl.constexpr, ADVANCE: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
                   BLOCK_E: tl.constexpr, FEED: tl.constexpr = False):
    _accept_rows(best_ptr, index_ptr, chunks, rows, tokens_ptr, tokens_row, column_ptr, slot_ptr,
                 unfinished_ptr, generated_ptr, eos_ptr, eos_count, pad,
                 fed_ptr, positions_ptr, positions_row, valid_ptr, valid_row, valid_cols,
                 HAS_EOS, ADVANCE, BLOCK_R, BLOCK_C, BLOCK_E, FEED, "")


@triton.jit
def _choose_accept_kernel(scores_ptr, width, seed_ptr, step_ptr, arrivals_ptr,
                          best_ptr, index_ptr, chunks, rows, tokens_ptr, tokens_row, column_ptr, slot_ptr,
                          unfinished_ptr, generated_ptr, eos_ptr, eos_count, pad,
                          fed_ptr, positions_ptr, positions_row, valid_ptr, valid_row, valid_cols,
                          GUMBEL: tl.constexpr, CHUNK: tl.constexpr,
                          HAS_EOS: tl.constexpr, ADVANCE: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
                          BLOCK_E: tl.constexpr, FEED: tl.constexpr, PDL: tl.constexpr):
    # each program one chunk's best (vocab_kernels.chunk_best); the last of all to arrive accepts
    # (reading the others' results past L1) and leaves the count zero for the next step
    if PDL:  # everything read below may be the previous kernel's: wait for all of it
        tl.extra.cuda.gdc_wait()
    vocab_kernels.chunk_best(scores_ptr, width, chunks, seed_ptr, step_ptr, best_ptr, index_ptr,
                             tl.program_id(0), tl.program_id(1), GUMBEL, CHUNK)
    tl.debug_barrier()  # every thread's stores precede the release below
    arrived = tl.atomic_add(arrivals_ptr, 1, sem="acq_rel", scope="gpu")
    if arrived == rows * chunks - 1:
        _accept_rows(best_ptr, index_ptr, chunks, rows, tokens_ptr, tokens_row, column_ptr, slot_ptr,
                     unfinished_ptr, generated_ptr, eos_ptr, eos_count, pad,
                     fed_ptr, positions_ptr, positions_row, valid_ptr, valid_row, valid_cols,
                     HAS_EOS, ADVANCE, BLOCK_R, BLOCK_C, BLOCK_E, FEED, ".cg")
        tl.store(arrivals_ptr, 0)


@triton.jit
def _accept_rows(best_ptr, index_ptr, chunks, rows, tokens_ptr, tokens_row, column_ptr, slot_ptr,
                 unfinished_ptr, generated_ptr, eos_ptr, eos_count, pad,
                 fed_ptr, positions_ptr, positions_row, valid_ptr, valid_row, valid_cols,
                 HAS_EOS: tl.constexpr, ADVANCE: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
                 BLOCK_E: tl.constexpr, FEED: tl.constexpr, RESULTS_CACHE: tl.constexpr):
    # per row: the token at the best chunk's index (first maximum); finished rows get the pad token;
    # tokens[:, column] = token; generated += any(unfinished before this step);
    # unfinished &= token not an EOS; with ADVANCE, slot += 1 (= column); with FEED (and ADVANCE) also the
    # next step's _advance_kernel: fed = that token, positions += 1, valid[:, column] = True (a column past
    # the cache is the last step's: never fed, not marked), column += 1
    column = tl.load(column_ptr)
    c = tl.arange(0, BLOCK_C)
    e = tl.arange(0, BLOCK_E)
    eos = tl.load(eos_ptr + e, mask=e < eos_count, other=0)
    any_alive = tl.full([], 0, tl.int32)
    for first in range(0, rows, BLOCK_R):
        r = first + tl.arange(0, BLOCK_R)
        r_in = r < rows
        best = tl.load(best_ptr + r[:, None] * chunks + c[None, :], mask=r_in[:, None] & (c < chunks)[None, :],
                       other=float("-inf"), cache_modifier=RESULTS_CACHE)
        winner = tl.argmax(best, axis=1, tie_break_left=True)
        token = tl.load(index_ptr + r * chunks + winner, mask=r_in, other=0, cache_modifier=RESULTS_CACHE).to(tl.int64)
        alive = tl.load(unfinished_ptr + r, mask=r_in, other=0)
        any_alive = tl.maximum(any_alive, tl.max(alive.to(tl.int32), axis=0))
        if HAS_EOS:
            token = tl.where(alive != 0, token, pad)
            hit = tl.max(((token[:, None] == eos[None, :]) & (e < eos_count)[None, :]).to(tl.int32), axis=1)
            tl.store(unfinished_ptr + r, ((alive != 0) & (hit == 0)).to(tl.uint8), mask=r_in)
        tl.store(tokens_ptr + r * tokens_row + column, token, mask=r_in)
        if FEED:  # the next step's advance: its slot is this column
            _feed(token, r, r_in, column, fed_ptr, positions_ptr, positions_row, valid_ptr, valid_row, valid_cols,
                  BLOCK_R)
    tl.store(generated_ptr, tl.load(generated_ptr) + any_alive.to(tl.int64))
    if ADVANCE:
        tl.store(slot_ptr, tl.load(slot_ptr) + 1)
    if FEED:
        tl.store(column_ptr, column + 1)


def advance(tokens: torch.Tensor, slot: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor, out=None):
    """``(token [rows, 1], column)``: the token at column ``slot`` of ``tokens [rows, max_length]``, and
    ``slot + 1`` (0-d); ``positions [rows, 1]`` advance by one and ``valid[:, slot]`` becomes True, in place.
    ``out = (token, column)`` are written instead of new tensors."""
    rows = tokens.shape[0]
    if out is not None:
        token, column = out
    else:
        token = torch.empty(rows, 1, dtype=tokens.dtype, device=tokens.device)
        column = torch.empty((), dtype=slot.dtype, device=slot.device)
    _advance_kernel[(1,)](tokens, tokens.stride(0), slot, positions, positions.stride(0), valid.view(torch.uint8),
                          valid.stride(0),
                          token, column, rows, valid.shape[-1], BLOCK_R=min(ROWS_PER_BLOCK, triton.next_power_of_2(rows)), num_warps=1)
    return token, column


def choose_and_accept(scores: torch.Tensor, seed: Optional[torch.Tensor], column: torch.Tensor,
                      tokens: torch.Tensor, slot: torch.Tensor, unfinished: torch.Tensor,
                      generated: torch.Tensor, eos: Optional[torch.Tensor], pad: int, advance_slot: bool,
                      feed_next=None, arrivals: Optional[torch.Tensor] = None) -> None:
    """Choose each row's token from ``scores [rows, vocab]`` (float32 or half: the first maximum, or with
    ``seed`` a Gumbel-max draw whose stream is picked by ``column``) and accept it, in place: as the
    graph loop's ``accept`` followed (with ``advance_slot``) by ``slot += 1``. ``feed_next = (fed [rows, 1],
    positions, valid)`` (with ``advance_slot``) then also does the next step's :func:`advance` into ``fed``
    and ``column`` -- one kernel fewer a step. With ``arrivals`` (a zeroed int32 counter, left zero) the
    choice's chunks and the accept are one launch: the last chunk's program to finish accepts."""
    if feed_next is not None and not advance_slot:
        raise ValueError("choose_and_accept: feed_next advances from the moved slot; pass advance_slot=True")
    eos_count = eos.numel() if eos is not None else 0
    fed, positions, valid = feed_next if feed_next is not None else (column, column, unfinished)
    rows, width = scores.shape
    chunks = triton.cdiv(width, vocab_kernels.CHUNK)
    accept_args = (
        chunks, rows, tokens, tokens.stride(0), column, slot, unfinished.view(torch.uint8),
        generated, eos if eos is not None else column, eos_count, pad,
        fed, positions, positions.stride(0) if positions.dim() else 0, valid.view(torch.uint8),
        valid.stride(0) if valid.dim() else 0, valid.shape[-1] if valid.dim() else 0,
    )
    accept_options = dict(
        HAS_EOS=eos is not None, ADVANCE=advance_slot, BLOCK_R=min(ROWS_PER_BLOCK, triton.next_power_of_2(rows)),
        BLOCK_C=max(16, triton.next_power_of_2(chunks)), BLOCK_E=max(2, triton.next_power_of_2(eos_count)),
        FEED=feed_next is not None, num_warps=4,
    )
    if arrivals is None:
        best, index = vocab_kernels.chunk_bests(scores, seed, column)
        _accept_kernel[(1,)](best, index, *accept_args, **accept_options)
        return
    scores = scores.contiguous()
    best = torch.empty(rows, chunks, dtype=torch.float32, device=scores.device)
    index = torch.empty(rows, chunks, dtype=torch.int32, device=scores.device)
    gumbel = seed is not None
    pdl = CHOICE_PDL and triton_support.dependent_launch(scores.device)
    _choose_accept_kernel[(rows, chunks)](
        scores, width, seed if gumbel else best, column if gumbel else best, arrivals, best, index, *accept_args,
        GUMBEL=gumbel, CHUNK=vocab_kernels.CHUNK, PDL=pdl, launch_pdl=pdl, **accept_options,
    )
