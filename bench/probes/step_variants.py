"""Batch-1 greedy decode of the native 1B model under variants of the fused step: programmatic
dependent launch (GENPLUG_PDL=1), the attention's cached slots split among programs with a group's
query heads together (decode_kernels.ATTENTION_CONFIG), and the gate/up projection through genplug's
GEMV (stored [out, in]) instead of cuBLAS. Prints tokens/s (best of 3 calls of 256 new tokens) and
whether the graph loop equals the eager path under the same variant. The last line names the fastest
variant whose graph loop equals its eager path as flags for bench/gpu_decode.py (gate/up GEMV variants
excluded there: the twin of a transformers model keeps cuBLAS for it).

Run: python bench/probes/step_variants.py
"""
import os
import sys
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import gpu_decode  # noqa: E402

import genplug  # noqa: E402
import genplug.graph_loop as graph_loop  # noqa: E402
from genplug import triton_support  # noqa: E402
from genplug.plugins.models.llama import decode_kernels  # noqa: E402

SHIPPED_ATTENTION = decode_kernels.ATTENTION_CONFIG["one row"]
VARIANTS = [  # (name, PDL, attention config, gate/up through the GEMV)
    ("as shipped (PDL, split attention)", "1", SHIPPED_ATTENTION, False),
    ("PDL off", "0", SHIPPED_ATTENTION, False),
    ("PDL off, attention 1 split x 1 head", "0", (1, 1, 128, 8, 1), False),
    ("PDL, attention 1 split x 1 head", "1", (1, 1, 128, 8, 1), False),
    ("attention 16 splits x 4 heads", "0", (16, 4, 16, 4, 1), False),
    ("attention 4 splits x 1 head", "0", (4, 1, 32, 4, 1), False),
    ("PDL + attention 8x4 + gate/up GEMV", "1", (8, 4, 32, 4, 1), True),
    ("PDL off, gate/up GEMV", "0", SHIPPED_ATTENTION, True),
    ("PDL + attention 16x4", "1", (16, 4, 16, 4, 1), False),
    ("PDL + attention 4x4", "1", (4, 4, 32, 4, 1), False),
]


def gate_up_storage(model, through_gemv: bool):
    for layer in model.model.layers:
        projection = layer.mlp.gate_up_proj
        weight = projection.weight_t.detach()
        if (weight.stride(0) == 1) != through_gemv:
            stored = weight.t().contiguous().t() if through_gemv else weight.contiguous()
            projection.weight_t = nn.Parameter(stored, requires_grad=False)


def main():
    native = gpu_decode.native_one_b()
    ids = torch.randint(3, 128000, (1, gpu_decode.PROMPT), device="cuda")
    results = []
    for name, pdl, attention, gemv_gate_up in VARIANTS:
        os.environ["GENPLUG_PDL"] = pdl
        triton_support._DEPENDENT_LAUNCH.clear()
        decode_kernels.ATTENTION_CONFIG["one row"] = attention
        gate_up_storage(native, gemv_gate_up)
        graph_loop.release(native)

        def run(**extra):
            return genplug.generate(native, ids, cache_implementation="static", max_new_tokens=gpu_decode.NEW,
                                    eos_token_id=None, **extra)

        try:
            eager = run(disable_compile=True)
            first, out = gpu_decode.timed(run)
            best = min(gpu_decode.timed(run)[0] for _ in range(3))
            same = torch.equal(out, eager)
            print(f"{name:40} {gpu_decode.NEW / best:7.1f} tokens/s (first call {first:.2f} s); "
                  f"graph == eager {same}", flush=True)
            if same and not gemv_gate_up:
                results.append((gpu_decode.NEW / best, pdl, attention))
        except Exception as exc:  # one broken variant must not hide the others
            print(f"{name:40} {type(exc).__name__}: {exc}"[:300], flush=True)
    if results:
        _, pdl, attention = max(results)
        print(f"best flags: --pdl {pdl} --attention {','.join(map(str, attention))}")


if __name__ == "__main__":
    main()
