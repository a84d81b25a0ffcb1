"""A persistent kernel against PDL-chained launches, on the dependency chain that bounds batch-1 decoding:
``y_{l+1} = W_l @ y_l`` for L square matrices of the 1B shape's output projection (2048 x 2048, bf16).

* **chained**: one launch of genplug's split-K GEMV (``decode_kernels.gemv``) per matrix, each taking the
  previous one's partial sums, with programmatic dependent launch -- how the decode step runs today:
  each GEMV program reads one weight tile before waiting for the previous launch;
* **persistent**: one launch for the whole chain. Each program owns 16 rows of every matrix and walks
  its weight tiles in order through a tensor descriptor (TMA), software-pipelined ``--stages`` deep, so
  weights keep streaming into shared memory across the matrix boundaries; before each tile it waits
  until every program has published the previous matrix's rows (a counter per matrix, release /
  acquire), the wait and the activation load being one inline-PTX op so the pipeliner does not hoist
  the wait (bench/probes/pipelined_spin_compile.py). Needs every program resident at once: 128 programs.

Prints microseconds per chain (replayed from CUDA graphs), the weight bytes per second of each, and
how far each result is from a float32 recompute. Written in the seventh session of 2026-12-05 without a
GPU: compiled for sm_90 with Triton 3.6 (the lent H100s') and 3.9 it buffers `stages - 1` weight tiles
and hoists no wait; its first GPU run is its test (an error past 1e-2 prints WRONG).

Run on the accelerator: python bench/probes/persistent_chain.py [--layers 16] [--stages 8]
"""
import argparse
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from processor_kernels import graph_time  # noqa: E402

WIDTH, BLOCK_N, BLOCK_K = 2048, 16, 256


@triton.jit
def _address(pointers):
    """Pointers as 64-bit integers for inline PTX (Triton 3.6 takes no pointers of two types in one asm)."""
    return pointers.to(tl.int64, bitcast=True)


@triton.jit
def _persistent_chain_kernel(w_desc, ys_ptr, ready_ptr, width, programs, LAYERS: tl.constexpr,
                             BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, K_TILES: tl.constexpr,
                             STAGES: tl.constexpr):
    # ys [LAYERS + 1, width] float32: ys[0] the input, ys[l + 1] = W_l @ ys[l]. ready[l] counts the
    # programs that have published their rows of ys[l] (ready[0] = programs before the launch).
    program = tl.program_id(0)
    rows = program * BLOCK_N + tl.arange(0, BLOCK_N)
    k = tl.arange(0, BLOCK_K)
    everyone = programs + tl.zeros([BLOCK_K], tl.int32)
    acc = tl.zeros([BLOCK_N], tl.float32)
    for t in tl.range(0, LAYERS * K_TILES, num_stages=STAGES):
        layer = t // K_TILES
        tile = t % K_TILES
        w = w_desc.load([layer * width + program * BLOCK_N, tile * BLOCK_K])  # independent of the wait
        # each thread waits (acquire) until every program has published ys[layer], then reads its slice
        x = tl.inline_asm_elementwise(
            "{ .reg .pred p; .reg .b32 v; $$wait: ld.acquire.gpu.global.b32 v, [$1]; setp.lt.s32 p, v, $3; "
            "@p bra $$wait; ld.global.cg.f32 $0, [$2]; }", "=r,l,l,r",
            [_address(ready_ptr + layer + tl.zeros([BLOCK_K], tl.int32)), _address(ys_ptr + layer * width + tile * BLOCK_K + k),
             everyone], dtype=tl.float32, is_pure=False, pack=1)
        acc = tl.where(tile == 0, 0.0, acc) + tl.sum(w.to(tl.float32) * x[None, :], axis=1)
        # after the last tile of a matrix, publish this program's rows of ys[layer + 1]: stores, then (every
        # thread's stores reached through the reduction of their results) one release add to ready[layer + 1].
        # Both are inline PTX: a branch, or an atomic in the loop, stops the pipelining (checked compiled).
        last = (tile == K_TILES - 1).to(tl.int32)
        stored = tl.inline_asm_elementwise(
            "{ .reg .pred p; setp.ne.s32 p, $2, 0; @p st.global.f32 [$1], $3; mov.b32 $0, 0; }", "=r,l,r,r",
            [_address(ys_ptr + (layer + 1) * width + rows), last + tl.zeros([BLOCK_N], tl.int32), acc],
            dtype=tl.int32, is_pure=False, pack=1)
        all_stored = tl.sum(stored, axis=0) + tl.zeros([1], tl.int32)
        tl.inline_asm_elementwise(
            "{ .reg .pred p, q; .reg .b32 r; mov.u32 r, %tid.x; setp.eq.u32 p, r, 0; setp.ne.and.s32 q, $2, 0, p; "
            "@q red.release.gpu.global.add.s32 [$1], 1; mov.b32 $0, $3; }", "=r,l,r,r",
            [_address(ready_ptr + layer + 1 + tl.zeros([1], tl.int32)), last + tl.zeros([1], tl.int32), all_stored],
            dtype=tl.int32, is_pure=False, pack=1)


def persistent_chain(weights: torch.Tensor, x: torch.Tensor, layers: int, stages: int):
    """``ys[-1]`` of the chain, ``weights [layers * WIDTH, WIDTH]`` (each matrix [out, in]), in one launch."""
    from triton.tools.tensor_descriptor import TensorDescriptor

    programs = WIDTH // BLOCK_N
    ys = torch.empty(layers + 1, WIDTH, dtype=torch.float32, device=x.device)
    ys[0] = x
    ready = torch.zeros(layers + 1, dtype=torch.int32, device=x.device)
    ready[0] = programs
    desc = TensorDescriptor.from_tensor(weights, [BLOCK_N, BLOCK_K])
    _persistent_chain_kernel[(programs,)](desc, ys, ready, WIDTH, programs, LAYERS=layers, BLOCK_N=BLOCK_N,
                                         BLOCK_K=BLOCK_K, K_TILES=WIDTH // BLOCK_K, STAGES=stages, num_warps=4)
    return ys[-1]


def chained(weights: torch.Tensor, x: torch.Tensor, layers: int):
    """The same chain as one split-K GEMV launch per matrix (PDL where supported)."""
    from genplug.plugins.models.llama import decode_kernels

    y = x.view(1, 1, WIDTH)
    for layer in range(layers):
        y = decode_kernels.gemv(y, weights[layer * WIDTH:(layer + 1) * WIDTH].t())
    return y.total().view(WIDTH)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--stages", type=int, default=8)
    args = parser.parse_args()
    programs = WIDTH // BLOCK_N
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    if programs > sms:
        raise SystemExit(f"the persistent kernel needs its {programs} programs resident at once; this GPU has {sms} SMs")
    torch.manual_seed(0)
    weights = (torch.randn(args.layers * WIDTH, WIDTH, device="cuda") / WIDTH ** 0.5).to(torch.bfloat16)
    x = torch.randn(WIDTH, device="cuda")
    reference = x
    for layer in range(args.layers):
        reference = weights[layer * WIDTH:(layer + 1) * WIDTH].float() @ reference
    nbytes = weights.numel() * weights.element_size()
    print(f"{args.layers} matrices of {WIDTH} x {WIDTH} bf16 ({nbytes / 1e6:.0f} MB), {programs} programs, "
          f"{args.stages} stages")
    for name, fn in (("chained GEMV launches (as the step runs)", lambda: chained(weights, x, args.layers)),
                     ("one persistent launch", lambda: persistent_chain(weights, x, args.layers, args.stages))):
        out = fn()
        torch.cuda.synchronize()
        apart = ((out - reference).abs().max() / reference.abs().max()).item()
        us = graph_time(fn)
        print(f"{name:42} {us:8.1f} us per chain, {nbytes / us / 1e6:6.2f} TB/s; off a float32 recompute by "
              f"{apart:.1e} of its largest value{'' if apart < 1e-2 else ' -- WRONG'}", flush=True)


if __name__ == "__main__":
    main()
