"""Re-tune the one-row GEMV's tiles on the card at hand, then time batch-1 greedy with them.

The tiles in decode_kernels._gemv_config were chosen on H100s (~3.0 TB/s). A card with more bandwidth
(an H200, ~4.2 TB/s) needs more bytes in flight to stream at its rate, so the best tile may differ.
First every shape of the 1B model's step ([out, in] storage, as store_for_gpu_decode leaves it) is
timed alone over a small grid around the shipped tile (GB/s, each call reading its weights from memory);
then, in the same process, the native 1B model decodes 256 tokens at batch 1 with the tiles shipped before
the sixteenth session, the shipped ones and the best ones here, in turn, and the graph loop's tokens are
checked against the eager path under the same tiles.

Run on the accelerator: python bench/probes/gemv_retune.py [--quick]
"""
import argparse
import itertools
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import gpu_decode  # noqa: E402
from gemv_configs import SHAPES, copies_for, seconds_per_call  # noqa: E402

import genplug  # noqa: E402
import genplug.graph_loop as graph_loop  # noqa: E402
from genplug.plugins.models.llama import decode_kernels as dk  # noqa: E402

SHIPPED = dk._gemv_config


def previous_tiles(in_width, out_width, k_contiguous):
    """The tiles shipped before the sixteenth session (tuned on H100s in the seventh)."""
    if k_contiguous:
        return 16, 256 if in_width >= 4096 or out_width > in_width else 128, 8 if in_width <= 2048 else 4, 2, 8
    return 64, 256, 4, 4, 8


def grid(quick: bool):
    if quick:
        return [(16, 256, 8, 2, 8), (16, 256, 4, 2, 8), (32, 256, 4, 2, 8), (16, 512, 4, 2, 8)]
    return list(itertools.product((16, 32), (128, 256, 512), (4, 8), (2,), (4, 8, 16)))


def tune(quick: bool, bandwidth: float):
    best = {}
    for name, (n_in, n_out) in SHAPES.items():
        nbytes = n_in * n_out * 2
        weights = [torch.randn(n_in, n_out, dtype=torch.bfloat16, device="cuda").t().contiguous().t()
                   for _ in range(copies_for(nbytes))]
        gated = "silu" if name == "down" else None
        x = torch.randn(1, 1, 2 * n_in if gated else n_in, dtype=torch.bfloat16, device="cuda")
        shipped = SHIPPED(n_in, n_out, True)
        results = []
        for config in dict.fromkeys([shipped] + grid(quick)):
            if config[0] * config[1] > 128 * 128:
                continue
            try:
                t = seconds_per_call([lambda w=w: dk.gemv(x, w, gated_input=gated, config=config) for w in weights])
            except Exception as exc:  # a tile Triton cannot build (registers, shared memory)
                print(f"  {name} {config}: {type(exc).__name__}", flush=True)
                continue
            results.append((nbytes / t / 1e9, config))
        results.sort(reverse=True)
        mine = next(gbs for gbs, config in results if config == shipped)
        print(f"{name:8} {n_in}x{n_out}: shipped {shipped} {mine:6.0f} GB/s ({100 * mine * 1e9 / bandwidth:.0f}% of copy); best "
              + "; ".join(f"{gbs:.0f} {config}" for gbs, config in results[:3]), flush=True)
        best[(n_in, n_out)] = results[0][1] if results[0][0] > 1.01 * mine else shipped
        del weights
        torch.cuda.empty_cache()
    return best


def with_configs(best):
    def config(in_width, out_width, k_contiguous):
        if k_contiguous and (in_width, out_width) in best:
            return best[(in_width, out_width)]
        return SHIPPED(in_width, out_width, k_contiguous)
    return config


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    bandwidth = gpu_decode.copy_bandwidth()
    print(f"{torch.cuda.get_device_name()}: copy bandwidth {bandwidth / 1e12:.2f} TB/s", flush=True)
    best = tune(args.quick, bandwidth)
    print("tuned:", {f"{k[0]}x{k[1]}": v for k, v in best.items()}, flush=True)
    native = gpu_decode.native_one_b()
    ids = torch.randint(3, 128000, (1, gpu_decode.PROMPT), device="cuda")

    def run(**extra):
        return genplug.generate(native, ids, cache_implementation="static", max_new_tokens=gpu_decode.NEW,
                                eos_token_id=None, **extra)

    for round_ in range(2):
        for label, chooser in (("previous", previous_tiles), ("shipped", SHIPPED), ("tuned", with_configs(best))):
            dk._gemv_config = chooser
            graph_loop.release(native)
            eager = run(disable_compile=True)  # the eager forward runs the same GEMVs (same sums)
            first, out = gpu_decode.timed(run)
            fastest = min(gpu_decode.timed(run)[0] for _ in range(3))
            print(f"round {round_}: {label:8} {gpu_decode.NEW / fastest:7.1f} tokens/s; graph == eager "
                  f"{torch.equal(out, eager)}", flush=True)
    dk._gemv_config = SHIPPED


if __name__ == "__main__":
    main()
