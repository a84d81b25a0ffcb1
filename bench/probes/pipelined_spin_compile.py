"""Can Triton keep weight tiles streaming ahead while a program waits for its activations? -- the
question behind a persistent decode step (docs/performance-log.md, seventh session of 2026-12-05).

A persistent program would walk its share of the step's weight tiles in order, and before using each
tile wait (spin on a counter in global memory) until the activations it multiplies are ready. The
weights do not depend on that wait, so their loads could run several tiles ahead -- if Triton's
software pipeliner still pipelines the loop. This compiles one such GEMV loop for sm_90 (no GPU needed:
Triton's CUDA toolchain) with the wait written four ways, and reads the compiled IR:

* how many weight tiles are buffered in shared memory (the pipeline's depth; 1 = not pipelined);
* how many spins run before the loop starts (> 0: the pipeliner hoisted waits for later tiles into its
  prologue -- waiting early, and a deadlock where the producer of a later tile needs this program);
* whether the activations' load was pipelined too (issued a stage early: before its own wait
  completed, unless the wait was hoisted with it).

Triton 3.6 and 3.9 (2026-12-05) agree but for the third way, which 3.6's pipeliner refuses to compile
("doesn't know how to predicate this op"); only the fourth keeps weights in flight without waiting early.

Run: python bench/probes/pipelined_spin_compile.py [--stages N]
"""
import argparse
import re

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

WAYS = {0: "no wait (the pipeliner's baseline)", 1: "a while loop on a volatile load", 2: "a spin in inline PTX, then tl.load",
        3: "the spin and the activation load in one inline PTX op"}


@triton.jit
def _gemv_with_waits(w_ptr, x_ptr, ready_ptr, out_ptr, in_width, TILES: tl.constexpr, BLOCK_N: tl.constexpr,
                     BLOCK_K: tl.constexpr, STAGES: tl.constexpr, WAY: tl.constexpr):
    program = tl.program_id(0)
    weights = tl.make_tensor_descriptor(w_ptr, shape=[BLOCK_N * 1024, in_width], strides=[in_width, 1],
                                        block_shape=[BLOCK_N, BLOCK_K])
    acc = tl.zeros([BLOCK_N], tl.float32)
    k = tl.arange(0, BLOCK_K)
    for t in tl.range(0, TILES, num_stages=STAGES):
        w = weights.load([program * BLOCK_N, t * BLOCK_K])  # independent of the wait
        if WAY == 3:
            x = tl.inline_asm_elementwise(  # each thread spins on ready[t], then loads its activations
                "{ .reg .pred p; .reg .b32 v; $$wait: ld.volatile.global.b32 v, [$1]; setp.eq.s32 p, v, 0; "
                "@p bra $$wait; ld.global.f32 $0, [$2]; }", "=r,l,l",
                # the addresses as integers: Triton 3.6 takes no two pointer types in one asm
                [(ready_ptr + t + tl.zeros([BLOCK_K], tl.int32)).to(tl.int64, bitcast=True),
                 (x_ptr + t * BLOCK_K + k).to(tl.int64, bitcast=True)],
                dtype=tl.float32, is_pure=False, pack=1)
        else:
            base = x_ptr
            if WAY == 1:
                while tl.load(ready_ptr + t, volatile=True) == 0:
                    pass
            if WAY == 2:  # returns 0 once ready, opaque to the compiler: the load's address depends on it
                zero = tl.inline_asm_elementwise(
                    "{ .reg .pred p; .reg .b32 v; $$wait: ld.volatile.global.b32 v, [$1]; setp.eq.s32 p, v, 0; "
                    "@p bra $$wait; mov.b64 $0, 0; }", "=l,l",
                                                 [ready_ptr + t + tl.zeros([1], tl.int32)], dtype=tl.int64,
                                                 is_pure=False, pack=1)
                base = x_ptr + tl.sum(zero, axis=0)
            x = tl.load(base + t * BLOCK_K + k)
        acc += tl.sum(w.to(tl.float32) * x[None, :], axis=1)
    tl.store(out_ptr + program * BLOCK_N + tl.arange(0, BLOCK_N), acc)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--stages", type=int, default=4)
    args = parser.parse_args()
    signature = {"w_ptr": "*bf16", "x_ptr": "*fp32", "ready_ptr": "*i32", "out_ptr": "*fp32", "in_width": "i32"}
    print(f"Triton {triton.__version__}, sm_90, a 16 x 256 bf16 weight tile per step, num_stages={args.stages}")
    for way, text in WAYS.items():
        constants = {"TILES": 16, "BLOCK_N": 16, "BLOCK_K": 256, "STAGES": args.stages, "WAY": way}
        source = ASTSource(fn=_gemv_with_waits, signature={**signature, **{c: "constexpr" for c in constants}},
                           constexprs=constants)
        try:
            compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})
        except Exception as exc:  # e.g. Triton 3.6's pipeliner: "doesn't know how to predicate this op"
            print(f"{text:55} does not compile: {type(exc).__name__}: {str(exc)[:120]}")
            continue
        ir = compiled.asm["ttgir"]
        before_loop = ir[:ir.index("scf.for")]
        buffered = re.search(r"ttg.local_alloc.*?!ttg.memdesc<(\d+)x16x256xbf16", ir)
        print(f"{text:55} weight tiles buffered {int(buffered.group(1)) if buffered else 1}; "
              f"waits before the loop {before_loop.count('wait: ld.volatile')}; activation load pipelined "
              f"{'async_copy_global_to_local' in ir}; cubin {'cubin' in compiled.asm}")


if __name__ == "__main__":
    main()
