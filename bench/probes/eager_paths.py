"""Batch-1 decoding without the CUDA-graph loop on a GPU: what a user gets who keeps the default cache.

Issue 9's model (random Llama-3.2-1B shape, bf16, prompt 128) and 256 new greedy tokens through: transformers'
generate with its default dynamic cache; genplug with its default dynamic cache (the native model, and the
transformers model through its native twin); genplug with a static cache but no graph (``disable_compile=True``:
the eager loop, whose one-token forward runs the fused Triton kernels) and with the graph loop. Prints tokens/s
(best of ``--repeats`` calls after a first) and the CUDA kernels a decode step launches (profiled over a short call).
Run on the accelerator: python bench/probes/eager_paths.py [--new 256] [--repeats 2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gpu_decode import PROMPT, hf_and_native_one_b, timed  # noqa: E402


def kernels_per_step(fn_short, fn_long, extra_tokens: int) -> float:
    """CUDA kernels per extra token: (kernels of a call making more tokens - a shorter one's) / the difference."""
    from torch.profiler import ProfilerActivity, profile

    counts = []
    for fn in (fn_short, fn_long):
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
        counts.append(sum(1 for e in prof.events() if e.device_type.name == "CUDA"))
    return (counts[1] - counts[0]) / extra_tokens


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--new", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    import genplug

    hf, native = hf_and_native_one_b()
    ids = torch.randint(3, 128000, (1, PROMPT), device="cuda")

    def calls(new):
        common = dict(max_new_tokens=new, eos_token_id=None)
        return {
            "transformers dynamic": lambda: hf.generate(ids, **common),
            "genplug native, dynamic (default)": lambda: genplug.generate(native, ids, **common),
            "genplug native, static, eager loop": lambda: genplug.generate(
                native, ids, cache_implementation="static", disable_compile=True, **common),
            "genplug native, static, graph loop": lambda: genplug.generate(
                native, ids, cache_implementation="static", **common),
            "genplug on hf model, dynamic (default: twin)": lambda: genplug.generate(hf, ids, **common),
            "genplug on hf model, static, eager loop": lambda: genplug.generate(
                hf, ids, cache_implementation="static", disable_compile=True, **common),
        }

    long_calls, short_calls = calls(args.new), calls(8)
    outputs = {}
    for name, fn in long_calls.items():
        first, out = timed(fn)
        seconds = min(timed(fn)[0] for _ in range(args.repeats))
        outputs[name] = out
        per_step = kernels_per_step(short_calls[name], calls(24)[name], 16)
        print(f"{name:46} {args.new / seconds:8.1f} tokens/s  (first call {first:5.1f} s; "
              f"{per_step:6.1f} kernels a step)", flush=True)
    same = torch.equal(outputs["genplug native, static, eager loop"], outputs["genplug native, static, graph loop"])
    print(f"native static: eager loop == graph loop: {same}")


if __name__ == "__main__":
    main()
