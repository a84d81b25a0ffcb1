"""The gate/up projection stored for cuBLAS (``[in, out]``, as shipped before the twelfth session) or for
genplug's one-row GEMV (``[out, in]``), at batch 1, 16 and 64 (greedy, native 1B, 256 new tokens, best of 2
calls): the GEMV takes part in programmatic dependent launch at batch 1, and at several rows cuBLAS reads
either layout. Batch 1 also checks that the graph loop equals the eager path.

Run on the accelerator: python bench/probes/gate_up_storage.py
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_decode  # noqa: E402
from step_variants import gate_up_storage  # noqa: E402

import genplug  # noqa: E402
import genplug.graph_loop as graph_loop  # noqa: E402


def main():
    native = gpu_decode.native_one_b()
    for batch in (1, 16, 64):
        ids = torch.randint(3, 128000, (batch, gpu_decode.PROMPT), device="cuda")
        for name, through_gemv in (("cuBLAS [in, out]", False), ("GEMV [out, in]", True), ("cuBLAS again", False)):
            gate_up_storage(native, through_gemv)
            graph_loop.release(native)

            def run(**extra):
                return genplug.generate(native, ids, cache_implementation="static", max_new_tokens=gpu_decode.NEW,
                                        eos_token_id=None, **extra)
            _, out = gpu_decode.timed(run)
            best = min(gpu_decode.timed(run)[0] for _ in range(2))
            same = f"; graph == eager {torch.equal(out, run(disable_compile=True))}" if batch == 1 else ""
            print(f"b{batch} gate/up {name:18} {batch * gpu_decode.NEW / best:9.1f} tokens/s{same}", flush=True)


if __name__ == "__main__":
    main()
