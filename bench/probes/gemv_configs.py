"""Tile sizes for genplug's one-row split-K GEMV (decode_kernels.gemv) on the 1B shapes, against cuBLAS.

Each cell runs the matmul over enough weight copies (> 4x the L2 cache) that every call reads its
weights from memory, as in a decode step, captured in one CUDA graph; prints GB/s read per config and
the best per shape. Run from bench/probes: python gemv_configs.py [--quick] [--layouts ...] [--shapes ...]
"""
import argparse
import itertools

import torch
from processor_kernels import graph_time

from genplug.plugins.models.llama import decode_kernels as dk

SHAPES = {"qkv": (2048, 3072), "o": (2048, 2048), "gate_up": (2048, 16384), "down": (8192, 2048),
          "lm_head": (2048, 128256)}


def copies_for(nbytes: int) -> int:
    return max(2, (200 << 20) // nbytes + 1)


def seconds_per_call(fn_list, repeats=5):
    """Seconds per call of the calls in ``fn_list``, all captured in one CUDA graph and replayed."""
    return graph_time(lambda: [fn() for fn in fn_list], reps=repeats) / 1e6 / len(fn_list)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--layouts", default="out_in,in_out")
    parser.add_argument("--shapes", default=",".join(SHAPES))
    args = parser.parse_args()
    grid = dict(block_n=(16, 32, 64, 128), block_k=(64, 128, 256), warps=(4, 8), stages=(2, 4), per_sm=(1, 2, 4, 8))
    if args.quick:
        grid = dict(block_n=(64, 128), block_k=(64, 128), warps=(4,), stages=(3,), per_sm=(4,))
    for layout in args.layouts.split(","):
        for name, (n_in, n_out) in SHAPES.items():
            if (layout == "out_in" and name == "lm_head") or name not in args.shapes.split(","):
                continue
            nbytes = n_in * n_out * 2
            weights = [torch.randn(n_in, n_out, dtype=torch.bfloat16, device="cuda") for _ in range(copies_for(nbytes))]
            if layout == "out_in":
                weights = [w.t().contiguous().t() for w in weights]
            silu = name == "down"
            x = torch.randn(1, 1, 2 * n_in if silu else n_in, dtype=torch.bfloat16, device="cuda")
            x_dense = torch.randn(1, n_in, dtype=torch.bfloat16, device="cuda")
            cublas = seconds_per_call([lambda w=w: x_dense @ w for w in weights])
            results = []
            for combo in itertools.product(*grid.values()):
                config = tuple(combo)
                if config[0] * config[1] > 128 * 128 or (layout == "out_in" and config[1] < 64):
                    continue
                try:
                    t = seconds_per_call([lambda w=w: dk.gemv(x, w, gated_input="silu" if silu else None, config=config) for w in weights])
                except Exception as exc:  # a config Triton cannot compile (too many registers, ...)
                    print(f"  {name} {config}: {type(exc).__name__}")
                    continue
                results.append((nbytes / t / 1e9, config))
            results.sort(reverse=True)
            print(f"{layout:6} {name:8} {n_in}x{n_out}: cuBLAS {nbytes / cublas / 1e9:7.0f} GB/s; best Triton:",
                  "; ".join(f"{gbs:.0f} GB/s {cfg}" for gbs, cfg in results[:4]), flush=True)
            few = [r for r in results if r[1][4] == 1]
            if few:
                print(f"       best with per_sm=1 (fewest splits): {few[0][0]:.0f} GB/s {few[0][1]}")
            default = dk._gemv_config(n_in, n_out, layout == "out_in")
            mine = [r for r in results if r[1] == default]
            if mine:
                print(f"       default {default}: {mine[0][0]:.0f} GB/s")
            del weights
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
