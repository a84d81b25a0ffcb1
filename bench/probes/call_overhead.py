"""Where a short ``generate`` call's fixed cost goes (native 1B, batch 1, static cache, H100: a 2-token call
took 7.3 ms where one loop step takes 1.1 ms -- ~24 us a token over a 256-token call). Profiles one
2-token call (after warm-up calls, so the prefill graph and the loop's graph are replayed) with CPU and
CUDA activities and prints the wall time, the GPU's kernel time and count, whether the prefill was
replayed, and the host functions that took longest.

Run on the accelerator: python bench/probes/call_overhead.py
"""
import cProfile
import pstats
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import gpu_decode  # noqa: E402

import genplug  # noqa: E402
from genplug import prefill_graph  # noqa: E402


def main():
    native = gpu_decode.native_one_b()
    ids = torch.randint(3, 128000, (1, gpu_decode.PROMPT), device="cuda")
    run = dict(cache_implementation="static", max_new_tokens=2, eos_token_id=None)
    for _ in range(4):
        genplug.generate(native, ids, **run)
    torch.cuda.synchronize()
    start = time.perf_counter()
    genplug.generate(native, ids, **run)
    torch.cuda.synchronize()
    print(f"2-token call: {(time.perf_counter() - start) * 1e3:.2f} ms; prefill: {prefill_graph.LAST_PREFILL}")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                            torch.profiler.ProfilerActivity.CUDA]) as prof:
        genplug.generate(native, ids, **run)
        torch.cuda.synchronize()
    gpu = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    print(f"kernels: {len(gpu)}, summed GPU time {sum(e.device_time for e in gpu) / 1e3:.2f} ms")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=60))
    profile = cProfile.Profile()
    profile.enable()
    genplug.generate(native, ids, **run)
    torch.cuda.synchronize()
    profile.disable()
    pstats.Stats(profile).sort_stats("cumulative").print_stats(35)


if __name__ == "__main__":
    with torch.no_grad():
        main()
