"""Fused Triton kernels for the native model's one-token decode step on CUDA (half precision).

At batch 1 a decode step is bound by reading the weights, and everything between the matmuls is a
launch of a tiny kernel: with plain PyTorch a Llama layer runs ~25 of them (norm, RoPE's multiplies
and roll, cache writes, attention, residual adds, SiLU, multiply), each costing a few microseconds
whatever its size. With these, :mod:`.fused_step` runs four small launches per layer around the matmuls:

* :func:`add_rms_norm` -- the residual add of the previous block fused with the next RMSNorm;
* :func:`rope_cache_attention` -- RoPE on the new query and key, the key/value written into the
  static cache at ``slot``, and attention of each query head over the cache;
* :func:`gemv` -- one-row split-K matmul whose :class:`PartialSums` the next kernel adds up while
  loading (the down projection computes act(gate)*up -- SiLU, or Gemma's tanh-GELU -- as it reads its input);
* :func:`gated` -- ``act(gate) * up``, for more than one row.

Arithmetic is float32 inside each kernel, rounded once on the way out. The eager forward of a
one-token step over a static cache runs the same kernels as the captured CUDA graph, so greedy
outputs of the two paths are identical. This module imports Triton: it is imported only where
:func:`.graph_step.fused_kernels_apply` says the kernels can run.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from genplug import triton_support

from .graph_step import fused_kernels_apply

usable = fused_kernels_apply  # the rule for whether these kernels run, next to them


@triton.jit
def _after_previous_kernel(PDL: tl.constexpr):
    """Wait for the previous kernel's writes (programmatic dependent launch), then let the next kernel
    start. Everything a kernel reads before this must be weights: nothing in the step writes them."""
    if PDL:
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()

@triton.jit
def _summed(ptr, offsets, mask, PARTS: tl.constexpr, part_stride):
    """``sum_p ptr[p * part_stride + offsets]`` in float32, parts added in a fixed order."""
    total = tl.load(ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    for p in tl.static_range(1, PARTS):
        total += tl.load(ptr + p * part_stride + offsets, mask=mask, other=0.0).to(tl.float32)
    return total

@triton.jit
def _add_rms_norm_kernel(x_ptr, delta_ptr, delta_parts_stride, weight_ptr, sum_ptr, norm_ptr, width, eps,
                         delta_weight_ptr, delta_eps, token_ptr, table_stride_width, table_stride_token, x_scale,
                         DELTA_PARTS: tl.constexpr, DELTA_NORM: tl.constexpr, GATHER: tl.constexpr,
                         SCALED: tl.constexpr, BLOCK: tl.constexpr, PDL: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    inside = cols < width
    weight = tl.load(weight_ptr + cols, mask=inside, other=0.0).to(tl.float32)
    if DELTA_NORM:
        delta_weight = tl.load(delta_weight_ptr + cols, mask=inside, other=0.0).to(tl.float32)
    _after_previous_kernel(PDL)
    if GATHER:  # x is the embedding of the row's token: a column of the table [width, vocab] (or a row)
        token = tl.load(token_ptr + row).to(tl.int64)
        x = tl.load(x_ptr + token * table_stride_token + cols * table_stride_width, mask=inside, other=0.0)
        if SCALED:  # Gemma: times sqrt(width) (already rounded to the model dtype), rounded as torch does
            x = (x.to(tl.float32) * x_scale).to(sum_ptr.dtype.element_ty)
        tl.store(sum_ptr + row * width + cols, x, mask=inside)
        x = x.to(tl.float32)
    else:
        x = tl.load(x_ptr + row * width + cols, mask=inside, other=0.0).to(tl.float32)
    if DELTA_PARTS > 0:
        delta = _summed(delta_ptr, row * width + cols, inside, DELTA_PARTS, delta_parts_stride)
        if DELTA_NORM:  # Gemma 2/3: the sublayer's output (as the model stores it) is normed before the add
            delta = delta.to(sum_ptr.dtype.element_ty).to(tl.float32)
            delta_scale = 1.0 / tl.sqrt(tl.sum(delta * delta, axis=0) / width + delta_eps)
            delta = (delta * delta_scale * delta_weight).to(sum_ptr.dtype.element_ty).to(tl.float32)
        x += delta
        x = x.to(sum_ptr.dtype.element_ty)  # the residual stream is stored in the model dtype
        tl.store(sum_ptr + row * width + cols, x, mask=inside)
        x = x.to(tl.float32)
    inverse_rms = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / width + eps)
    tl.store(norm_ptr + row * width + cols, (x * inverse_rms * weight).to(norm_ptr.dtype.element_ty), mask=inside)

@triton.jit
def _tanh(x):
    """tanh in float32 from one exp (tanh(20) is 1 in float32: the clamp keeps exp finite)."""
    return 1.0 - 2.0 / (tl.exp(2.0 * tl.minimum(x, 20.0)) + 1.0)

@triton.jit
def _gated(gate, up, GATE: tl.constexpr):
    """``act(gate) * up`` in float32: GATE 1 is SiLU (Llama), 2 the tanh-approximated GELU (Gemma)."""
    if GATE == 1:
        return gate / (1.0 + tl.exp(-gate)) * up
    return 0.5 * gate * (1.0 + _tanh(0.7978845608028654 * (gate + 0.044715 * gate * gate * gate))) * up

@triton.jit
def _gated_kernel(gate_up_ptr, out_ptr, width, BLOCK: tl.constexpr, GATE: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    inside = cols < width
    gate = tl.load(gate_up_ptr + row * 2 * width + cols, mask=inside, other=0.0).to(tl.float32)
    up = tl.load(gate_up_ptr + row * 2 * width + width + cols, mask=inside, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * width + cols, _gated(gate, up, GATE).to(out_ptr.dtype.element_ty), mask=inside)

@triton.jit
def _gemv_input(x_ptr, x_parts_stride, k, k_in, in_width, X_PARTS: tl.constexpr, X_GATE: tl.constexpr):
    """The GEMV's input at ``k`` in float32: summed partial sums, or act(gate) * up of them."""
    if X_GATE > 0:
        gate = _summed(x_ptr, k, k_in, X_PARTS, x_parts_stride)
        up = _summed(x_ptr + in_width, k, k_in, X_PARTS, x_parts_stride)
        return _gated(gate, up, X_GATE)
    return _summed(x_ptr, k, k_in, X_PARTS, x_parts_stride)

@triton.jit
def _weight_tile(w_ptr, k, last, local, n_in, w_stride_k, w_stride_n):
    """The ``[BLOCK_K, BLOCK_N]`` weight tile at rows ``k`` (those from ``last`` on read as 0) and columns ``local``."""
    return tl.load(w_ptr + k[:, None] * w_stride_k + local[None, :] * w_stride_n,
                   mask=(k < last)[:, None] & n_in[None, :], other=0.0)

@triton.jit
def _gemv_kernel(x_ptr, x_parts_stride, w_ptr, w_stride_k, w_stride_n, bias_ptr, out_ptr, in_width, out_width,
                 k_per_split, w1_ptr, bias1_ptr, bound1, w2_ptr, bias2_ptr, bound2,
                 X_PARTS: tl.constexpr, X_GATE: tl.constexpr, HAS_BIAS: tl.constexpr, W_PARTS: tl.constexpr,
                 BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PDL: tl.constexpr, PREFETCH: tl.constexpr,
                 AHEAD: tl.constexpr, X_AHEAD: tl.constexpr):
    # out[split, n] = sum over this split's k of x[k] * w[k, n]   (w is [in, out], either layout)
    # With X_GATE, x is the gate/up projection's partial sums [X_PARTS, 2 * in_width]:
    # x[k] = act(gate[k]) * up[k] (SiLU or tanh-GELU), so the activation never makes a trip through memory.
    # With W_PARTS > 1, w is the concatenation of W_PARTS matrices stored apart (a transformers model's
    # q/k/v or gate/up, read in place): columns from bound1 (bound2) on are w1's (w2's).
    pid_n = tl.program_id(0)
    split = tl.program_id(1)
    n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_in = n < out_width
    local = n  # the column within the stored matrix (the boundaries are multiples of BLOCK_N)
    if W_PARTS > 1:
        if pid_n * BLOCK_N >= bound1:
            w_ptr, bias_ptr, local = w1_ptr, bias1_ptr, n - bound1
    if W_PARTS > 2:
        if pid_n * BLOCK_N >= bound2:
            w_ptr, bias_ptr, local = w2_ptr, bias2_ptr, n - bound2
    first = split * k_per_split
    last = tl.minimum(first + k_per_split, in_width)
    acc = tl.zeros([BLOCK_N], tl.float32)
    if PREFETCH:
        # each weight tile is loaded AHEAD iterations ahead, the first AHEAD before waiting for the previous
        # kernel: they stream while that kernel finishes (same arithmetic, same order). With X_AHEAD the
        # input is loaded one iteration ahead too, so no iteration waits on an L2 round trip for it.
        k = first + tl.arange(0, BLOCK_K)
        w = _weight_tile(w_ptr, k, last, local, n_in, w_stride_k, w_stride_n)
        if AHEAD > 1:
            w2 = _weight_tile(w_ptr, k + BLOCK_K, last, local, n_in, w_stride_k, w_stride_n)
        _after_previous_kernel(PDL)
        if X_AHEAD:
            x = _gemv_input(x_ptr, x_parts_stride, k, k < last, in_width, X_PARTS, X_GATE)
        for start in range(first, last, BLOCK_K):
            k = start + tl.arange(0, BLOCK_K)
            w_ahead = _weight_tile(w_ptr, k + AHEAD * BLOCK_K, last, local, n_in, w_stride_k, w_stride_n)
            if X_AHEAD:
                k_next = k + BLOCK_K
                x_next = _gemv_input(x_ptr, x_parts_stride, k_next, k_next < last, in_width, X_PARTS, X_GATE)
            else:
                x = _gemv_input(x_ptr, x_parts_stride, k, k < last, in_width, X_PARTS, X_GATE)
            acc += tl.sum(x[:, None] * w.to(tl.float32), axis=0)
            if AHEAD > 1:
                w = w2
                w2 = w_ahead
            else:
                w = w_ahead
            if X_AHEAD:
                x = x_next
    else:
        for start in range(first, last, BLOCK_K):
            k = start + tl.arange(0, BLOCK_K)
            x = _gemv_input(x_ptr, x_parts_stride, k, k < last, in_width, X_PARTS, X_GATE)
            w = _weight_tile(w_ptr, k, last, local, n_in, w_stride_k, w_stride_n)
            acc += tl.sum(x[:, None] * w.to(tl.float32), axis=0)
    if HAS_BIAS:
        if split == 0:
            acc += tl.load(bias_ptr + local, mask=n_in, other=0.0).to(tl.float32)
    tl.store(out_ptr + split * out_width + n, acc, mask=n_in)

@triton.jit
def _rope_cache_attention_kernel(
    qkv_ptr, qkv_parts_stride, cos_ptr, sin_ptr, slot_ptr, valid_ptr, keys_ptr, values_ptr, out_ptr,
    partial_ptr, arrivals_ptr, q_norm_ptr, k_norm_ptr, norm_eps, position_ptr, position_row, table_rows,
    qkv_row, rope_row, valid_row, cache_batch, cache_head, cache_slot, scale, softcap, window,
    HEADS: tl.constexpr, KV_HEADS: tl.constexpr, GROUPS: tl.constexpr, DIM: tl.constexpr,
    QKV_PARTS: tl.constexpr, QUERIES: tl.constexpr, SPLITS: tl.constexpr, BLOCK_G: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_S: tl.constexpr, QK_NORM: tl.constexpr, ROPE_TABLE: tl.constexpr,
    ROPE_DIM: tl.constexpr, PDL: tl.constexpr, EARLY_LOADS: tl.constexpr, SOFTCAP: tl.constexpr,
):
    # One program per (row, QUERIES query heads of one key/value group, split of the cached slots):
    # its query heads read each cached key and value once. Every program rotates its new queries and
    # key itself; the group's first program writes the new key/value into the cache (nobody reads that
    # slot in this step) and the last split attends to the new token, from registers. With several
    # splits each leaves its softmax state (running max, sum, weighted values) in `partial`, and the
    # last to arrive merges them. With `window` > 0 (a sliding layer) only the slots after
    # slot - window are attended to (the cache spans every position: slot s is position s); with
    # SOFTCAP (Gemma 2) each scaled score s becomes tanh(s / softcap) * softcap.
    row = tl.program_id(0)
    team = tl.program_id(1)  # which QUERIES query heads
    split = tl.program_id(2)
    TEAMS: tl.constexpr = HEADS // QUERIES
    kv_head = team * QUERIES // GROUPS
    # With EARLY_LOADS, everything but the new token's q/k/v is read before waiting for the previous
    # kernel (the projection): the slot, positions, cos/sin and the first cached keys/values were all
    # written before it started (by earlier steps, the step's bookkeeping and RoPE).
    _after_previous_kernel(PDL and not EARLY_LOADS)
    slot = tl.load(slot_ptr)
    d = tl.arange(0, BLOCK_D)
    d_in = d < DIM
    # RoPE turns the first ROPE_DIM dimensions of each head (Phi-3's partial rotary: fewer than DIM);
    # the rest pass through (cos 1, sin 0, their own partner)
    turned = d < ROPE_DIM
    rolled = tl.where(turned, (d + ROPE_DIM // 2) % ROPE_DIM, d)  # RoPE's rotate-half partner; the sign sits in `sin`
    g = tl.arange(0, BLOCK_G)
    g_in = g < QUERIES
    if ROPE_TABLE:  # cos/sin are tables by position: this row's token's row of them (kept inside the table)
        rope_at = tl.minimum(tl.maximum(tl.load(position_ptr + row * position_row), 0), table_rows - 1) * ROPE_DIM
    else:
        rope_at = row * rope_row
    cos = tl.load(cos_ptr + rope_at + d, mask=turned, other=1.0).to(tl.float32)
    sin = tl.load(sin_ptr + rope_at + d, mask=turned, other=0.0).to(tl.float32)
    cache_at = row * cache_batch + kv_head * cache_head
    lowest = tl.where(window > 0, tl.maximum(slot - window + 1, 0), 0)  # the first slot in the window
    chunk = tl.cdiv(tl.cdiv(slot - lowest, SPLITS), BLOCK_S) * BLOCK_S
    begin = lowest + split * chunk
    end = tl.minimum(begin + chunk, slot)
    # this split's cached slots before `slot` stream one tile ahead of the softmax (the first now)
    s = begin + tl.arange(0, BLOCK_S)
    at = cache_at + s[:, None] * cache_slot + d[None, :]
    kv_in = (s < end)[:, None] & d_in[None, :]
    k_ahead = tl.load(keys_ptr + at, mask=kv_in, other=0.0)
    v_ahead = tl.load(values_ptr + at, mask=kv_in, other=0.0)
    attend_ahead = tl.load(valid_ptr + row * valid_row + s, mask=s < end, other=0)
    _after_previous_kernel(PDL and EARLY_LOADS)
    qkv = qkv_ptr + row * qkv_row

    head = team * QUERIES + g  # this program's query heads
    gd_in = g_in[:, None] & d_in[None, :]
    query = _summed(qkv, head[:, None] * DIM + d[None, :], gd_in, QKV_PARTS, qkv_parts_stride)
    query_rolled = _summed(qkv, head[:, None] * DIM + rolled[None, :], gd_in, QKV_PARTS, qkv_parts_stride)
    at_k = (HEADS + kv_head) * DIM
    key = _summed(qkv, at_k + d, d_in, QKV_PARTS, qkv_parts_stride)
    key_rolled = _summed(qkv, at_k + rolled, d_in, QKV_PARTS, qkv_parts_stride)
    if QK_NORM:  # Qwen3: each query and key head RMS-normed (own weights) before RoPE
        q_scale = 1.0 / tl.sqrt(tl.sum(query * query, axis=1) / DIM + norm_eps)
        k_scale = 1.0 / tl.sqrt(tl.sum(key * key, axis=0) / DIM + norm_eps)
        query_rolled *= q_scale[:, None] * tl.load(q_norm_ptr + rolled, mask=d_in, other=0.0).to(tl.float32)[None, :]
        query *= q_scale[:, None] * tl.load(q_norm_ptr + d, mask=d_in, other=0.0).to(tl.float32)[None, :]
        key_rolled *= k_scale * tl.load(k_norm_ptr + rolled, mask=d_in, other=0.0).to(tl.float32)
        key *= k_scale * tl.load(k_norm_ptr + d, mask=d_in, other=0.0).to(tl.float32)
    query = (query * cos[None, :] + query_rolled * sin[None, :]) * scale
    key = key * cos + key_rolled * sin
    value = _summed(qkv, (HEADS + KV_HEADS + kv_head) * DIM + d, d_in, QKV_PARTS, qkv_parts_stride)
    key = key.to(keys_ptr.dtype.element_ty)  # attend to the key as the cache will hold it
    value = value.to(values_ptr.dtype.element_ty)
    if (split == 0) & (team * QUERIES % GROUPS == 0):
        tl.store(keys_ptr + cache_at + slot * cache_slot + d, key, mask=d_in)
        tl.store(values_ptr + cache_at + slot * cache_slot + d, value, mask=d_in)

    # softmax state per query head; the last split starts from the new token (always attended to),
    # the others from nothing (a finite floor for the max keeps empty splits free of inf - inf)
    own = split == SPLITS - 1
    own_score = tl.sum(query * key.to(tl.float32)[None, :], axis=1)
    if SOFTCAP:
        own_score = softcap * _tanh(own_score / softcap)
    best = tl.where(own, own_score, -1.0e30)
    total = tl.where(own, 1.0, 0.0) + tl.zeros([BLOCK_G], tl.float32)
    acc = tl.where(own, 1.0, 0.0) * value.to(tl.float32)[None, :] + tl.zeros([BLOCK_G, BLOCK_D], tl.float32)
    for start in range(begin, end, BLOCK_S):  # this split's cached slots before `slot`
        k, v, attend = k_ahead.to(tl.float32), v_ahead.to(tl.float32), attend_ahead != 0
        s = start + BLOCK_S + tl.arange(0, BLOCK_S)
        at = cache_at + s[:, None] * cache_slot + d[None, :]
        kv_in = (s < end)[:, None] & d_in[None, :]
        k_ahead = tl.load(keys_ptr + at, mask=kv_in, other=0.0)
        v_ahead = tl.load(values_ptr + at, mask=kv_in, other=0.0)
        attend_ahead = tl.load(valid_ptr + row * valid_row + s, mask=s < end, other=0)
        scores = tl.sum(query[:, None, :] * k[None, :, :], axis=2)  # [groups, slots]
        if SOFTCAP:
            scores = softcap * _tanh(scores / softcap)
        scores = tl.where(attend[None, :], scores, float("-inf"))
        new_best = tl.maximum(best, tl.max(scores, axis=1))
        p = tl.exp(scores - new_best[:, None])
        rescale = tl.exp(best - new_best)
        acc = acc * rescale[:, None] + tl.sum(p[:, :, None] * v[None, :, :], axis=1)
        total = total * rescale + tl.sum(p, axis=1)
        best = new_best
    out_at = out_ptr + row * HEADS * DIM + head[:, None] * DIM + d[None, :]
    if SPLITS == 1:
        tl.store(out_at, (acc / total[:, None]).to(out_ptr.dtype.element_ty), mask=gd_in)
    else:
        # partial [rows, teams, splits, BLOCK_G, BLOCK_D + 2]: weighted values, then max and sum
        state = BLOCK_G * (BLOCK_D + 2)
        group_at = (row * TEAMS + team) * SPLITS
        mine = partial_ptr + (group_at + split) * state
        tl.store(mine + g[:, None] * BLOCK_D + d[None, :], acc)
        tl.store(mine + BLOCK_G * BLOCK_D + g, best)
        tl.store(mine + BLOCK_G * (BLOCK_D + 1) + g, total)
        tl.debug_barrier()  # every thread's stores precede the release below
        arrived = tl.atomic_add(arrivals_ptr + row * TEAMS + team, 1, sem="acq_rel", scope="gpu")
        if arrived == SPLITS - 1:  # the last of the group: merge in split order (deterministic)
            sp = tl.arange(0, SPLITS)
            states = partial_ptr + (group_at + sp) * state
            bests = tl.load(states[:, None] + BLOCK_G * BLOCK_D + g[None, :], cache_modifier=".cg")
            totals = tl.load(states[:, None] + BLOCK_G * (BLOCK_D + 1) + g[None, :], cache_modifier=".cg")
            accs = tl.load(states[:, None, None] + g[None, :, None] * BLOCK_D + d[None, None, :], cache_modifier=".cg")
            top = tl.max(bests, axis=0)
            weights = tl.exp(bests - top[None, :])  # [splits, groups]
            merged = tl.sum(weights[:, :, None] * accs, axis=0) / tl.sum(weights * totals, axis=0)[:, None]
            tl.store(out_at, merged.to(out_ptr.dtype.element_ty), mask=gd_in)
            tl.store(arrivals_ptr + row * TEAMS + team, 0)  # ready for the next step


MAX_SPLITS = 8
# (splits, query heads per program, block_s, warps, stages) of the attention kernel. One row: each
# query head's cached slots split among 16 programs, each serving the 4 query heads of a key/value group
# (bench/probes/step_variants.py on an H100, 2026-12-05: batch-1 greedy 715 -> 780 tokens/s over one
# program per head and no split, 808 with PDL; 16 splits 794, 4 splits x 1 head 779 -- then 8 splits
# shipped. 2026-12-06, eleventh session, with the cache's first tile read before the PDL wait: 16 splits
# 872.0 against 866.6 / 866.4 with 8 -- up to 384 slots each split is one tile, all read early -- and
# 2 query heads x 64 slots 837.6). Rows: each program serves the 4 query heads of a key/value group, 32
# slots a tile, and splits 0 means "fitted": each row's slots are split so that the launch has about
# ROWS_PROGRAMS_PER_SM programs per multiprocessor (attention_splits). bench/probes/rows_variants.py on an
# H100, 2026-12-06, twelfth session, greedy (sampling) tokens/s: batch 64 with one split 26,454 (21,521)
# against 21,813 (18,344) with the one-head programs tuned before in isolation (1, 1, 128, 2, 2); batch 16
# with 2 splits 10,796 (9,239) against 9,406 (8,381), with one split 9,980 (8,818).
ATTENTION_CONFIG = {"one row": (16, 4, 32, 4, 1), "rows": (0, 4, 32, 4, 2)}
ROWS_PROGRAMS_PER_SM = 2
MAX_ATTENTION_SPLITS = 16
INTERPRETER_ATTENTION_SPLITS = 2
# The head size those were tuned at (the 1B shape). For larger heads (or fewer query heads per program)
# block_s is fitted so each program's tile of products [queries, block_s, head] stays the tuned size
# (bench/probes/head_sizes.py on an H100, 2026-12-05, seventh session, batch 1, heads of 256 -- 4 query
# heads per program: block_s 8 / 16 / 32 gave 3178 / 3146 / 2573 tokens/s; 2 per program: 2883 / 3021 /
# 3038, where shrinking by the head size alone had picked 8; batch 16, the rows tile fitted to heads of
# 128 / 256: 14,269 / 28,347 tokens/s against 4,196 / 4,065 as tuned): compiled for sm_90 as tuned, the
# one-row kernel of a Gemma-sized head (256) spilled 328 bytes per thread and the rows kernel of a
# Llama-8B-sized head (128) 6,032 (tests/plugins/models/test_kernels_compile_for_gpus.py).
ATTENTION_TUNED_HEAD_DIM = 64
# The attention kernel reads the cached keys/values' first tile (and the slot, positions, cos/sin)
# before waiting for the q/k/v projection to finish (programmatic dependent launch only; same bits).
# bench/probes/step_variants.py on an H100, 2026-12-05: 812.5 and 815.0 tokens/s with, 809.5 without
# (a since-removed step variant); the step it ships in measured 853.6 (bench/results/gpu_decode_h100.txt).
ATTENTION_EARLY_LOADS = True

class PartialSums:
    """A one-row matmul's output left as float32 partial sums ``parts [splits, rows, width]`` (split-K).

    The kernel that consumes it adds the splits up while loading (in a fixed order: deterministic),
    so the sum never makes its own trip through memory.
    """

    __slots__ = ("parts",)

    def __init__(self, parts: torch.Tensor):
        self.parts = parts

    def total(self) -> torch.Tensor:
        """The summed output ``[rows, 1, width]`` in float32 (for tests and fallbacks)."""
        return self.parts.sum(0).unsqueeze(1)


def _as_parts(x) -> Tuple[torch.Tensor, int, int]:
    """``(tensor, number of parts, stride between parts)`` of a tensor or :class:`PartialSums`."""
    if isinstance(x, PartialSums):
        return x.parts, x.parts.shape[0], x.parts.stride(0)
    return x.contiguous(), 1, 0


def gemv_applies(weight_t: Optional[torch.Tensor]) -> bool:
    """Whether :func:`gemv` can read ``weight_t [in, out]`` (either dimension contiguous)."""
    return weight_t is not None and weight_t.dim() == 2 and 1 in weight_t.stride()


PART_ALIGNMENT = 64  # a stored part's width must be a multiple of this (of every block_n the GEMV uses)
MAX_WEIGHT_PARTS = 3


def gemv_applies_to_parts(weights_t, biases=None) -> bool:
    """Whether :func:`gemv` can read the concatenation of ``weights_t`` (each ``[in, out_i]``) in place:
    at most 3 of them with the same strides (the kernel steps through all of them alike: parts of a
    ``[out, in]`` storage, as transformers stores them), dtype and device, widths multiples of
    :data:`PART_ALIGNMENT`, and biases all present or all absent."""
    weights_t = list(weights_t)
    biases = list(biases) if biases is not None else [None] * len(weights_t)
    if len(weights_t) == 1:  # the common case, checked on every eager step: one matrix, one bias or none
        return gemv_applies(weights_t[0]) and len(biases) == 1
    if not 1 <= len(weights_t) <= MAX_WEIGHT_PARTS or not all(gemv_applies(w) for w in weights_t):
        return False
    first = weights_t[0]

    def steps(w):  # strides that matter (a dimension of one element has no stride to speak of)
        return tuple(stride if size > 1 else None for size, stride in zip(w.shape, w.stride()))

    if any(w.shape[0] != first.shape[0] or w.dtype != first.dtype or w.device != first.device
           or any(a is not None and b is not None and a != b for a, b in zip(steps(w), steps(first)))
           for w in weights_t):
        return False
    if any(w.shape[1] % PART_ALIGNMENT for w in weights_t[:-1]):
        return False
    return len(biases) == len(weights_t) and len({b is None for b in biases}) == 1


# How many weight tiles a GEMV program keeps loading ahead of the one it multiplies (the first ones before
# its PDL wait), and whether its input is loaded an iteration ahead too: bench/probes/step_variants.py.
# Without PDL (GPUs before Hopper, GENPLUG_PDL=0) the plain loop runs unless GEMV_PREFETCH_WITHOUT_PDL, which
# the CPU tests set to run the loop Hopper runs through Triton's interpreter (it has no PDL wait).
GEMV_AHEAD = 1
GEMV_X_AHEAD = False
GEMV_PREFETCH_WITHOUT_PDL = False

GATES = {"silu": 1, "gelu_tanh": 2}  # the gated MLP activations the kernels compute (constexpr codes)


def gemv(x, weight_t, bias=None, gated_input: Optional[str] = None,
         config: Optional[Tuple[int, int, int, int, int]] = None, *, checked: bool = False) -> PartialSums:
    """``x @ weight_t (+ bias)`` for ONE row, as split-K :class:`PartialSums` of width ``out``.

    ``x`` is ``[1, 1, in]`` (or partial sums of it); with ``gated_input`` (``"silu"`` or ``"gelu_tanh"``,
    see :data:`GATES`) it is the gate/up projection ``[1, 1, 2 * in]`` and the input is
    ``act(gate) * up``, computed while loading.
    ``weight_t`` may also be a sequence of up to 3 matrices ``[in, out_i]`` (and ``bias`` a sequence
    like it), read in place as their concatenation ``[in, sum out_i]`` (:func:`gemv_applies_to_parts`).
    ``config = (block_n, block_k, warps, stages, programs_per_sm)`` overrides the tuned choice.
    ``checked=True``: the caller has checked :func:`gemv_applies_to_parts` (the fused step, every step).
    """
    parts = list(weight_t) if isinstance(weight_t, (list, tuple)) else [weight_t]
    if isinstance(bias, (list, tuple)):
        biases = list(bias)
    elif bias is None:
        biases = [None] * len(parts)
    else:
        biases = [bias] if len(parts) == 1 else []  # one bias for several matrices: refused below
    if GEMV_AHEAD not in (1, 2):
        raise ValueError(f"decode_kernels.GEMV_AHEAD must be 1 or 2 weight tiles, not {GEMV_AHEAD!r}")
    if gated_input is not None and gated_input not in GATES:
        raise ValueError(f"gemv: gated_input must be one of {sorted(GATES)} or None, not {gated_input!r}")
    if not checked and not gemv_applies_to_parts(parts, biases):
        raise ValueError("gemv: the weights must be 1 to 3 matrices of one layout, dtype and in-width, whose widths "
                         f"(all but the last) are multiples of {PART_ALIGNMENT}, with all biases or none")
    weight_t, bias = parts[0], biases[0]
    in_width, out_width = weight_t.shape[0], sum(w.shape[1] for w in parts)
    x, x_parts, x_stride = _as_parts(x)
    block_n, block_k, warps, stages, per_sm = config or _gemv_config(in_width, out_width, weight_t.stride(0) == 1)
    columns = triton.cdiv(out_width, block_n)
    # enough programs to fill the GPU, but few splits: the consumer reads every split's partial sums
    splits = max(1, min(MAX_SPLITS, triton.cdiv(in_width, block_k), per_sm * _sm_count(weight_t.device) // columns))
    k_per_split = triton.cdiv(triton.cdiv(in_width, splits), block_k) * block_k
    splits = triton.cdiv(in_width, k_per_split)
    out = torch.empty(splits, 1, out_width, dtype=torch.float32, device=weight_t.device)
    pdl = triton_support.dependent_launch(weight_t.device)
    bounds = [sum(w.shape[1] for w in parts[:i]) for i in range(1, MAX_WEIGHT_PARTS)]
    extra = []  # (weight, bias, first column) of the second and third parts, if any
    for i in (1, 2):
        w = parts[i] if i < len(parts) else weight_t
        b = biases[i] if i < len(parts) and biases[i] is not None else w
        extra += [w, b, bounds[i - 1] if i < len(parts) else out_width]
    if len(parts) > 1 and any(b % block_n for b in bounds[: len(parts) - 1]):
        raise ValueError(f"gemv: part boundaries {bounds} are not multiples of block_n={block_n}")
    _gemv_kernel[(columns, splits)](
        x, x_stride, weight_t, weight_t.stride(0), weight_t.stride(1), bias if bias is not None else weight_t, out,
        in_width, out_width, k_per_split, *extra, X_PARTS=x_parts, X_GATE=GATES.get(gated_input, 0), HAS_BIAS=bias is not None,
        W_PARTS=len(parts), BLOCK_N=block_n, BLOCK_K=block_k, PDL=pdl, PREFETCH=pdl or GEMV_PREFETCH_WITHOUT_PDL,
        AHEAD=GEMV_AHEAD, X_AHEAD=GEMV_X_AHEAD,
        num_warps=warps, num_stages=stages, launch_pdl=pdl,
    )
    return PartialSums(out)


def _gemv_config(in_width: int, out_width: int, k_contiguous: bool) -> Tuple[int, int, int, int, int]:
    """(block_n, block_k, warps, stages, programs per SM) by the shape's kind, from the 1B model's shapes
    timed alone on an H100 (``python bench/probes/gemv_retune.py``, sixteenth session; GB/s then against
    the tiles shipped before, at 3.01 TB/s copy bandwidth): q/k/v 2048x3072 2,668 against 1,942, down
    8192x2048 2,551 against 2,324, gate/up 2048x16384 2,804 against 2,743; the output projection and
    the output head kept theirs (2,382 and 3,082, within 1% of the best). The whole step with the new
    tiles: 933.7 / 933.6 tokens/s against 899.7 / 901.7 (batch-1 greedy, same process)."""
    if k_contiguous:  # [out, in] storage: each program reads whole rows of k
        if in_width > out_width:  # the down projection: few columns, long rows
            return 16, 128, 4, 2, 8
        if out_width >= 32 * in_width:  # an output head: thousands of column tiles fill the GPU unsplit
            return 16, 256, 8, 2, 8
        if in_width < out_width <= 2 * in_width:  # q/k/v: few columns, so wider tiles
            return 32, 128, 8, 2, 8
        return 16, 128, 8, 2, 8  # the output projection, gate/up
    return 64, 256, 4, 4, 8


_SM_COUNTS = {}


def _sm_count(device: torch.device) -> int:
    if device.type != "cuda":
        return 4  # Triton's interpreter: a few splits, so the tests cover split-K
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _SM_COUNTS:
        _SM_COUNTS[index] = torch.cuda.get_device_properties(index).multi_processor_count
    return _SM_COUNTS[index]


# Rows wider than 4,096 spill registers in the add+norm kernel (sm_90, 8 partial sums: 64 bytes per
# thread at 8,192, 576 with Gemma's delta norm, 2,192 at 16,384). Walking such rows in chunks of 4,096
# instead removed the spills but measured slower on an H100 (2026-12-05, seventh session: 9.36 against
# 5.10 us at 8,192, 17.18 against 10.24 at 16,384; bench/results/gpu_decode_h100.txt), so rows stay whole.
def add_rms_norm(x: torch.Tensor, delta, weight: torch.Tensor, eps: float,
                 delta_norm: Optional[Tuple[torch.Tensor, float]] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(x + delta, rms_norm(x + delta) * weight)``; with ``delta=None`` just ``(x, rms_norm(x) * weight)``.

    ``x`` is ``[rows, 1, width]``; ``delta`` the same shape or :class:`PartialSums`. The sum is rounded
    to the model dtype before it is normed, as the residual stream is stored. ``delta_norm =
    (weight, eps)`` norms ``delta`` first (Gemma 2/3's post-attention and post-feed-forward norms; the
    normed delta is rounded to the model dtype, as that norm's output is). Norm weights are what the
    normed values are multiplied by: Gemma's ``1 + weight`` is passed as such (``RMSNorm.scale``).
    """
    width = x.shape[-1]
    x = x.contiguous()
    rows = x.numel() // width
    delta, delta_parts, delta_stride = _as_parts(delta) if delta is not None else (x, 0, 0)
    total = torch.empty_like(x) if delta_parts else x
    normed = torch.empty_like(x)
    pdl = triton_support.dependent_launch(x.device)
    norms_delta = delta_norm is not None and delta_parts > 0
    delta_weight, delta_eps = delta_norm if norms_delta else (weight, 0.0)
    _add_rms_norm_kernel[(rows,)](
        x, delta, delta_stride, weight, total, normed, width, eps, delta_weight, delta_eps, x, 0, 0, 1.0,
        DELTA_PARTS=delta_parts, DELTA_NORM=norms_delta, GATHER=False, SCALED=False,
        BLOCK=triton.next_power_of_2(width), PDL=pdl,
        num_warps=_warps_for(width * max(1, delta_parts)), launch_pdl=pdl,
    )
    return total, normed


def embed_rms_norm(token: torch.Tensor, table_t: torch.Tensor, scale: Optional[float], weight: torch.Tensor,
                   eps: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(embedded, rms_norm(embedded) * weight)`` where ``embedded [rows, 1, width]`` are the rows of
    ``table_t [width, vocab]`` (the native model's stored embedding, either layout) at ``token [rows, 1]``,
    times ``scale`` (Gemma's, already rounded to the model dtype) where given, rounded as ``embedding *
    scale`` is: the first layer's :func:`add_rms_norm` with the embedding lookup in it, one launch
    instead of two, and the same bits as the lookup followed by the norm."""
    width = table_t.shape[0]
    rows = token.numel()
    token = token.reshape(rows).contiguous()  # a column sliced from the ids is strided
    embedded = torch.empty(rows, 1, width, dtype=table_t.dtype, device=table_t.device)
    normed = torch.empty_like(embedded)
    pdl = triton_support.dependent_launch(table_t.device)
    _add_rms_norm_kernel[(rows,)](
        table_t, embedded, 0, weight, embedded, normed, width, eps, weight, 0.0, token, table_t.stride(0),
        table_t.stride(1), float(scale if scale is not None else 1.0),
        DELTA_PARTS=0, DELTA_NORM=False, GATHER=True, SCALED=scale is not None,
        BLOCK=triton.next_power_of_2(width), PDL=pdl, num_warps=_warps_for(width), launch_pdl=pdl,
    )
    return embedded, normed


def gated(gate_up: torch.Tensor, act: str = "silu") -> torch.Tensor:
    """``act(gate) * up`` for ``gate_up = [..., 2 * width]`` holding gate then up (``act`` one of :data:`GATES`)."""
    if act not in GATES:
        raise ValueError(f"gated: act must be one of {sorted(GATES)}, not {act!r}")
    width = gate_up.shape[-1] // 2
    gate_up = gate_up.contiguous()
    rows = gate_up.numel() // (2 * width)
    out = torch.empty(*gate_up.shape[:-1], width, dtype=gate_up.dtype, device=gate_up.device)
    block = min(1024, triton.next_power_of_2(width))
    _gated_kernel[(rows, triton.cdiv(width, block))](gate_up, out, width, BLOCK=block, GATE=GATES[act], num_warps=4)
    return out


def rope_cache_attention(qkv, cos: torch.Tensor, sin: torch.Tensor, slot: torch.Tensor,
                         valid: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                         heads: int, kv_heads: int, head_dim: int,
                         config: Optional[Tuple[int, int, int, int, int]] = None,
                         arrivals: Optional[torch.Tensor] = None,
                         qk_norm: Optional[Tuple[torch.Tensor, torch.Tensor, float]] = None,
                         positions: Optional[torch.Tensor] = None, scale: Optional[float] = None,
                         softcap: Optional[float] = None, window: Optional[int] = None) -> torch.Tensor:
    """Attention output ``[batch, 1, heads * head_dim]`` of one new token per row.

    ``qkv [batch, 1, (heads + 2 kv_heads) * head_dim]`` (or :class:`PartialSums` of it) is the fused
    projection (queries, keys, values, unrotated); ``cos``/``sin`` come from the rotary embedding
    (``[batch or 1, 1, 1, rotary_dim]``: RoPE turns the first ``rotary_dim`` dimensions of each head,
    all of them but for Phi-3's partial rotary); ``slot`` (0-d long) is the cache slot of the new token, which
    this writes in ``keys``/``values`` ``[batch, kv_heads, max_cache_len, head_dim]``;
    ``valid [batch, max_cache_len]`` (bool) marks the slots each row attends to before ``slot``; the
    new token itself is always attended to. ``config = (splits, query heads per program, block_s,
    warps, stages)`` overrides the tuned one: ``splits`` (a power of two) programs share each query
    head's cached slots and the last to finish merges their softmax states, counting arrivals in
    ``arrivals`` (:func:`new_arrivals`; left zero, so the calls of one step may share it).
    ``qk_norm = (query weight, key weight, eps)`` RMS-norms each query and key head before RoPE (Qwen3).
    With ``positions [batch or 1, 1]`` (long), ``cos``/``sin`` are instead tables ``[rows, head_dim]`` by
    position (``RotaryEmbedding.table``) and each row rotates by the row of its position (clamped into
    the table): the step then launches no RoPE kernels of its own. ``scale`` multiplies the scores
    (None: ``head_dim ** -0.5``; Gemma's ``query_pre_attn_scalar ** -0.5``), ``softcap`` caps them as
    ``tanh(s / softcap) * softcap`` (Gemma 2), and ``window`` (a sliding layer over a cache whose slot
    ``s`` is position ``s``) limits each row to the slots after ``slot - window``.
    """
    if keys.stride() != values.stride() or keys.stride(-1) != 1:
        raise ValueError("rope_cache_attention needs key and value buffers of one contiguous layout")
    batch = keys.shape[0]
    groups = heads // kv_heads
    splits, queries, block_s, warps, stages = config or attention_config(batch, groups, head_dim, heads,
                                                                         _sm_count(keys.device))
    if config is None and keys.device.type != "cuda":
        # Triton's interpreter runs each program in Python (~0.1 s for this kernel): two splits still merge,
        # and the tests that draw their own config cover up to eight
        splits = min(splits, INTERPRETER_ATTENTION_SPLITS)
    if (softcap is not None and not softcap > 0) or (window is not None and window < 1):
        raise ValueError(f"softcap must be positive and window at least 1; got softcap={softcap}, window={window}")
    if groups % queries or splits & (splits - 1):
        raise ValueError(f"attention config {config}: query heads per program must divide the group size "
                         f"({groups}) and splits must be a power of two")
    qkv, qkv_parts, qkv_stride = _as_parts(qkv)
    cos, sin = cos.contiguous(), sin.contiguous()
    rotary_dim = cos.shape[-1]  # the dimensions RoPE turns, the first of each head (Phi-3: fewer than head_dim)
    if rotary_dim % 2 or rotary_dim > head_dim or sin.shape != cos.shape:
        raise ValueError(f"cos/sin {tuple(cos.shape)} / {tuple(sin.shape)}: the rotary width must be even, at most "
                         f"head_dim={head_dim}, and the same for both")
    if positions is not None and cos.dim() != 2:
        raise ValueError(f"with positions, cos/sin must be [rows, rotary_dim] tables; got {tuple(cos.shape)}")
    valid = valid.contiguous().view(torch.uint8)
    out = torch.empty(batch, 1, heads * head_dim, dtype=keys.dtype, device=keys.device)
    block_g, block_d = triton.next_power_of_2(queries), triton.next_power_of_2(head_dim)
    partial = counters = out  # not read with one split
    if splits > 1:
        partial = torch.empty(batch * heads // queries * splits * block_g * (block_d + 2), dtype=torch.float32,
                              device=keys.device)
        counters = arrivals if arrivals is not None else new_arrivals(batch, heads, keys.device)
    pdl = triton_support.dependent_launch(keys.device)
    _rope_cache_attention_kernel[(batch, heads // queries, splits)](
        qkv, qkv_stride, cos, sin, slot, valid, keys, values, out, partial, counters,
        *(qk_norm if qk_norm is not None else (out, out, 0.0)),
        *((positions, positions.stride(0) if positions.shape[0] > 1 else 0, cos.shape[0]) if positions is not None
          else (slot, 0, 1)),
        qkv.shape[-1], rotary_dim if cos.shape[0] > 1 else 0, valid.shape[-1],
        keys.stride(0), keys.stride(1), keys.stride(2), head_dim ** -0.5 if scale is None else scale,
        float(softcap or 1.0), int(window or 0),
        HEADS=heads, KV_HEADS=kv_heads, GROUPS=groups, DIM=head_dim, QKV_PARTS=qkv_parts, QUERIES=queries,
        SPLITS=splits, BLOCK_G=block_g, BLOCK_D=block_d, BLOCK_S=block_s, QK_NORM=qk_norm is not None,
        ROPE_TABLE=positions is not None, PDL=pdl, ROPE_DIM=rotary_dim, EARLY_LOADS=ATTENTION_EARLY_LOADS,
        SOFTCAP=softcap is not None,
        num_warps=warps, num_stages=stages, launch_pdl=pdl,
    )
    return out


def attention_config(batch: int, groups: int, head_dim: int, heads: Optional[int] = None,
                     multiprocessors: Optional[int] = None) -> Tuple[int, int, int, int, int]:
    """The tuned ``(splits, query heads per program, block_s, warps, stages)`` of :func:`rope_cache_attention`
    for this batch (one row or more), fitted to the model: query heads per program divide its group
    size, and slots per tile shrink for heads larger than the tuned one -- each program holds a
    ``[queries, block_s, head_dim]`` tile of products, which must not outgrow the tuned tile. A fitted
    split count (0 in :data:`ATTENTION_CONFIG`) comes from :func:`attention_splits` given the model's
    query ``heads`` and the GPU's ``multiprocessors`` (1 without them)."""
    splits, tuned_queries, tuned_block_s, warps, stages = ATTENTION_CONFIG["one row" if batch == 1 else "rows"]
    queries = math.gcd(tuned_queries, groups)
    fits = tuned_queries * tuned_block_s * ATTENTION_TUNED_HEAD_DIM // (queries * triton.next_power_of_2(head_dim))
    block_s = min(tuned_block_s, 1 << (max(1, fits).bit_length() - 1))  # a power of two (a tl.arange size)
    if splits == 0:
        splits = attention_splits(batch * heads // queries, multiprocessors) if heads and multiprocessors else 1
    return splits, queries, block_s, warps, stages


def attention_splits(programs: int, multiprocessors: int) -> int:
    """How many ways to split each row's cached slots when the unsplit launch has ``programs`` programs: the
    largest power of two (at most :data:`MAX_ATTENTION_SPLITS`) that keeps the launch within
    :data:`ROWS_PROGRAMS_PER_SM` programs per multiprocessor, and 1 where even that is too many -- a few
    rows get the GPU's width, many rows no merge to pay for."""
    splits = 1
    while splits < MAX_ATTENTION_SPLITS and programs * splits * 2 <= ROWS_PROGRAMS_PER_SM * multiprocessors:
        splits *= 2
    return splits


def new_arrivals(batch: int, heads: int, device: torch.device) -> torch.Tensor:
    """Zeroed counters for :func:`rope_cache_attention`'s split merge (it leaves them zero)."""
    return torch.zeros(batch * heads, dtype=torch.int32, device=device)


def _warps_for(width: int) -> int:
    return 4 if width <= 2048 else 8 if width <= 8192 else 16
