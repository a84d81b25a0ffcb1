"""Where a whole batch-1 ``generate`` call's time goes on the GPU, beyond its graph replays.

In the eleventh session (H100) a 256-token call cost ~1,134 us a token past its first two tokens, while the
loop's graph replayed back to back took ~1,117 us: ~17 us a token (~1.5%) unaccounted for, plus ~2.5 ms of
host time in a 2-token call. This probe runs ``genplug.generate`` (native 1B, prompt 128, 256 new tokens,
static cache, greedy) under the profiler after two warm-up calls and prints, from the GPU's own timeline:

* the call's wall time, and when its first and last GPU work ran (host time before and after);
* the prefill: from the first GPU work to the first token choice;
* the decode steps, told apart by the token choice kernel ending each: their number and period (median,
  mean, slowest), and the idle time between one step's last kernel and the next one's first;
* every kernel or copy in the decode phase that is none of the graph's (named by count and total time);
* then for a 2-token call, the host's CUDA calls (graph launches, synchronisations, kernel launches, copies)
  and the GPU's busy stretches (kernels less than 20 us apart), on one clock from the call's start: what
  the GPU waits for before, between and after the prefill's and the loop's graphs.

Run on the accelerator: python bench/probes/generate_timeline.py
"""
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import gpu_decode  # noqa: E402

import genplug  # noqa: E402

STEP_END = "_choose_accept_kernel"  # the loop graph's last kernel (core/loop_kernels.py)


def main():
    native = gpu_decode.native_one_b()
    ids = torch.randint(3, 128000, (1, gpu_decode.PROMPT), device="cuda")
    run = dict(cache_implementation="static", max_new_tokens=gpu_decode.NEW, eos_token_id=None)
    for _ in range(2):
        genplug.generate(native, ids, **run)
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                            torch.profiler.ProfilerActivity.CUDA]) as prof:
        began = time.perf_counter()
        genplug.generate(native, ids, **run)
        torch.cuda.synchronize()
        wall = time.perf_counter() - began
    gpu = sorted((e.time_range.start, e.time_range.end, e.name) for e in prof.events()
                 if e.device_type == torch.autograd.DeviceType.CUDA and e.time_range.end >= e.time_range.start)
    cpu = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CPU]
    ends = [i for i, (_, _, name) in enumerate(gpu) if STEP_END in name]
    print(f"call: {wall * 1e3:.2f} ms wall, {len(gpu)} GPU kernels/copies, {len(ends)} token-choice kernels")
    if not gpu or len(ends) < 3:
        print("too few steps seen; nothing more to say")
        return
    cpu_start = min(e.time_range.start for e in cpu) if cpu else gpu[0][0]
    cpu_end = max(e.time_range.end for e in cpu) if cpu else gpu[-1][1]
    print(f"host before the first GPU work: {(gpu[0][0] - cpu_start) / 1e3:.2f} ms; "
          f"GPU first to last: {(gpu[-1][1] - gpu[0][0]) / 1e3:.2f} ms; after the last GPU work: "
          f"{(cpu_end - gpu[-1][1]) / 1e3:.2f} ms")
    first_choice = gpu[ends[0]]
    print(f"prefill and first token: {(first_choice[1] - gpu[0][0]) / 1e3:.2f} ms of GPU timeline, "
          f"{ends[0] + 1} kernels/copies")
    periods = [gpu[b][1] - gpu[a][1] for a, b in zip(ends, ends[1:])]
    print(f"decode steps: {len(periods)}; period median {statistics.median(periods):.1f} us, mean "
          f"{statistics.mean(periods):.1f}, slowest {max(periods):.1f}, fastest {min(periods):.1f}")
    idle = []
    for a, b in zip(ends, ends[1:]):
        next_start = gpu[a + 1][0]
        idle.append(next_start - gpu[a][1])
    print(f"idle after a step's last kernel: median {statistics.median(idle):.1f} us, mean {statistics.mean(idle):.1f}, "
          f"max {max(idle):.1f}")
    decode = gpu[ends[0] + 1: ends[-1] + 1]
    # the loop graph's kernels: those in every one of 16 consecutive steps (work outside the graph runs
    # only every few steps, as the stop flag's look does)
    graph_names = None
    for a, b in list(zip(ends, ends[1:]))[len(ends) // 2: len(ends) // 2 + 16]:
        names = {name for _, _, name in gpu[a + 1: b + 1]}
        graph_names = names if graph_names is None else graph_names & names
    busy_gaps = sum(max(0.0, b[0] - a[1]) for a, b in zip(decode, decode[1:]))
    print(f"decode phase: {len(decode)} kernels/copies, idle between them {busy_gaps / 1e3:.2f} ms in all "
          f"({busy_gaps / len(periods):.1f} us a step)")
    others = {}
    for begin, end, name in decode:
        if name not in graph_names:
            n, total = others.get(name, (0, 0.0))
            others[name] = (n + 1, total + end - begin)
    print("outside the loop graph during decoding (count, total us, name):")
    for name, (n, total) in sorted(others.items(), key=lambda kv: -kv[1][1])[:15]:
        print(f"  {n:5d} {total:9.1f}  {name[:100]}")
    slow = sorted(range(len(periods)), key=lambda i: -periods[i])[:5]
    print("slowest steps (index, us):", ", ".join(f"{i}: {periods[i]:.1f}" for i in slow))
    tail = gpu[ends[-1] + 1:]
    print(f"after the last step: {len(tail)} kernels/copies, {(gpu[-1][1] - gpu[ends[-1]][1]) / 1e3:.2f} ms of GPU timeline")

    call_timeline(native, ids, dict(run, max_new_tokens=2))


HOST_CALLS = ("cudaGraphLaunch", "cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaLaunchKernel",
              "cudaMemcpyAsync", "cudaEventQuery", "cudaEventRecord", "cudaLaunchKernelExC", "cuLaunchKernelEx",
              "cuLaunchKernel")


def call_timeline(native, ids, run):
    for _ in range(3):
        genplug.generate(native, ids, **run)
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                            torch.profiler.ProfilerActivity.CUDA]) as prof:
        with torch.profiler.record_function("the call"):
            genplug.generate(native, ids, **run)
            torch.cuda.synchronize()
    events = prof.events()
    call = next(e for e in events if e.name == "the call")
    t0 = call.time_range.start
    print(f"\n2-token call: {(call.time_range.end - t0) / 1e3:.2f} ms from its start (us below from there)")
    host = sorted((e.time_range.start - t0, e.time_range.end - t0, e.name) for e in events
                  if e.device_type == torch.autograd.DeviceType.CPU and e.name in HOST_CALLS)
    launches = [h for h in host if "Launch" in h[2] and "Graph" not in h[2]]
    for begin, end, name in host:
        if "Launch" not in name or "Graph" in name:
            print(f"  host {begin:9.1f} - {end:9.1f}  {name}")
    if launches:
        print(f"  host: {len(launches)} kernel launches from {launches[0][0]:.1f} to {launches[-1][1]:.1f}")
    gpu = sorted((e.time_range.start - t0, e.time_range.end - t0) for e in events
                 if e.device_type == torch.autograd.DeviceType.CUDA)
    stretches = []
    for begin, end in gpu:
        if stretches and begin - stretches[-1][1] < 20:
            first, last, n, busy = stretches[-1]
            stretches[-1] = (first, max(last, end), n + 1, busy + end - begin)
        else:
            stretches.append((begin, end, 1, end - begin))
    for first, last, n, busy in stretches:
        print(f"  GPU  {first:9.1f} - {last:9.1f}  {n:4d} kernels/copies, {busy:8.1f} us of kernel time")


if __name__ == "__main__":
    with torch.no_grad():
        main()
