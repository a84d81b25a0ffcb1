"""Sampling at small batches through the CUDA-graph loop (native 1B, 256 new tokens): whether the loop's
graph is captured (a warning says when it is not, and why) and the tokens/s. The twelfth session's
rows_variants.py run saw batch 4 sampling's capture invalidated, after which every later call in that
process failed ("Offset increment outside graph capture encountered unexpectedly").

Run on the accelerator: python bench/probes/small_batch_sampling.py [batch ...] [--rows-attention s,q,b,w,st]
"""
import sys
import traceback
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import gpu_decode  # noqa: E402

import genplug  # noqa: E402
from genplug import graph_loop  # noqa: E402
from genplug.plugins.models.llama import decode_kernels  # noqa: E402


def main():
    args = sys.argv[1:]
    if "--rows-attention" in args:
        at = args.index("--rows-attention")
        decode_kernels.ATTENTION_CONFIG["rows"] = tuple(int(v) for v in args[at + 1].split(","))
        del args[at:at + 2]
    batches = [int(b) for b in args] or [2, 4, 8]
    print("rows attention", decode_kernels.ATTENTION_CONFIG["rows"], flush=True)
    native = gpu_decode.native_one_b()
    for batch in batches:
        ids = torch.randint(3, 128000, (batch, gpu_decode.PROMPT), device="cuda")
        for mode, extra in (("greedy", {}), ("sampling", gpu_decode.SAMPLING)):
            graph_loop.release(native)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    run = lambda: genplug.generate(native, ids, cache_implementation="static",  # noqa: E731
                                                   max_new_tokens=gpu_decode.NEW, eos_token_id=None, **extra)
                    first, _ = gpu_decode.timed(run)
                    best = min(gpu_decode.timed(run)[0] for _ in range(2))
                    print(f"b{batch} {mode}: {batch * gpu_decode.NEW / best:.1f} tokens/s, captured "
                          f"{graph_loop.LAST_CAPTURE_SECONDS is not None}", flush=True)
                except Exception:
                    print(f"b{batch} {mode}: FAILED", flush=True)
                    traceback.print_exc()
                    return
            for w in caught:
                if "genplug" in str(w.message):
                    print(f"  warning: {str(w.message)[:1500]}", flush=True)


if __name__ == "__main__":
    main()
