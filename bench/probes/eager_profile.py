"""Where the host time of a batch-1 eager decode step goes on a GPU (issue 9's 1B shape, bf16, prompt 128).

For genplug's native model with the default dynamic cache and with a static cache in the eager loop
(``disable_compile=True``): the ATen ops that read a tensor on the host per step (``aten::item``,
``aten::_local_scalar_dense``, ``aten::is_nonzero``) and the CUDA synchronisations, from torch's profiler over a
short call; then cProfile's top functions by own time over a call of ``--new`` tokens.
Run on the accelerator: python bench/probes/eager_profile.py [--new 64]
"""

from __future__ import annotations

import argparse
import cProfile
import collections
import io
import pstats
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gpu_decode import PROMPT, native_one_b, timed  # noqa: E402

HOST_READS = ("aten::item", "aten::_local_scalar_dense", "aten::is_nonzero", "cudaStreamSynchronize",
              "cudaDeviceSynchronize", "cudaMemcpyAsync", "cudaEventSynchronize")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--new", type=int, default=64)
    args = parser.parse_args()
    import genplug
    from torch.profiler import ProfilerActivity, profile

    native = native_one_b()
    ids = torch.randint(3, 128000, (1, PROMPT), device="cuda")
    paths = {
        "dynamic (default)": {},
        "static, eager loop": dict(cache_implementation="static", disable_compile=True),
    }
    for name, extra in paths.items():
        def call(new):
            return genplug.generate(native, ids, max_new_tokens=new, eos_token_id=None, **extra)

        call(args.new)
        seconds = timed(lambda: call(args.new))[0]
        print(f"== {name}: {args.new / seconds:.1f} tokens/s, {1e3 * seconds / args.new:.2f} ms a token", flush=True)
        counts = []
        for new in (8, 24):
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                call(new)
                torch.cuda.synchronize()
            counts.append(collections.Counter(e.name for e in prof.events()))
        per_step = {k: (counts[1][k] - counts[0][k]) / 16 for k in set(counts[0]) | set(counts[1])}
        print("  per step: " + ", ".join(f"{k} {per_step.get(k, 0):.2f}" for k in HOST_READS))
        top = sorted(((v, k) for k, v in per_step.items() if k.startswith("aten::")), reverse=True)[:12]
        print("  ATen ops per step: " + ", ".join(f"{k[6:]} {v:.1f}" for v, k in top))
        profiler = cProfile.Profile()
        profiler.enable()
        call(args.new)
        torch.cuda.synchronize()
        profiler.disable()
        stream = io.StringIO()
        pstats.Stats(profiler, stream=stream).sort_stats("tottime").print_stats(30)
        print("\n".join(line[:160] for line in stream.getvalue().splitlines()[:50]), flush=True)


if __name__ == "__main__":
    main()
