"""Batched decoding of the native 1B model under variants of the step: the fused Triton kernels as shipped,
the plain PyTorch step (GENPLUG_DECODE_KERNELS=0: cuBLAS matmuls, SDPA attention, captured in the same CUDA
graph), and other settings of the several-rows attention kernel (decode_kernels.ATTENTION_CONFIG["rows"],
ROWS_PROGRAMS_PER_SM).

Why: batch-64 greedy measured 28,437 tokens/s on an H100 on 2026-11-22, ~24,000 in the first sessions of
2026-12-05 and 21,300-21,600 since, while batch 1 went up. The first run of this probe (H100, 2026-12-06,
twelfth session; bench/results/twelfth_session/rows_variants_first.txt) found the rows attention's one
program per query head the cause: 4 query heads a program (reading each cached key/value once for the
group) ran batch 64 greedy at 26,454 against 21,813 (the PyTorch step 21,320), and batch 16 with 2 splits
10,796 against 9,406 -- now the shipped setting, splits fitted to the batch. Prints tokens/s (best of 3 calls of 256 new tokens, prompt 128) per batch, mode and variant.

Run on the accelerator: python bench/probes/rows_variants.py [--batches 16,64] [--modes greedy,sampling]
"""
import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import gpu_decode  # noqa: E402

import genplug  # noqa: E402
import genplug.graph_loop as graph_loop  # noqa: E402
from genplug.plugins.models.llama import decode_kernels  # noqa: E402

SHIPPED_ROWS = decode_kernels.ATTENTION_CONFIG["rows"]
SHIPPED_PER_SM = decode_kernels.ROWS_PROGRAMS_PER_SM
VARIANTS = [  # (name, GENPLUG_DECODE_KERNELS, rows attention config, its programs per SM where splits are fitted)
    ("fused kernels as shipped", "1", SHIPPED_ROWS, SHIPPED_PER_SM),
    ("PyTorch step (GENPLUG_DECODE_KERNELS=0)", "0", SHIPPED_ROWS, SHIPPED_PER_SM),
    # the rows setting of the eleventh session: one program per query head, unsplit
    ("before: one head a program (1, 1, 128, 2, 2)", "1", (1, 1, 128, 2, 2), SHIPPED_PER_SM),
    ("fitted splits, stages 1", "1", (0, 4, 32, 4, 1), SHIPPED_PER_SM),
    ("fitted splits, 16 slots a tile", "1", (0, 4, 16, 4, 2), SHIPPED_PER_SM),
    ("fitted splits to 4 programs per SM", "1", (0, 4, 32, 4, 2), 4),
    ("fitted splits to 1 program per SM", "1", (0, 4, 32, 4, 2), 1),
    ("fused kernels as shipped (again: noise)", "1", SHIPPED_ROWS, SHIPPED_PER_SM),
]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", default="4,16,64")
    parser.add_argument("--modes", default="greedy,sampling")
    parser.add_argument("--variants", default="", help="comma-separated substrings of the variants to run")
    args = parser.parse_args()
    native = gpu_decode.native_one_b()
    wanted = [v for v in args.variants.split(",") if v]
    for batch in (int(b) for b in args.batches.split(",")):
        ids = torch.randint(3, 128000, (batch, gpu_decode.PROMPT), device="cuda")
        for mode in args.modes.split(","):
            extra = gpu_decode.SAMPLING if mode == "sampling" else {}
            for name, kernels, rows_config, per_sm in VARIANTS:
                if wanted and not any(w in name for w in wanted):
                    continue
                os.environ["GENPLUG_DECODE_KERNELS"] = kernels
                decode_kernels.ATTENTION_CONFIG["rows"] = rows_config
                decode_kernels.ROWS_PROGRAMS_PER_SM = per_sm
                graph_loop.release(native)

                def run():
                    return genplug.generate(native, ids, cache_implementation="static", max_new_tokens=gpu_decode.NEW,
                                            eos_token_id=None, **extra)

                try:
                    first, _ = gpu_decode.timed(run)
                    best = min(gpu_decode.timed(run)[0] for _ in range(3))
                    print(f"b{batch} {mode:8} {name:52} {batch * gpu_decode.NEW / best:9.1f} tokens/s "
                          f"(first call {first:.2f} s)", flush=True)
                except Exception as exc:  # one broken variant must not hide the others
                    print(f"b{batch} {mode:8} {name:52} {type(exc).__name__}: {exc}"[:300], flush=True)
    os.environ["GENPLUG_DECODE_KERNELS"] = "1"
    decode_kernels.ATTENTION_CONFIG["rows"] = SHIPPED_ROWS
    decode_kernels.ROWS_PROGRAMS_PER_SM = SHIPPED_PER_SM


if __name__ == "__main__":
    main()
