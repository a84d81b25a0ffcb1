"""A persistent kernel against PDL-chained launches, on the dependency chain that bounds batch-1 decoding:
``y_{l+1} = W_l @ y_l`` for L square matrices of the 1B shape's output projection (2048 x 2048, bf16).

* **chained**: one launch of genplug's split-K GEMV (``decode_kernels.gemv``) per matrix, each taking the
  previous one's partial sums, with programmatic dependent launch -- how the decode step runs today:
  each GEMV program reads one weight tile before waiting for the previous launch;
* **persistent, rows** (``split_n``): one launch for the whole chain. Each program owns 16 rows of every
  matrix and walks its weight tiles in order through a tensor descriptor (TMA), software-pipelined
  ``stages`` deep, so weights keep streaming into shared memory across the matrix boundaries; before
  each tile it waits until every program has published the previous matrix (a counter per matrix,
  release / acquire) and reads that tile's 256 activations -- the wait and the load being one
  inline-PTX op so the pipeliner does not hoist the wait (bench/probes/pipelined_spin_compile.py).
  Every tile therefore costs one round trip to L2 that nothing overlaps;
* **persistent, blocks** (``split_k``): each program owns a block of every matrix -- 128 rows by 256
  columns (16 row blocks x 8 column groups) -- so it waits and reads its 256 activations once per matrix
  (summing the 8 column groups' partial results) and then only streams weight tiles of ``block_n`` rows,
  storing each tile's partial sums. The question it answers: is the per-tile round trip what limits
  the rows variant.

Each persistent variant also runs with nobody waiting (``needed = 0``; the result is then meaningless
and not checked): how fast the pipelined loop streams when no program ever stalls on another -- the
ceiling for that tiling. Prints microseconds per chain (replayed from CUDA graphs), the weight bytes per
second of each, and how far each result is from a float32 recompute (past 1e-2 prints WRONG).

Written without a GPU (seventh and eighth sessions of 2026-12-05); ``--compile-only`` compiles every
variant for sm_90 on any machine with Triton and prints how many weight tiles each buffers and whether
a wait was hoisted out of the loop (Triton 3.6, the lent H100s' version, and 3.9 agree).

Run on the accelerator: python bench/probes/persistent_chain.py [--layers 16] [--variant I]
"""
import argparse
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl

WIDTH, BLOCK_K, K_GROUPS = 2048, 256, 8
# (name, kernel, block_n, stages, warps): tiles of block_n x 256 bf16, stages - 1 of them in flight
VARIANTS = (("rows", "split_n", 16, 4, 4), ("rows", "split_n", 16, 8, 4),
            ("blocks", "split_k", 16, 8, 4), ("blocks", "split_k", 32, 6, 4), ("blocks", "split_k", 64, 4, 8))


@triton.jit
def _address(pointers):
    """Pointers as 64-bit integers for inline PTX (Triton 3.6 takes no pointers of two types in one asm)."""
    return pointers.to(tl.int64, bitcast=True)


@triton.jit
def _publish(ready_ptr, count_index, last, stored):
    """After the last tile of a matrix: a CTA barrier (every thread's stores, ``stored`` being their results,
    come before it), then one release add to ``ready[count_index]`` by thread 0. Inline PTX: a branch or an
    atomic in the loop stops the pipelining (checked compiled). A reduction of ``stored`` alone is no barrier:
    Triton reduces a warp-local layout with shuffles only."""
    all_stored = tl.sum(stored, axis=0) + tl.zeros([1], tl.int32)
    tl.inline_asm_elementwise(
        "{ .reg .pred l, p, q; .reg .b32 r; setp.ne.s32 l, $2, 0; @l bar.sync 0; mov.u32 r, %tid.x; "
        "setp.eq.u32 p, r, 0; and.pred q, p, l; @q red.release.gpu.global.add.s32 [$1], 1; mov.b32 $0, $3; }",
        "=r,l,r,r", [_address(ready_ptr + count_index + tl.zeros([1], tl.int32)), last + tl.zeros([1], tl.int32),
                     all_stored], dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def _split_n_kernel(w_desc, ys_ptr, ready_ptr, width, needed, LAYERS: tl.constexpr, BLOCK_N: tl.constexpr,
                    BLOCK_K: tl.constexpr, K_TILES: tl.constexpr, STAGES: tl.constexpr):
    # ys [LAYERS + 1, width] float32: ys[0] the input, ys[l + 1] = W_l @ ys[l]. ready[l] counts the
    # programs that have published their rows of ys[l] (ready[0] = programs before the launch).
    program = tl.program_id(0)
    rows = program * BLOCK_N + tl.arange(0, BLOCK_N)
    k = tl.arange(0, BLOCK_K)
    wanted = needed + tl.zeros([BLOCK_K], tl.int32)
    acc = tl.zeros([BLOCK_N], tl.float32)
    for t in tl.range(0, LAYERS * K_TILES, num_stages=STAGES):
        layer = t // K_TILES
        tile = t % K_TILES
        w = w_desc.load([layer * width + program * BLOCK_N, tile * BLOCK_K])  # independent of the wait
        # each thread waits (acquire) until `needed` programs have published ys[layer], then reads its slice
        x = tl.inline_asm_elementwise(
            "{ .reg .pred p; .reg .b32 v; $$wait: ld.acquire.gpu.global.b32 v, [$1]; setp.lt.s32 p, v, $3; "
            "@p bra $$wait; ld.global.cg.f32 $0, [$2]; }", "=r,l,l,r",
            [_address(ready_ptr + layer + tl.zeros([BLOCK_K], tl.int32)),
             _address(ys_ptr + layer * width + tile * BLOCK_K + k), wanted], dtype=tl.float32, is_pure=False, pack=1)
        acc = tl.where(tile == 0, 0.0, acc) + tl.sum(w.to(tl.float32) * x[None, :], axis=1)
        last = (tile == K_TILES - 1).to(tl.int32)
        stored = tl.inline_asm_elementwise(  # this program's rows of ys[layer + 1], after the matrix's last tile
            "{ .reg .pred p; setp.ne.s32 p, $2, 0; @p st.global.f32 [$1], $3; mov.b32 $0, 0; }", "=r,l,r,r",
            [_address(ys_ptr + (layer + 1) * width + rows), last + tl.zeros([BLOCK_N], tl.int32), acc],
            dtype=tl.int32, is_pure=False, pack=1)
        _publish(ready_ptr, layer + 1, last, stored)


@triton.jit
def _split_k_kernel(w_desc, partials_ptr, ready_ptr, width, needed, LAYERS: tl.constexpr, BLOCK_N: tl.constexpr,
                    BLOCK_K: tl.constexpr, K_GROUPS: tl.constexpr, ROW_TILES: tl.constexpr, STAGES: tl.constexpr):
    # partials [LAYERS + 1, K_GROUPS, width] float32: ys[l] = partials[l].sum(0), each column group's share;
    # program (row block, column group) owns ROW_TILES * BLOCK_N rows x BLOCK_K columns of every matrix.
    # ready[l] counts the programs that have published their partials of ys[l].
    program = tl.program_id(0)
    group = program % K_GROUPS
    first_row = (program // K_GROUPS) * ROW_TILES * BLOCK_N
    k = tl.arange(0, BLOCK_K)
    n = tl.arange(0, BLOCK_N)
    wanted = needed + tl.zeros([BLOCK_K], tl.int32)
    x = tl.zeros([BLOCK_K], tl.float32)
    for t in tl.range(0, LAYERS * ROW_TILES, num_stages=STAGES):
        layer = t // ROW_TILES
        tile = t % ROW_TILES
        w = w_desc.load([layer * width + first_row + tile * BLOCK_N, group * BLOCK_K])  # independent of the wait
        # at a matrix's first tile: wait (acquire) until `needed` programs have published ys[layer], then
        # read this program's 256 columns of it, the sum of the 8 groups' partials (8 KB apart); else keep x
        x = tl.inline_asm_elementwise(
            "{ .reg .pred p, s; .reg .b32 v; .reg .f32 a; mov.b32 $0, $4; setp.eq.s32 s, $5, 0; @s bra $$done; "
            "$$wait: ld.acquire.gpu.global.b32 v, [$1]; setp.lt.s32 p, v, $3; @p bra $$wait; "
            "ld.global.cg.f32 $0, [$2]; ld.global.cg.f32 a, [$2+8192]; add.f32 $0, $0, a; "
            "ld.global.cg.f32 a, [$2+16384]; add.f32 $0, $0, a; ld.global.cg.f32 a, [$2+24576]; add.f32 $0, $0, a; "
            "ld.global.cg.f32 a, [$2+32768]; add.f32 $0, $0, a; ld.global.cg.f32 a, [$2+40960]; add.f32 $0, $0, a; "
            "ld.global.cg.f32 a, [$2+49152]; add.f32 $0, $0, a; ld.global.cg.f32 a, [$2+57344]; add.f32 $0, $0, a; "
            "$$done: }", "=r,l,l,r,r,r",
            [_address(ready_ptr + layer + tl.zeros([BLOCK_K], tl.int32)),
             _address(partials_ptr + layer * K_GROUPS * width + group * BLOCK_K + k), wanted, x,
             (tile == 0).to(tl.int32) + tl.zeros([BLOCK_K], tl.int32)], dtype=tl.float32, is_pure=False, pack=1)
        part = tl.sum(w.to(tl.float32) * x[None, :], axis=1)
        stored = tl.inline_asm_elementwise(  # this tile's partial sums, every tile
            "{ st.global.f32 [$1], $2; mov.b32 $0, 0; }", "=r,l,r",
            [_address(partials_ptr + ((layer + 1) * K_GROUPS + group) * width + first_row + tile * BLOCK_N + n), part],
            dtype=tl.int32, is_pure=False, pack=1)
        _publish(ready_ptr, layer + 1, (tile == ROW_TILES - 1).to(tl.int32), stored)


def programs_of(kind: str, block_n: int) -> int:
    return WIDTH // block_n if kind == "split_n" else WIDTH // (WIDTH // 16) * K_GROUPS


def persistent_chain(weights: torch.Tensor, x: torch.Tensor, layers: int, kind: str, block_n: int, stages: int,
                     warps: int, wait: bool = True):
    """``ys[-1]`` of the chain, ``weights [layers * WIDTH, WIDTH]`` (each matrix [out, in]), in one launch."""
    from triton.tools.tensor_descriptor import TensorDescriptor

    programs = programs_of(kind, block_n)
    desc = TensorDescriptor.from_tensor(weights, [block_n, BLOCK_K])
    ready = torch.zeros(layers + 1, dtype=torch.int32, device=x.device)
    ready[0] = programs
    needed = programs if wait else 0
    if kind == "split_n":
        ys = torch.empty(layers + 1, WIDTH, dtype=torch.float32, device=x.device)
        ys[0] = x
        _split_n_kernel[(programs,)](desc, ys, ready, WIDTH, needed, LAYERS=layers, BLOCK_N=block_n, BLOCK_K=BLOCK_K,
                                     K_TILES=WIDTH // BLOCK_K, STAGES=stages, num_warps=warps)
        return ys[-1]
    partials = torch.zeros(layers + 1, K_GROUPS, WIDTH, dtype=torch.float32, device=x.device)
    partials[0, 0] = x
    _split_k_kernel[(programs,)](desc, partials, ready, WIDTH, needed, LAYERS=layers, BLOCK_N=block_n,
                                 BLOCK_K=BLOCK_K, K_GROUPS=K_GROUPS, ROW_TILES=WIDTH // 16 // block_n,
                                 STAGES=stages, num_warps=warps)
    return partials[-1].sum(0)


def chained(weights: torch.Tensor, x: torch.Tensor, layers: int):
    """The same chain as one split-K GEMV launch per matrix (PDL where supported)."""
    from genplug.plugins.models.llama import decode_kernels

    y = x.view(1, 1, WIDTH)
    for layer in range(layers):
        y = decode_kernels.gemv(y, weights[layer * WIDTH:(layer + 1) * WIDTH].t())
    return y.total().view(WIDTH)


def compile_only(layers: int):
    """Compile every variant for sm_90 (no GPU needed) and read the IR: weight tiles buffered, waits hoisted."""
    import re

    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    print(f"Triton {triton.__version__}, sm_90, compile only")
    for name, kind, block_n, stages, warps in VARIANTS:
        common = {"LAYERS": layers, "BLOCK_N": block_n, "BLOCK_K": BLOCK_K, "STAGES": stages}
        if kind == "split_n":
            fn, out, constants = _split_n_kernel, "ys_ptr", {**common, "K_TILES": WIDTH // BLOCK_K}
        else:
            fn, out = _split_k_kernel, "partials_ptr"
            constants = {**common, "K_GROUPS": K_GROUPS, "ROW_TILES": WIDTH // 16 // block_n}
        signature = {"w_desc": f"tensordesc<bf16[{block_n}, {BLOCK_K}]>", out: "*fp32", "ready_ptr": "*i32",
                     "width": "i32", "needed": "i32", **{c: "constexpr" for c in constants}}
        compiled = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constants),
                                  target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})
        ir = compiled.asm["ttgir"]
        buffered = re.search(rf"ttg.local_alloc.*?!ttg.memdesc<(\d+)x{block_n}x{BLOCK_K}xbf16", ir)
        loop = ir.index("scf.for")
        print(f"{name:6} block_n {block_n:3} stages {stages}: weight tiles buffered "
              f"{int(buffered.group(1)) if buffered else 1}, waits before the loop {ir[:loop].count('ld.acquire')}, "
              f"shared memory {compiled.metadata.shared / 1024:.0f} KB, cubin {'cubin' in compiled.asm}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--compile-only", action="store_true")
    parser.add_argument("--variant", type=int, default=None,
                        help="run only VARIANTS[i] (-1: only the chained launches); a deadlocked variant then "
                             "takes no other down with it")
    args = parser.parse_args()
    if args.compile_only:
        return compile_only(args.layers)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from processor_kernels import graph_time

    sms = torch.cuda.get_device_properties(0).multi_processor_count
    torch.manual_seed(0)
    weights = (torch.randn(args.layers * WIDTH, WIDTH, device="cuda") / WIDTH ** 0.5).to(torch.bfloat16)
    x = torch.randn(WIDTH, device="cuda")
    reference = x
    for layer in range(args.layers):
        reference = weights[layer * WIDTH:(layer + 1) * WIDTH].float() @ reference
    nbytes = weights.numel() * weights.element_size()
    print(f"{args.layers} matrices of {WIDTH} x {WIDTH} bf16 ({nbytes / 1e6:.0f} MB), {sms} SMs")
    cells = []
    if args.variant in (None, -1):
        cells.append(("chained GEMV launches (as the step runs)", lambda: chained(weights, x, args.layers), True))
    for name, kind, block_n, stages, warps in VARIANTS if args.variant is None else VARIANTS[args.variant:][:1]:
        if programs_of(kind, block_n) > sms:
            print(f"{name}: needs its {programs_of(kind, block_n)} programs resident at once; skipped")
            continue
        for wait in (False, True):  # without waits first: it cannot deadlock
            label = f"persistent {name}, {block_n} x 256 tiles, {stages} stages{'' if wait else ', no waits'}"
            cells.append((label, lambda k=kind, b=block_n, s=stages, w=warps, wt=wait:
                          persistent_chain(weights, x, args.layers, k, b, s, w, wt), wait))
    for label, fn, checked in cells:
        try:
            out = fn()
            torch.cuda.synchronize()
            us = graph_time(fn)
        except Exception as exc:  # a variant that fails to compile or launch on this device's Triton
            print(f"{label:58} failed: {type(exc).__name__}: {str(exc)[:160]}", flush=True)
            continue
        apart = ((out - reference).abs().max() / reference.abs().max()).item()
        verdict = (f"off a float32 recompute by {apart:.1e}{'' if apart < 1e-2 else ' -- WRONG'}" if checked
                   else "(result not checked)")
        print(f"{label:58} {us:8.1f} us, {nbytes / us / 1e6:5.2f} TB/s; {verdict}", flush=True)


if __name__ == "__main__":
    main()
