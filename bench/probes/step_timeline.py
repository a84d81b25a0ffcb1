"""Where one batch-1 decode step of the native 1B model spends its time on the GPU: the step (the fused
kernels, as the decode loop runs them) is captured as a CUDA graph and one replay is profiled; each
kernel's start and end come from CUPTI. Kernels overlap under programmatic dependent launch, so each
one's share of the step is its *critical-path contribution* -- how far its end moves the latest end
seen so far -- not its duration. Prints the shares per kind of kernel (q/k/v, output and down GEMVs
told apart by their order within a layer) and one middle layer's kernels in order.

Run on the accelerator: python bench/probes/step_timeline.py [--variant NAME]
(NAME: a variant of the fused step in step_variants.py; default as shipped)
"""
import argparse
import sys
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_kernels import one_step_setting  # noqa: E402

GEMV_ROLES = ("q/k/v GEMV", "output GEMV", "gate/up GEMV", "down GEMV")  # a layer's, in order (since the 12th session)


def kind_of(name: str, gemvs_seen: int, gemvs_in_step: int) -> str:
    if "gemv" in name:
        if gemvs_seen == gemvs_in_step - 1:
            return "output head GEMV"
        return GEMV_ROLES[gemvs_seen % len(GEMV_ROLES)]
    if "rms_norm" in name:
        return "add+norm"
    if "attention" in name:
        return "attention"
    if "gemm" in name.lower() or "gemv" in name.lower() or "cublas" in name.lower() or "sm90" in name:
        return "cuBLAS matmul (gate/up, head)"
    return "other: " + name[:40]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", default=None)
    args = parser.parse_args()
    if args.variant:
        import step_variants

        step_variants.apply(args.variant)
    print(f"step: {args.variant or 'as shipped'}")
    native, cache, token, pos, slot, valid = one_step_setting()
    with torch.no_grad():
        def step():
            return native.static_decode_step(token, pos, slot, valid, cache.layers)

        for _ in range(3):
            step()
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step()
        for _ in range(20):
            graph.replay()
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(100):
            graph.replay()
        end.record()
        torch.cuda.synchronize()
        print(f"one step replayed: {start.elapsed_time(end) * 10:.1f} us (mean of 100)")
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            graph.replay()
            torch.cuda.synchronize()
    kernels = sorted(((e.time_range.start, e.time_range.end, e.name) for e in prof.events()
                      if e.device_type == torch.autograd.DeviceType.CUDA and e.time_range.end > e.time_range.start))
    if not kernels:
        print("the profiler saw no kernels inside the graph replay")
        return
    print(f"kernels in the replay: {len(kernels)}; first start to last end {kernels[-1][1] - kernels[0][0]:.1f} us")
    shares, durations, counts = defaultdict(float), defaultdict(float), defaultdict(int)
    latest, gemvs, rows = kernels[0][0], 0, []
    gemvs_in_step = sum("gemv" in name for _, _, name in kernels)
    for begin, finish, name in kernels:
        kind = kind_of(name, gemvs, gemvs_in_step)
        gemvs += "gemv" in name
        shares[kind] += max(0.0, finish - latest)
        durations[kind] += finish - begin
        counts[kind] += 1
        rows.append((begin, finish, kind, finish - latest))
        latest = max(latest, finish)
    print(f"{'kind':34} {'count':>5} {'summed duration us':>19} {'critical path us':>17}")
    for kind in sorted(shares, key=shares.get, reverse=True):
        print(f"{kind:34} {counts[kind]:5d} {durations[kind]:19.1f} {shares[kind]:17.1f}")
    middle = len(rows) // 2
    origin = rows[0][0]
    print("kernels around the middle of the step (start, duration, critical-path contribution, us):")
    for begin, finish, kind, share in rows[middle - 7: middle + 7]:
        print(f"  {begin - origin:8.1f} {finish - begin:7.1f} {max(0.0, share):7.1f}  {kind}")


if __name__ == "__main__":
    main()
