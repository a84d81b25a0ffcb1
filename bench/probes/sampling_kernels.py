"""What sampling adds to a batch-1 decode step of the native 1B model: one genplug.generate call per mode
(greedy; sampling with bench/gpu_decode.py's temperature, top-k, top-p and repetition penalty) is
profiled over its graph replays, and each kernel's summed GPU time per new token is printed, the model's
own kernels (GEMVs, attention, norms, cuBLAS) summed apart. The difference between the modes is what the
processors and the token choice cost.

Run on the accelerator: python bench/probes/sampling_kernels.py
"""
import sys
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import gpu_decode  # noqa: E402

import genplug  # noqa: E402

NEW = 64
MODEL_KERNELS = ("gemv", "rms_norm", "attention", "gemm", "sm90", "cublas")


def per_token_kernels(native, ids, **extra):
    def run():
        return genplug.generate(native, ids, cache_implementation="static", max_new_tokens=NEW, eos_token_id=None,
                                **extra)

    run()
    run()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        run()
        torch.cuda.synchronize()
    times = defaultdict(float)
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            times[e.name] += (e.time_range.end - e.time_range.start) / NEW
    return times


def main():
    native = gpu_decode.native_one_b()
    ids = torch.randint(3, 128000, (1, gpu_decode.PROMPT), device="cuda")
    modes = {"greedy": per_token_kernels(native, ids), "sampling": per_token_kernels(native, ids, **gpu_decode.SAMPLING)}
    for mode, times in modes.items():
        model = sum(t for name, t in times.items() if any(k in name.lower() for k in MODEL_KERNELS))
        rest = {name: t for name, t in times.items() if not any(k in name.lower() for k in MODEL_KERNELS)}
        print(f"{mode}: model kernels {model:7.1f} us per token; the rest {sum(rest.values()):6.1f} us per token "
              f"(includes the prompt's share over {NEW} tokens):")
        for name, t in sorted(rest.items(), key=lambda item: -item[1])[:14]:
            print(f"  {t:6.2f}  {name[:100]}")


if __name__ == "__main__":
    main()
