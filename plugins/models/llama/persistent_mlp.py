"""The second half of a decoder layer -- output projection, residual add + RMSNorm, gate/up, SiLU(gate) * up,
down projection, and the next layer's add + RMSNorm and q/k/v projection -- as ONE persistent Triton launch
at batch 1 (Llama-shaped layers). Experimental: off unless ``GENPLUG_PERSISTENT_MLP=1``, because it is slower
than the kernels it replaces -- 68 us a layer against 46 on an H100, the batch-1 step 524-538 tokens/s
against 861 (2026-12-05, ninth session: ``bench/probes/persistent_second.sh``; docs/performance.md). Its
loops took ~1.45 us a weight tile whatever the tile's size or the pipeline's depth, so they were held by each
iteration's own work, not by bytes in flight: hence the lean loops (``LEAN_LOOPS``), measured on an H100 on
2026-12-06 (tenth session): 59.8 us a layer against 67.1 with the waits in the loops and 45.7 for the step's
kernels, the step 545.7 tokens/s against 866.3 -- the waits between the loops (~5, 11 and 5 us) now cost
more than the loops' streaming.

Why: in a batch-1 step memory stands idle while the small kernels between the matmuls run, and each
matmul starts streaming its weights only once it is launched, one tile ahead per program. Here every
program walks its share of the three matrices' weight tiles in order through tensor descriptors (TMA),
software-pipelined ``STAGES`` deep, and waits for activations only at each matrix's first tile: the
weights keep streaming into shared memory while a program waits for the others.

Work split over ``P`` programs, all resident at once (128 on an H100's 132 SMs):

* **output projection, by rows**: each program owns ``H / P`` whole rows, so it holds the whole attention
  output and finishes its rows itself: it adds them to the residual, stores the new residual stream
  (bf16, as the model keeps it) and publishes the rows' sum of squares;
* **gate/up, by blocks**: ``P / GROUPS`` blocks of outputs x ``GROUPS`` groups of 256 inputs. Once every
  program has published, each reads its 256 inputs of the residual stream and the ``P`` sums of squares
  (the RMSNorm's scale: no program holds a whole row) and streams its block, storing partial sums;
* **down, by blocks**: the same split over the ``I / GROUPS`` inputs of each group, act(gate) * up
  computed from the gate/up partials at the first tile; its partial sums are left for the next add+norm
  kernel to add up (:class:`.decode_kernels.PartialSums` of ``GROUPS`` parts) --
* **or the next layer's q/k/v, by blocks** (``next_layer``): once every program has published the down
  projection, each reads the whole new residual row (h plus the ``GROUPS`` partials) for the input norm's
  scale, stores its slice of it, and streams its block of the next layer's q/k/v projection, whose
  partial sums that layer's attention kernel adds up. The next layer then skips its add+norm and q/k/v
  launches: a layer is attention plus this launch.

Activations are read with inline-PTX loads after an inline-PTX wait (acquire) on a count of programs that
have published, the wait predicated inside the PTX on "this is the matrix's first tile": Triton's
pipeliner must see neither a branch nor an atomic in the loop, nor hoist a wait into its prologue
(bench/probes/pipelined_spin_compile.py). A program publishes its results with a CTA barrier and then
one release add by its first thread, in one PTX op after its stores.

In Triton's interpreter (the CPU tests) the PTX becomes plain loads and stores and each matrix is its own
launch (``PHASES`` 1, 2, 4, 8): the interpreter runs programs one after another, where waiting for the
others would never end. The tests check the arithmetic there; the synchronisation runs only on a GPU.
"""

from __future__ import annotations

import functools
import os
import warnings
import weakref
from typing import NamedTuple, Optional

import torch
import triton
import triton.language as tl

from genplug import triton_support

# Off by default: correct on an H100 (graph == eager) but slower than the step's kernels (2026-12-05)
ENABLED = os.environ.get("GENPLUG_PERSISTENT_MLP", "0") == "1"
TAKE_NEXT = True  # also start the next layer where it can (False: bench/probes/step_variants.py's comparison)
BLOCK_K = 256  # inputs per group; a TMA box is at most 256 elements along a dimension
TILE_ELEMENTS = 8192  # the output and down projections' tiles (16 KB in bf16); gate/up's are twice that
STAGES = 4  # weight tiles a loop's pipeline holds (STAGES - 1 in flight)
DOWN_STAGES = None  # the down projection's (None: STAGES)
# each loop holds only weight tiles -- prefetch its first tiles to L2, wait, inputs once, then loop -- or
# (False) each loop waits and computes its inputs at its first tile (H100: 59.8 against 67.1 us a layer)
LEAN_LOOPS = True
WARPS = None  # warps per program (None: 4, more for bigger gate/up tiles); bench/probes/persistent_mlp.py --sweep


@triton.jit
def _address(pointers):
    """Pointers as 64-bit integers for inline PTX (Triton 3.6 takes no pointers of two types in one asm)."""
    return pointers.to(tl.int64, bitcast=True)


@triton.jit
def _is(t, value, shape: tl.constexpr):
    """int32 ``t == value`` broadcast to ``shape`` (a loop index is a plain integer in Triton's interpreter)."""
    return ((tl.zeros(shape, tl.int32) + t) == value).to(tl.int32)


@triton.jit
def _wait_previous_kernel_if(flag, EMULATE: tl.constexpr):
    """``flag`` (int32) back, after -- where it is set -- waiting for the previous kernel (programmatic
    dependent launch: ``griddepcontrol.wait``; a no-op in a launch without it)."""
    if EMULATE:
        return flag
    return tl.inline_asm_elementwise(
        "{ .reg .pred p; setp.ne.s32 p, $1, 0; @p griddepcontrol.wait; mov.b32 $0, $1; }", "=r,r", [flag],
        dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def _wait_count_if(flag, counter_ptr, needed, EMULATE: tl.constexpr):
    """``flag`` (int32) back, after -- where it is set -- waiting until ``*counter >= needed``: thread 0 spins
    (acquire), then a CTA barrier lets the others on. One poller per program: with every thread polling, 16K
    threads hammered one L2 line and the programs' release adds queued behind them (the waits took 4-8 us
    after the last program had published, H100, 2026-12-05, ninth session).

    A wait of 2^26 reads (tens of seconds; a step's waits take microseconds) means a program that never
    came -- programs not all resident at once, say another kernel holding SMs -- and ends the kernel with
    ``trap``: the process then gets a CUDA error instead of hanging."""
    if EMULATE:
        return flag
    return tl.inline_asm_elementwise(
        "{ .reg .pred p, w, stuck, other; .reg .b32 v, n, t; mov.b32 $0, $3; setp.eq.s32 p, $3, 0; @p bra $$done; "
        "mov.u32 t, %tid.x; setp.ne.u32 other, t, 0; @other bra $$sync; "
        "mov.b32 n, 0; $$wait: ld.acquire.gpu.global.b32 v, [$1]; setp.ge.s32 w, v, $2; @w bra $$sync; "
        "add.s32 n, n, 1; setp.gt.u32 stuck, n, 67108864; @stuck trap; bra $$wait; "
        "$$sync: barrier.sync 0; $$done: }", "=r,l,r,r",
        [_address(counter_ptr + tl.zeros_like(flag)), needed + tl.zeros_like(flag), flag],
        dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def _load_f32_if(flag, pointers, EMULATE: tl.constexpr):
    """float32 ``*pointers`` where ``flag`` is set (read from L2: written by other programs), else 0."""
    if EMULATE:
        return tl.load(pointers, mask=flag != 0, other=0.0)
    return tl.inline_asm_elementwise(
        "{ .reg .pred p; setp.ne.s32 p, $2, 0; mov.b32 $0, 0; @p ld.global.cg.b32 $0, [$1]; }", "=r,l,r",
        [_address(pointers), flag], dtype=tl.float32, is_pure=False, pack=1)


# sum(pointer[0:count]) in order, 32 values a round: 8 vector loads issued before the first add, so a round
# costs one L2 round trip (one load then one add per value, 128 round trips, took ~18 us a layer, H100,
# 2026-12-05, ninth session); count a multiple of 32, the pointer 16-byte aligned
_SUM_BY_32 = tl.constexpr(
    "{ .reg .pred p, more; .reg .b32 i; .reg .f32 v<32>; .reg .b64 at; mov.b32 $0, 0; setp.eq.s32 p, $2, 0; "
    "@p bra $$done; mov.b64 at, $1; mov.b32 i, 0; $$next: "
    + " ".join(f"ld.global.cg.v4.f32 {{v{4 * j}, v{4 * j + 1}, v{4 * j + 2}, v{4 * j + 3}}}, [at+{16 * j}];"
               for j in range(8))
    + " " + " ".join(f"add.f32 $0, $0, v{j};" for j in range(32))
    + " add.s64 at, at, 128; add.s32 i, i, 32; setp.lt.s32 more, i, $3; @more bra $$next; $$done: }")
_SUM_BY_1 = tl.constexpr(  # the same one value at a time, for counts that are not a multiple of 32
    "{ .reg .pred p, more; .reg .b32 i, v; .reg .b64 at; mov.b32 $0, 0; setp.eq.s32 p, $2, 0; @p bra $$done; "
    "mov.b64 at, $1; mov.b32 i, 0; $$next: ld.global.cg.f32 v, [at]; add.f32 $0, $0, v; add.s64 at, at, 4; "
    "add.s32 i, i, 1; setp.lt.s32 more, i, $3; @more bra $$next; $$done: }")


@triton.jit
def _sum_f32_if(flag, pointer, COUNT: tl.constexpr, EMULATE: tl.constexpr):
    """``sum(pointer[0:COUNT])`` (float32, in order) where ``flag`` (int32 ``[1]``) is set, else 0 -- every
    thread adds them up itself (from L2), so the loop's other iterations pay no CTA-wide reduction."""
    if EMULATE:
        return tl.sum(tl.load(pointer + tl.arange(0, 1024), mask=(tl.arange(0, 1024) < COUNT) & (flag != 0),
                              other=0.0), axis=0) + tl.zeros([1], tl.float32)
    if COUNT % 32 == 0:
        return tl.inline_asm_elementwise(_SUM_BY_32, "=r,l,r,r", [_address(pointer + tl.zeros_like(flag)), flag,
                                                                  COUNT + tl.zeros_like(flag)],
                                         dtype=tl.float32, is_pure=False, pack=1)
    return tl.inline_asm_elementwise(_SUM_BY_1, "=r,l,r,r", [_address(pointer + tl.zeros_like(flag)), flag,
                                                             COUNT + tl.zeros_like(flag)],
                                     dtype=tl.float32, is_pure=False, pack=1)


@triton.jit
def _load_bf16_if(flag, pointers, EMULATE: tl.constexpr):
    """bf16 ``*pointers`` as float32 where ``flag`` is set, else 0."""
    if EMULATE:
        return tl.load(pointers, mask=flag != 0, other=0.0).to(tl.float32)
    return tl.inline_asm_elementwise(
        "{ .reg .pred p; .reg .b16 h; setp.ne.s32 p, $2, 0; mov.b32 $0, 0; @p ld.global.cg.b16 h, [$1]; "
        "@p cvt.f32.bf16 $0, h; }", "=r,l,r", [_address(pointers), flag], dtype=tl.float32, is_pure=False, pack=1)


@triton.jit
def _store_f32_if(flag, pointers, values, EMULATE: tl.constexpr):
    """Store float32 ``values`` where ``flag`` is set, as inline PTX (kept in order before a :func:`_publish`);
    int32 zeros back (an inline-PTX op has an output)."""
    if EMULATE:
        tl.store(pointers, values, mask=flag != 0)
        return tl.zeros_like(flag)
    return tl.inline_asm_elementwise(
        "{ .reg .pred p; setp.ne.s32 p, $2, 0; @p st.global.b32 [$1], $3; mov.b32 $0, 0; }", "=r,l,r,r",
        [_address(pointers), flag, values], dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def _store_bf16_if(flag, pointers, values, EMULATE: tl.constexpr):
    """Store float32 ``values`` rounded to bf16 where ``flag`` is set (see :func:`_store_f32_if`)."""
    if EMULATE:
        tl.store(pointers, values.to(tl.bfloat16), mask=flag != 0)
        return tl.zeros_like(flag)
    return tl.inline_asm_elementwise(
        "{ .reg .pred p; .reg .b16 h; setp.ne.s32 p, $2, 0; cvt.rn.bf16.f32 h, $3; @p st.global.b16 [$1], h; "
        "mov.b32 $0, 0; }", "=r,l,r,r", [_address(pointers), flag, values], dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def _publish(counter_ptr, last, EMULATE: tl.constexpr):
    """Where ``last`` (int32 ``[1]``, the same in every thread) is set: a CTA barrier, then one release add of 1
    to ``*counter`` by thread 0 -- so a program that acquires the count sees every store this program made
    before (its stores are inline PTX too, and the compiler keeps such ops in program order). Inline PTX: an
    atomic in the loop stops the pipelining."""
    if not EMULATE:
        tl.inline_asm_elementwise(
            "{ .reg .pred l, p, q; .reg .b32 r; setp.ne.s32 l, $2, 0; @l bar.sync 0; mov.u32 r, %tid.x; "
            "setp.eq.u32 p, r, 0; and.pred q, p, l; @q red.release.gpu.global.add.s32 [$1], 1; mov.b32 $0, $2; }",
            "=r,l,r", [_address(counter_ptr + tl.zeros([1], tl.int32)), last], dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def _stamp(flag, stamps_ptr, index, TIMELINE: tl.constexpr):
    """With ``TIMELINE``, where ``flag`` is set: thread 0 writes the GPU's clock (``%globaltimer``, ns) to
    ``stamps[program * 8 + index]`` -- where a program's time goes, for bench/probes/persistent_mlp.py."""
    if TIMELINE:
        tl.inline_asm_elementwise(
            "{ .reg .pred p, q; .reg .u64 t; .reg .b32 r; mov.u32 r, %tid.x; setp.eq.u32 p, r, 0; "
            "setp.ne.and.s32 q, $2, 0, p; mov.u64 t, %globaltimer; @q st.global.u64 [$1], t; mov.b32 $0, $2; }",
            "=r,l,r", [_address(stamps_ptr + tl.program_id(0) * 8 + index + tl.zeros_like(flag)), flag],
            dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def _prefetch_l2(pointers, mask, EMULATE: tl.constexpr):
    """Ask L2 for the 128-byte lines at ``pointers`` (where ``mask``), without waiting: weights a loop reads
    next arrive while the program waits for its inputs."""
    if not EMULATE:
        tl.inline_asm_elementwise(
            "{ .reg .pred p; setp.ne.s32 p, $2, 0; @p prefetch.global.L2 [$1]; mov.b32 $0, 0; }", "=r,l,r",
            [_address(pointers), mask.to(tl.int32)], dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def _gate_up_inputs(ready, squares_ptr, h_ptr, my_k, weight, eps, H: tl.constexpr, PROGRAMS: tl.constexpr,
                    BLOCK_K: tl.constexpr, EMULATE: tl.constexpr):
    """This program's inputs of gate/up where ``ready`` (int32 ``[1]``): its slice of the residual stream h,
    RMS-normed with the scale from every program's sum of squares, rounded to bf16."""
    total = _sum_f32_if(ready, squares_ptr, PROGRAMS, EMULATE)
    h = _load_bf16_if(ready + tl.zeros([BLOCK_K], tl.int32), h_ptr + my_k, EMULATE)
    return (h * (1.0 / tl.sqrt(total / H + eps)) * weight).to(tl.bfloat16).to(tl.float32)


@triton.jit
def _down_inputs(ready, gu_part_ptr, d_k, I: tl.constexpr, GROUPS: tl.constexpr, D_BOXES: tl.constexpr,
                 BLOCK_K: tl.constexpr, EMULATE: tl.constexpr):
    """This program's inputs of the down projection where ``ready`` (int32 ``[1]``): SiLU(gate) * up from the
    gate/up partial sums of every group, added in a fixed order."""
    ready = ready + tl.zeros([D_BOXES, BLOCK_K], tl.int32)
    gate = tl.zeros([D_BOXES, BLOCK_K], tl.float32)
    up = tl.zeros([D_BOXES, BLOCK_K], tl.float32)
    for g in tl.static_range(GROUPS):
        gate += _load_f32_if(ready, gu_part_ptr + g * 2 * I + d_k, EMULATE)
        up += _load_f32_if(ready, gu_part_ptr + g * 2 * I + I + d_k, EMULATE)
    return gate / (1.0 + tl.exp(-gate)) * up


@triton.jit
def _next_inputs(ready, h_ptr, d_part_ptr, next_resid_ptr, cols, mine, my_k, next_weight, next_eps, H: tl.constexpr,
                 GROUPS: tl.constexpr, BLOCK_K: tl.constexpr, EMULATE: tl.constexpr):
    """This program's inputs of the next layer's q/k/v projection where ``ready`` (int32 ``[1]``): the whole
    new residual row (h and the down projection's partial sums, in the order the add+norm kernel adds them,
    rounded to bf16 as the stream is stored) for the norm's scale -- storing this program's share of it --
    and its own slice normed."""
    row_ready = ready + tl.zeros([H], tl.int32)
    row = _load_bf16_if(row_ready, h_ptr + cols, EMULATE)
    k_ready = ready + tl.zeros([BLOCK_K], tl.int32)
    x = _load_bf16_if(k_ready, h_ptr + my_k, EMULATE)
    for g in tl.static_range(GROUPS):
        row += _load_f32_if(row_ready, d_part_ptr + g * H + cols, EMULATE)
        x += _load_f32_if(k_ready, d_part_ptr + g * H + my_k, EMULATE)
    row = row.to(tl.bfloat16).to(tl.float32)
    _store_bf16_if(row_ready * mine.to(tl.int32), next_resid_ptr + cols, row, EMULATE)
    inverse_rms = 1.0 / tl.sqrt(tl.sum(row * row, axis=0) / H + next_eps)
    return (x.to(tl.bfloat16).to(tl.float32) * inverse_rms * next_weight).to(tl.bfloat16).to(tl.float32)


@triton.jit
def _persistent_mlp_kernel(
        wo_desc, wgu_desc, wd_desc, wq_desc, wgu_ptr, wd_ptr, wq_ptr, attn_ptr, resid_ptr, norm_ptr, h_ptr, squares_ptr, gu_part_ptr,
        d_part_ptr, next_norm_ptr, next_resid_ptr, q_part_ptr, ready_ptr, stamps_ptr, eps, next_eps,
        H: tl.constexpr, I: tl.constexpr, Q_OUT: tl.constexpr, PROGRAMS: tl.constexpr, GROUPS: tl.constexpr,
        BLOCK_K: tl.constexpr, BN_O: tl.constexpr, BN_GU: tl.constexpr, BN_D: tl.constexpr, BN_Q: tl.constexpr,
        STAGES: tl.constexpr, DOWN_STAGES: tl.constexpr, PHASES: tl.constexpr, EMULATE: tl.constexpr,
        TIMELINE: tl.constexpr, LEAN: tl.constexpr):
    # wo_desc: Wo [H, H / BLOCK_K, BLOCK_K] (rows whole), box [BN_O, H / BLOCK_K, BLOCK_K];
    # wgu_desc: Wgu^T [H, 2I] (input-major, as the native model stores it: gate columns, then up), box [BLOCK_K, BN_GU];
    # wd_desc: Wd [H, I / BLOCK_K, BLOCK_K], box [BN_D, I / GROUPS / BLOCK_K, BLOCK_K].
    # attn, resid: [H] bf16 from the previous kernel. Out: h [H] bf16 (resid + Wo attn), squares [PROGRAMS]
    # (each program's rows' sum of h^2), gu_part [GROUPS, 2I] and d_part [GROUPS, H] float32 partial sums.
    # With PHASES & 8, the next layer's start too: its residual stream next_resid = h + down (bf16), normed
    # by next_norm, through its q/k/v projection wq_desc (Wqkv [Q_OUT, H], box [BN_Q, BLOCK_K]) into q_part
    # [GROUPS, Q_OUT] float32 partial sums. ready [3], zeroed: programs done with the output projection,
    # with gate/up, with down. wgu, wd, wq: the same weights' storage, for L2 prefetches (LEAN).
    # LEAN: the gate/up, down and q/k/v loops hold nothing but weight tiles -- a program asks L2 for its first
    # PREFETCH tiles, waits, computes its inputs once, then loops; else each loop waits at its first tile.
    PREFETCH: tl.constexpr = 4
    program = tl.program_id(0)
    group = program % GROUPS
    row_block = program // GROUPS
    ROW_BLOCKS: tl.constexpr = PROGRAMS // GROUPS
    H_BOXES: tl.constexpr = H // BLOCK_K
    D_BOXES: tl.constexpr = I // GROUPS // BLOCK_K
    k = tl.arange(0, BLOCK_K)

    # the output projection: this program's H / PROGRAMS rows, whole
    O_ROWS: tl.constexpr = H // PROGRAMS
    O_TILES: tl.constexpr = O_ROWS // BN_O
    attn_k = tl.arange(0, H_BOXES)[:, None] * BLOCK_K + k[None, :]
    n_o = tl.arange(0, BN_O)
    x_o = tl.zeros([H_BOXES, BLOCK_K], tl.float32)
    squares = tl.zeros([BN_O], tl.float32)
    once = tl.full([1], 1, tl.int32)
    _stamp(once, stamps_ptr, 0, TIMELINE)
    for t in tl.range(0, O_TILES * (PHASES & 1), num_stages=STAGES):
        first_row = program * O_ROWS + t * BN_O
        w = wo_desc.load([first_row, 0, 0])  # weights: independent of every wait
        ready = _wait_previous_kernel_if(_is(t, 0, [H_BOXES, BLOCK_K]), EMULATE)
        x_o = tl.where(t == 0, _load_bf16_if(ready, attn_ptr + attn_k, EMULATE), x_o)
        _stamp(_is(t, 0, [1]), stamps_ptr, 1, TIMELINE)
        o = tl.sum(tl.sum(w.to(tl.float32) * x_o[None, :, :], axis=2), axis=1)
        rows = first_row + n_o
        every = tl.full([BN_O], 1, tl.int32)
        h = (_load_bf16_if(every, resid_ptr + rows, EMULATE) + o).to(tl.bfloat16).to(tl.float32)
        _store_bf16_if(every, h_ptr + rows, h, EMULATE)
        squares += h * h
        last = _is(t, O_TILES - 1, [BN_O])
        _store_f32_if(last, squares_ptr + program + n_o * 0, tl.sum(squares, axis=0) + tl.zeros([BN_O], tl.float32),
                      EMULATE)
        _publish(ready_ptr, _is(t, O_TILES - 1, [1]), EMULATE)

    _stamp(once, stamps_ptr, 2, TIMELINE)

    # gate/up: outputs [row_block * GU_ROWS, + GU_ROWS) x inputs [group * BLOCK_K, + BLOCK_K)
    GU_ROWS: tl.constexpr = 2 * I // ROW_BLOCKS
    GU_TILES: tl.constexpr = GU_ROWS // BN_GU
    my_k = group * BLOCK_K + k
    weight = tl.load(norm_ptr + my_k).to(tl.float32)
    n_gu = tl.arange(0, BN_GU)
    x_gu = tl.zeros([BLOCK_K], tl.float32)
    if LEAN and (PHASES >> 1) & 1:  # one 128-byte line per input row per tile of BN_GU = 64 outputs
        tiles = tl.arange(0, PREFETCH)
        _prefetch_l2(wgu_ptr + my_k[:, None] * (2 * I) + row_block * GU_ROWS + tiles[None, :] * BN_GU,
                     (tiles < GU_TILES)[None, :] & (my_k >= 0)[:, None], EMULATE)
        ready = _wait_count_if(once, ready_ptr, PROGRAMS, EMULATE)
        x_gu = _gate_up_inputs(ready, squares_ptr, h_ptr, my_k, weight, eps, H, PROGRAMS, BLOCK_K, EMULATE)
        _stamp(once, stamps_ptr, 3, TIMELINE)
    for t in tl.range(0, GU_TILES * ((PHASES >> 1) & 1), num_stages=STAGES):
        first_row = row_block * GU_ROWS + t * BN_GU
        w = wgu_desc.load([group * BLOCK_K, first_row])
        if not LEAN:
            ready = _wait_count_if(_is(t, 0, [1]), ready_ptr, PROGRAMS, EMULATE)
            x_gu = tl.where(t == 0, _gate_up_inputs(ready, squares_ptr, h_ptr, my_k, weight, eps, H, PROGRAMS, BLOCK_K,
                                                    EMULATE), x_gu)
            _stamp(_is(t, 0, [1]), stamps_ptr, 3, TIMELINE)
        part = tl.sum(w.to(tl.float32) * x_gu[:, None], axis=0)
        every = tl.full([BN_GU], 1, tl.int32)
        _store_f32_if(every, gu_part_ptr + group * 2 * I + first_row + n_gu, part, EMULATE)
        _publish(ready_ptr + 1, _is(t, GU_TILES - 1, [1]), EMULATE)
    _stamp(once, stamps_ptr, 4, TIMELINE)
    if not EMULATE:
        # every program has published the output projection, so all are resident: the next kernel may start
        tl.extra.cuda.gdc_launch_dependents()

    # down: rows [row_block * D_ROWS, + D_ROWS) x columns [group * I / GROUPS, + I / GROUPS)
    D_ROWS: tl.constexpr = H // ROW_BLOCKS
    D_TILES: tl.constexpr = D_ROWS // BN_D
    d_k = group * (I // GROUPS) + tl.arange(0, D_BOXES)[:, None] * BLOCK_K + k[None, :]
    n_d = tl.arange(0, BN_D)
    x_d = tl.zeros([D_BOXES, BLOCK_K], tl.float32)
    if LEAN and (PHASES >> 2) & 1:  # a row's I / GROUPS inputs are LINES 128-byte lines
        LINES: tl.constexpr = I // GROUPS * 2 // 128
        rows = tl.arange(0, PREFETCH * BN_D)
        lines = tl.arange(0, LINES)
        _prefetch_l2(wd_ptr + (row_block * D_ROWS + rows[:, None]) * I + group * (I // GROUPS) + lines[None, :] * 64,
                     (rows < D_ROWS)[:, None] & (lines >= 0)[None, :], EMULATE)
        ready = _wait_count_if(once, ready_ptr + 1, PROGRAMS, EMULATE)
        x_d = _down_inputs(ready, gu_part_ptr, d_k, I, GROUPS, D_BOXES, BLOCK_K, EMULATE)
        _stamp(once, stamps_ptr, 5, TIMELINE)
    for t in tl.range(0, D_TILES * ((PHASES >> 2) & 1), num_stages=DOWN_STAGES):
        first_row = row_block * D_ROWS + t * BN_D
        w = wd_desc.load([first_row, group * D_BOXES, 0])
        if not LEAN:
            ready = _wait_count_if(_is(t, 0, [1]), ready_ptr + 1, PROGRAMS, EMULATE)
            x_d = tl.where(t == 0, _down_inputs(ready, gu_part_ptr, d_k, I, GROUPS, D_BOXES, BLOCK_K, EMULATE), x_d)
            _stamp(_is(t, 0, [1]), stamps_ptr, 5, TIMELINE)
        part = tl.sum(tl.sum(w.to(tl.float32) * x_d[None, :, :], axis=2), axis=1)
        _store_f32_if(tl.full([BN_D], 1, tl.int32), d_part_ptr + group * H + first_row + n_d, part, EMULATE)
        _publish(ready_ptr + 2, _is(t, D_TILES - 1, [1]), EMULATE)
    _stamp(once, stamps_ptr, 6, TIMELINE)

    # the next layer's q/k/v: outputs [row_block * Q_ROWS, + Q_ROWS) x inputs [group * BLOCK_K, + BLOCK_K).
    # Its input norm needs the whole new residual row: at the first tile every program reads it (h and the
    # down projection's GROUPS partials: 72 KB from L2), and stores its share of it.
    Q_ROWS: tl.constexpr = Q_OUT // ROW_BLOCKS
    Q_TILES: tl.constexpr = Q_ROWS // BN_Q
    cols = tl.arange(0, H)
    mine = (cols // (H // PROGRAMS)) == program
    next_weight = tl.load(next_norm_ptr + my_k).to(tl.float32)
    n_q = tl.arange(0, BN_Q)
    x_q = tl.zeros([BLOCK_K], tl.float32)
    if LEAN and (PHASES >> 3) & 1:  # a row's BLOCK_K inputs are Q_LINES 128-byte lines
        Q_LINES: tl.constexpr = BLOCK_K * 2 // 128
        rows = tl.arange(0, PREFETCH * BN_Q)
        lines = tl.arange(0, Q_LINES)
        _prefetch_l2(wq_ptr + (row_block * Q_ROWS + rows[:, None]) * H + group * BLOCK_K + lines[None, :] * 64,
                     (rows < Q_ROWS)[:, None] & (lines >= 0)[None, :], EMULATE)
        ready = _wait_count_if(once, ready_ptr + 2, PROGRAMS, EMULATE)
        x_q = _next_inputs(ready, h_ptr, d_part_ptr, next_resid_ptr, cols, mine, my_k, next_weight, next_eps, H,
                           GROUPS, BLOCK_K, EMULATE)
        _stamp(once, stamps_ptr, 7, TIMELINE)
    for t in tl.range(0, Q_TILES * ((PHASES >> 3) & 1), num_stages=STAGES):
        first_row = row_block * Q_ROWS + t * BN_Q
        w = wq_desc.load([first_row, group * BLOCK_K])
        if not LEAN:
            ready = _wait_count_if(_is(t, 0, [1]), ready_ptr + 2, PROGRAMS, EMULATE)
            x_q = tl.where(t == 0, _next_inputs(ready, h_ptr, d_part_ptr, next_resid_ptr, cols, mine, my_k, next_weight,
                                                next_eps, H, GROUPS, BLOCK_K, EMULATE), x_q)
            _stamp(_is(t, 0, [1]), stamps_ptr, 7, TIMELINE)
        part = tl.sum(w.to(tl.float32) * x_q[None, :], axis=1)
        tl.store(q_part_ptr + group * Q_OUT + first_row + n_q, part)


class Layout(NamedTuple):
    """How the kernel splits a layer: ``programs`` (a power of two, all resident at once), ``groups`` of
    256 inputs, and the rows per weight tile of the output (``bn_o``), gate/up (``bn_gu``) and down
    (``bn_d``) projections, and of the next layer's q/k/v projection (``bn_q``; 0: not taken along)."""
    programs: int
    groups: int
    bn_o: int
    bn_gu: int
    bn_d: int
    bn_q: int = 0


def layout_problem(hidden: int, intermediate: int, layout: Layout, qkv_out: int = 0) -> Optional[str]:
    """Why ``layout`` cannot split a layer of this shape (with the next layer's q/k/v projection of
    ``qkv_out`` outputs, if not 0), or None."""
    programs, groups, bn_o, bn_gu, bn_d, bn_q = layout
    if hidden != groups * BLOCK_K:
        return f"hidden {hidden} must be groups x {BLOCK_K}"
    if programs & (programs - 1) or programs % groups or programs > 1024:
        return "programs must be a power of two (at most 1,024) and a multiple of groups"
    row_blocks = programs // groups
    if hidden % programs or (hidden // programs) % bn_o:
        return "the output projection's rows must split evenly"
    if (2 * intermediate) % row_blocks or (2 * intermediate // row_blocks) % bn_gu:
        return "gate/up rows must split evenly"
    if intermediate % (groups * BLOCK_K):
        return f"intermediate must be a multiple of groups x {BLOCK_K}"
    if hidden % row_blocks or (hidden // row_blocks) % bn_d:
        return "the down projection's rows must split evenly"
    if qkv_out and (not bn_q or qkv_out % row_blocks or (qkv_out // row_blocks) % bn_q):
        return "the next layer's q/k/v rows must split evenly"
    if max(bn_o, bn_gu, bn_d, bn_q, hidden // BLOCK_K, intermediate // groups // BLOCK_K) > 256:
        return "a TMA box is at most 256 elements along each dimension"
    return None


@functools.lru_cache(maxsize=None)  # asked per layer on every eager step: a pure function of four integers
def layout_for(hidden: int, intermediate: int, sms: int, qkv_out: int = 0) -> Optional[Layout]:
    """The split for a layer on a GPU of ``sms`` multiprocessors: the most programs that fit (a power of
    two), tiles of ~16 KB (32 KB for gate/up and q/k/v); None where the shape does not split. With
    ``qkv_out``, one that also splits the next layer's q/k/v projection (``bn_q``), else ``bn_q`` is 0."""
    if hidden % BLOCK_K:
        return None
    groups = hidden // BLOCK_K
    programs = 1 << (max(sms, 1).bit_length() - 1)
    while programs >= groups:
        row_blocks = programs // groups
        rows_o = hidden // programs if hidden % programs == 0 else 0
        rows_d = hidden // row_blocks if hidden % row_blocks == 0 else 0
        rows_q = qkv_out // row_blocks if qkv_out and qkv_out % row_blocks == 0 else 0
        layout = Layout(programs, groups, _fitting(TILE_ELEMENTS // hidden, rows_o), 64,
                        _fitting(TILE_ELEMENTS * groups // max(intermediate, 1), rows_d), _fitting(64, rows_q) if rows_q else 0)
        if rows_o and rows_d and layout_problem(hidden, intermediate, layout, qkv_out) is None:
            return layout
        programs //= 2
    return None


def compile_spec(hidden: int, intermediate: int, qkv_out: int, layout: Layout, stages: int = 4, timeline: bool = False,
                 down_stages: Optional[int] = None, lean: Optional[bool] = None):
    """``(signature, constants)`` of the kernel for a layer of this shape (all loops: ``qkv_out`` > 0), to compile
    it ahead of time with ``triton.compiler.ASTSource`` -- how the tests and ``bench/probes/persistent_mlp.py
    --compile-only`` read what a GPU's compiler makes of it without a GPU."""
    constants = dict(_constants(hidden, intermediate, qkv_out, layout, stages, down_stages or stages, timeline,
                                LEAN_LOOPS if lean is None else lean), PHASES=15 if qkv_out else 7, EMULATE=False)
    signature = {"wo_desc": f"tensordesc<bf16[{layout.bn_o}, {hidden // BLOCK_K}, {BLOCK_K}]>",
                 "wgu_desc": f"tensordesc<bf16[{BLOCK_K}, {layout.bn_gu}]>",
                 "wd_desc": f"tensordesc<bf16[{layout.bn_d}, {intermediate // layout.groups // BLOCK_K}, {BLOCK_K}]>",
                 "wq_desc": f"tensordesc<bf16[{layout.bn_q or 1}, {BLOCK_K}]>",
                 **{name: "*bf16" for name in ("wgu_ptr", "wd_ptr", "wq_ptr")},
                 **{name: "*bf16" for name in ("attn_ptr", "resid_ptr", "norm_ptr", "h_ptr")},
                 **{name: "*fp32" for name in ("squares_ptr", "gu_part_ptr", "d_part_ptr")},
                 "next_norm_ptr": "*bf16", "next_resid_ptr": "*bf16", "q_part_ptr": "*fp32", "ready_ptr": "*i32",
                 "stamps_ptr": "*i64", "eps": "fp32", "next_eps": "fp32", **{c: "constexpr" for c in constants}}
    return signature, constants


def _constants(hidden, intermediate, qkv_out, layout: Layout, stages, down_stages, timeline, lean) -> dict:
    """The kernel's shape and tiling constants (all but ``PHASES`` and ``EMULATE``): for a launch and for
    :func:`compile_spec` alike."""
    return dict(H=hidden, I=intermediate, Q_OUT=max(qkv_out, 1), PROGRAMS=layout.programs, GROUPS=layout.groups,
                BLOCK_K=BLOCK_K, BN_O=layout.bn_o, BN_GU=layout.bn_gu, BN_D=layout.bn_d, BN_Q=layout.bn_q or 1,
                STAGES=stages, DOWN_STAGES=down_stages, TIMELINE=timeline, LEAN=lean)


def _weights(layer):
    """``layer``'s output, gate/up and down projections' weights as the native model stores them (``weight_t``)."""
    return layer.self_attn.o_proj.weight_t, layer.mlp.gate_up_proj.weight_t, layer.mlp.down_proj.weight_t


def _fitting(wanted: int, rows: int) -> int:
    """The largest power of two <= ``wanted`` (at least 1) that divides ``rows``."""
    size = 1 << (max(wanted, 1).bit_length() - 1)
    while size > 1 and rows % size:
        size //= 2
    return size


def layer_fits(layer, hidden: int) -> bool:
    """Whether this kernel computes ``layer``'s second half: a Llama-shaped block (no sandwich norms), a SiLU
    gated MLP without biases, bf16 weights stored as the native model stores them on CUDA (output and
    down projections ``[out, in]``, gate/up fused and input-major), a square output projection."""
    attn, mlp = layer.self_attn, layer.mlp
    if layer.pre_feedforward_layernorm is not None or layer.post_feedforward_layernorm is not None:
        return False
    if mlp.gate_kind != "silu":
        return False
    weights = [getattr(p, "weight_t", None) for p in (attn.o_proj, mlp.gate_up_proj, mlp.down_proj)]
    if any(w is None or w.dtype != torch.bfloat16 for w in weights):
        return False
    if any(getattr(p, "bias", None) is not None for p in (attn.o_proj, mlp.gate_up_proj, mlp.down_proj)):
        return False
    o_t, gate_up_t, down_t = weights
    return (tuple(o_t.shape) == (hidden, hidden) and o_t.stride(0) == 1 and down_t.stride(0) == 1
            and gate_up_t.stride(1) == 1 and gate_up_t.shape[0] == hidden)


def disable(error: BaseException) -> None:
    """Switch the launch off for this process after it failed (say, a Triton build that cannot compile it),
    with one warning: the step then runs the kernels it replaces."""
    global ENABLED
    ENABLED = False
    warnings.warn(f"genplug: the persistent MLP launch failed and is switched off for this process "
                  f"({type(error).__name__}: {error})", RuntimeWarning, stacklevel=3)


def next_layer_fits(layer, hidden: int) -> bool:
    """Whether the launch before ``layer`` can also start it: its residual add + input RMSNorm and its q/k/v
    projection (bf16, stored ``[out, in]``, no bias), so ``layer`` skips its add+norm and q/k/v launches."""
    if not layer_fits(layer, hidden):
        return False
    qkv = layer.self_attn.qkv_proj
    weight = getattr(qkv, "weight_t", None)
    return (weight is not None and weight.dtype == torch.bfloat16 and weight.stride(0) == 1
            and weight.shape[0] == hidden and getattr(qkv, "bias", None) is None)


def usable(layer, residual: torch.Tensor) -> bool:
    """Whether :func:`persistent_mlp` runs for this layer and residual stream: switched on, one row, a Hopper
    GPU or newer (tensor descriptors; or the tests' interpreter), a layer it computes and a shape it splits."""
    if not ENABLED or residual.shape[0] != 1 or residual.dtype != torch.bfloat16:
        return False
    if residual.is_cuda and torch.cuda.get_device_capability(residual.device)[0] < 9:
        return False
    hidden = residual.shape[-1]
    return layer_fits(layer, hidden) and _layout(residual.device, hidden, layer.mlp.down_proj.weight_t.shape[0]) is not None


def _layout(device: torch.device, hidden: int, intermediate: int, qkv_out: int = 0) -> Optional[Layout]:
    from .decode_kernels import _sm_count

    return layout_for(hidden, intermediate, _sm_count(device), qkv_out)


def takes_next(layer, next_layer, residual: torch.Tensor) -> bool:
    """Whether the launch for ``layer`` (:func:`usable`) can also start ``next_layer``."""
    if not TAKE_NEXT or next_layer is None or not next_layer_fits(next_layer, residual.shape[-1]):
        return False
    qkv_out = next_layer.self_attn.qkv_proj.weight_t.shape[1]
    return _layout(residual.device, residual.shape[-1], layer.mlp.down_proj.weight_t.shape[0], qkv_out) is not None


def new_counters(layers: int, device: torch.device) -> torch.Tensor:
    """Zeroed counts of published programs, three per layer (the output projection, gate/up, down): one
    allocation per step, so the step's graph zeroes them once rather than before every layer."""
    return torch.zeros(layers, 3, dtype=torch.int32, device=device)


_DESCRIPTORS = weakref.WeakKeyDictionary()  # layer -> (weights' addresses and layout, their descriptors)


def _descriptors(layer, layout: Layout, next_layer=None):
    """The tensor descriptors of ``layer``'s three matrices and of ``next_layer``'s q/k/v projection (without
    a next layer, a stand-in of the same tile over the output projection: the q/k/v loop then never runs)."""
    from triton.tools.tensor_descriptor import TensorDescriptor

    o_t, gate_up_t, down_t = _weights(layer)
    qkv_t = next_layer.self_attn.qkv_proj.weight_t if next_layer is not None else None
    key = (o_t.data_ptr(), gate_up_t.data_ptr(), down_t.data_ptr(), qkv_t.data_ptr() if qkv_t is not None else 0, layout)
    cached = _DESCRIPTORS.get(layer)
    if cached is not None and cached[0] == key:
        return cached[1]
    hidden, intermediate = o_t.shape[0], down_t.shape[0]
    wo, wd = o_t.t(), down_t.t()  # [out, in], contiguous rows
    bn_q = layout.bn_q or 1
    descriptors = (
        TensorDescriptor.from_tensor(wo.view(hidden, hidden // BLOCK_K, BLOCK_K), [layout.bn_o, hidden // BLOCK_K, BLOCK_K]),
        TensorDescriptor.from_tensor(gate_up_t, [BLOCK_K, layout.bn_gu]),
        TensorDescriptor.from_tensor(wd.view(hidden, intermediate // BLOCK_K, BLOCK_K),
                                     [layout.bn_d, intermediate // layout.groups // BLOCK_K, BLOCK_K]),
        TensorDescriptor.from_tensor(qkv_t.t() if qkv_t is not None else wo, [bn_q, BLOCK_K]))
    _DESCRIPTORS[layer] = (key, descriptors)
    return descriptors


STAMPS = ("start", "previous kernel done", "output projection done", "gate/up inputs ready", "gate/up done",
          "down inputs ready", "down done", "next q/k/v inputs ready")  # the clock readings a timeline holds, per program


def persistent_mlp(layer, attended: torch.Tensor, residual: torch.Tensor, counters: torch.Tensor,
                   layout: Optional[Layout] = None, stages: Optional[int] = None, timeline: Optional[torch.Tensor] = None,
                   next_layer=None, down_stages: Optional[int] = None):
    """One Llama layer's second half at one row, in one launch.

    ``attended`` (the attention output) and ``residual`` are ``[1, 1, H]`` bf16; ``counters`` a zeroed
    ``[3]`` int32 slice of :func:`new_counters`. Returns ``(residual + o_proj(attended), the MLP's output as
    decode_kernels.PartialSums)`` -- the next add+norm kernel adds the two. With ``next_layer``
    (:func:`next_layer_fits`) the launch also starts that layer and returns ``(its residual stream, its
    q/k/v projection as PartialSums)`` instead: nothing is left to add, and the next layer goes straight
    to attention. Call only where :func:`usable` says so (or with an explicit ``layout``).
    ``timeline`` (int64 ``[programs, 8]``, GPU only) receives each program's clock at :data:`STAMPS`.
    """
    from .decode_kernels import PartialSums

    stages = stages or STAGES
    down_stages = down_stages or DOWN_STAGES or stages
    hidden = residual.shape[-1]
    intermediate = layer.mlp.down_proj.weight_t.shape[0]
    qkv_out = next_layer.self_attn.qkv_proj.weight_t.shape[1] if next_layer is not None else 0
    layout = layout or _layout(residual.device, hidden, intermediate, qkv_out)
    problem = layout_problem(hidden, intermediate, layout, qkv_out)
    if problem is not None:
        raise ValueError(f"persistent_mlp: {problem}")
    device = residual.device
    h = torch.empty_like(residual)
    squares = torch.empty(layout.programs, dtype=torch.float32, device=device)
    gu_part = torch.empty(layout.groups, 2 * intermediate, dtype=torch.float32, device=device)
    d_part = torch.empty(layout.groups, 1, hidden, dtype=torch.float32, device=device)
    norm = layer.post_attention_layernorm
    if next_layer is not None:
        next_norm = next_layer.input_layernorm
        next_resid = torch.empty_like(residual)
        q_part = torch.empty(layout.groups, 1, qkv_out, dtype=torch.float32, device=device)
        next_args = (next_norm.scale(), next_resid, q_part)
    else:
        next_norm, next_args = norm, (norm.scale(), h, d_part)  # stand-ins: the q/k/v loop does not run
    emulate = not residual.is_cuda  # Triton's interpreter
    if timeline is not None and (emulate or tuple(timeline.shape) != (layout.programs, 8)):
        raise ValueError(f"persistent_mlp: a timeline is int64 [{layout.programs}, 8] on the GPU")
    o_t, gate_up_t, down_t = _weights(layer)
    qkv_t = next_layer.self_attn.qkv_proj.weight_t if next_layer is not None else o_t
    # the lean loops prefetch rows of Wgu^T [H, 2I], Wd [H, I] and Wqkv [Q_OUT, H], assumed packed
    lean = LEAN_LOOPS and gate_up_t.stride(0) == 2 * intermediate and down_t.stride(1) == intermediate \
        and qkv_t.stride(1) == hidden
    args = (*_descriptors(layer, layout, next_layer), gate_up_t, down_t, qkv_t, attended.contiguous(), residual.contiguous(), norm.scale(), h,
            squares, gu_part, d_part, *next_args, counters, timeline if timeline is not None else counters, norm.eps,
            next_norm.eps)
    settings = dict(_constants(hidden, intermediate, qkv_out, layout, stages, down_stages, timeline is not None, lean),
                    EMULATE=emulate)
    phases = (1, 2, 4) + ((8,) if next_layer is not None else ())
    if emulate:
        for phase in phases:
            _persistent_mlp_kernel[(layout.programs,)](*args, **settings, PHASES=phase)
    else:
        pdl = triton_support.dependent_launch(device)
        # 4 warps hold a 256 x 64 gate/up tile in float32 without spilling (128 values a thread); more for bigger
        warps = WARPS or min(8, max(4, BLOCK_K * layout.bn_gu // 4096))
        _persistent_mlp_kernel[(layout.programs,)](*args, **settings, PHASES=sum(phases), num_warps=warps,
                                                   launch_pdl=pdl)
    if next_layer is not None:
        return next_resid, PartialSums(q_part)
    return h, PartialSums(d_part)


def reference(layer, attended: torch.Tensor, residual: torch.Tensor, next_layer=None):
    """The same computation in float32 with the fused step's roundings (the tests' oracle): the residual
    stream after attention (bf16) and the MLP's output ``[H]`` (float32); with ``next_layer``, that layer's
    residual stream (bf16) and q/k/v projection ``[qkv_out]`` (float32)."""
    attn, mlp, norm = layer.self_attn, layer.mlp, layer.post_attention_layernorm
    h = (residual.float().reshape(-1) + attended.float().reshape(-1) @ attn.o_proj.weight_t.float()).to(torch.bfloat16)
    normed = rms_normed(h, norm)
    gate, up = (normed @ mlp.gate_up_proj.weight_t.float()).chunk(2)
    down = (torch.nn.functional.silu(gate) * up) @ mlp.down_proj.weight_t.float()
    if next_layer is None:
        return h, down
    stream = (h.float() + down).to(torch.bfloat16)
    return stream, rms_normed(stream, next_layer.input_layernorm) @ next_layer.self_attn.qkv_proj.weight_t.float()


def rms_normed(row: torch.Tensor, norm) -> torch.Tensor:
    """``norm(row)`` in float32, rounded to bf16 as the step's normed rows are (the recomputes' norm)."""
    x = row.float()
    return (x * torch.rsqrt(x.pow(2).mean() + norm.eps) * norm.scale().float()).to(torch.bfloat16).float()
