"""What one kernel boundary costs in a CUDA graph, and whether a counter in memory is cheaper than PDL's wait.

A batch-1 decode step is ~115 kernels in a chain, and the step's timeline (step_timeline.py) puts ~216 us a
step in kernels that barely touch memory (attention, add+norm): most of that is the boundaries themselves.
Under programmatic dependent launch (PDL) a kernel is already resident when its predecessor ends, but
``griddepcontrol.wait`` returns only once the whole predecessor grid has finished and flushed. The
alternative timed here: each producer program publishes with one release add to a counter, and the
consumer's threads spin (acquire) until the count is reached -- no wait for the grid to retire.

A chain of LINKS tiny kernels, each with P programs, is captured as one graph; every program of link i reads
all P values link i - 1 wrote (their max) and writes max + 1, so the last link's values must equal LINKS
(checked). Printed: microseconds a link, for
  plain  -- no PDL (each kernel launches when the previous one has ended);
  pdl    -- PDL, as the step's kernels: wait, then let the next one launch;
  flag   -- PDL launch, no wait: spin on the previous link's counter, then let the next one launch.

Run on the accelerator: python bench/probes/boundary_cost.py
"""
import argparse

import torch
import triton
import triton.language as tl


@triton.jit
def _address(pointers):
    return pointers.to(tl.int64, bitcast=True)


@triton.jit
def _link_pdl(src_ptr, dst_ptr, n_in, BLOCK: tl.constexpr, PDL: tl.constexpr):
    if PDL:
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()
    i = tl.arange(0, BLOCK)
    value = tl.max(tl.load(src_ptr + i, mask=i < n_in, other=0), axis=0)
    tl.store(dst_ptr + tl.program_id(0), value + 1)


@triton.jit
def _link_flag(src_ptr, dst_ptr, n_in, count_in_ptr, count_out_ptr, BLOCK: tl.constexpr):
    i = tl.arange(0, BLOCK)
    wanted = n_in + tl.zeros([BLOCK], tl.int32)
    # each thread spins (acquire) until the n_in producer programs have published, then reads its values
    loaded = tl.inline_asm_elementwise(
        "{ .reg .pred p, q; .reg .b32 v; $$wait: ld.acquire.gpu.global.b32 v, [$1]; setp.lt.s32 p, v, $3; "
        "@p bra $$wait; setp.lt.s32 q, $4, $3; mov.b32 $0, 0; @q ld.global.cg.b32 $0, [$2]; }", "=r,l,l,r,r",
        [_address(count_in_ptr + tl.zeros([BLOCK], tl.int32)), _address(src_ptr + i), wanted, i],
        dtype=tl.int32, is_pure=False, pack=1)
    tl.extra.cuda.gdc_launch_dependents()
    value = tl.max(loaded, axis=0) + 1
    stored = tl.inline_asm_elementwise(  # thread 0's store of this program's value (the others store it too)
        "{ st.global.b32 [$1], $2; mov.b32 $0, 0; }", "=r,l,r",
        [_address(dst_ptr + tl.program_id(0) + tl.zeros([1], tl.int32)), value + tl.zeros([1], tl.int32)],
        dtype=tl.int32, is_pure=False, pack=1)
    tl.inline_asm_elementwise(  # every thread's store before the barrier, then thread 0's release add
        "{ .reg .pred p; .reg .b32 r; bar.sync 0; mov.u32 r, %tid.x; setp.eq.u32 p, r, 0; "
        "@p red.release.gpu.global.add.s32 [$1], 1; mov.b32 $0, $2; }", "=r,l,r",
        [_address(count_out_ptr + tl.zeros([1], tl.int32)), stored], dtype=tl.int32, is_pure=False, pack=1)


def chain(mode: str, links: int, programs: int, warps: int):
    block = max(32, triton.next_power_of_2(programs))
    values = torch.zeros(links + 1, block, dtype=torch.int32, device="cuda")
    counts = torch.zeros(links + 1, dtype=torch.int32, device="cuda")

    def run():
        values[0].zero_()
        counts.zero_()
        counts[0].fill_(programs)
        for link in range(links):
            src, dst = values[link], values[link + 1]
            if mode == "flag":
                _link_flag[(programs,)](src, dst, programs, counts[link:], counts[link + 1:], BLOCK=block,
                                        num_warps=warps, launch_pdl=True)
            else:
                _link_pdl[(programs,)](src, dst, programs, BLOCK=block, PDL=mode == "pdl", num_warps=warps,
                                       launch_pdl=mode == "pdl")

    run()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        run()
    for _ in range(5):
        graph.replay()
    torch.cuda.synchronize()
    assert values[links, :programs].eq(links).all().item(), f"{mode}: the chain's last values are not {links}"
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    best = float("inf")
    for _ in range(5):
        start.record()
        for _ in range(10):
            graph.replay()
        end.record()
        torch.cuda.synchronize()
        best = min(best, start.elapsed_time(end) * 1000 / 10 / links)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--links", type=int, default=256)
    parser.add_argument("--programs", default="1,128,1024")
    args = parser.parse_args()
    print(torch.cuda.get_device_name(), "links", args.links)
    print(f"{'programs':>9} {'warps':>5} {'plain us':>9} {'pdl us':>8} {'flag us':>8}")
    for programs in map(int, args.programs.split(",")):
        for warps in (4, 8):
            row = [chain(mode, args.links, programs, warps) for mode in ("plain", "pdl", "flag")]
            print(f"{programs:9d} {warps:5d} " + " ".join(f"{t:8.2f}" for t in row), flush=True)


if __name__ == "__main__":
    main()
