"""When each fused decode kernel lets the next one launch (programmatic dependent launch): at its start
(``decode_kernels.EARLY_TRIGGER``, PDL level 2, shipped since the thirteenth session) or after its own wait
for the kernel before it (level 1, before). With level 2 the next kernel's programs can be resident and
reading their first weights one kernel earlier -- during attention, the output GEMV's and the add+norm's
successors too, where the multiprocessors have room. Native 1B model, 256 new tokens, best of 3 calls, the
two settings taking turns twice; batch 1 greedy (graph == eager checked) and sampling, then batch 16 and 64
greedy.

Run on the accelerator: python bench/probes/trigger_variants.py [--batch-1-only]
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import gpu_decode  # noqa: E402

import genplug  # noqa: E402
import genplug.graph_loop as graph_loop  # noqa: E402
from genplug.plugins.models.llama import decode_kernels  # noqa: E402

SETTINGS = [("trigger after the wait (before)", False), ("trigger at the start (shipped)", True)] * 2


def main():
    native = gpu_decode.native_one_b()
    batches = (1,) if "--batch-1-only" in sys.argv else (1, 16, 64)
    for batch in batches:
        ids = torch.randint(3, 128000, (batch, gpu_decode.PROMPT), device="cuda")
        modes = (("greedy", {}), ("sampling", gpu_decode.SAMPLING)) if batch == 1 else (("greedy", {}),)
        for mode, extra in modes:
            for name, early in SETTINGS:
                decode_kernels.EARLY_TRIGGER = early
                graph_loop.release(native)

                def run(**more):
                    return genplug.generate(native, ids, cache_implementation="static",
                                            max_new_tokens=gpu_decode.NEW, eos_token_id=None, **extra, **more)
                try:
                    _, out = gpu_decode.timed(run)
                    best = min(gpu_decode.timed(run)[0] for _ in range(3))
                    same = ""
                    if mode == "greedy" and batch == 1:
                        same = f"; graph == eager {torch.equal(out, run(disable_compile=True))}"
                    print(f"b{batch} {mode:8} {name:32} {batch * gpu_decode.NEW / best:9.1f} tokens/s{same}",
                          flush=True)
                except Exception as exc:  # one broken setting must not hide the others
                    print(f"b{batch} {mode:8} {name:32} {type(exc).__name__}: {exc}"[:300], flush=True)
    decode_kernels.EARLY_TRIGGER = True


if __name__ == "__main__":
    main()
