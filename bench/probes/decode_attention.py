"""Time one-token attention over a 384-slot static cache (1B shape: 32 query heads in 8 groups, dim 64).

SDPA's default backend, each forced backend, a hand-written masked softmax, and genplug's fused
RoPE + cache write + attention kernel per (splits, query heads per program, block_s, warps, stages);
each captured in a CUDA graph.
Run: python bench/probes/decode_attention.py [--fused-only]
"""
import itertools
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from processor_kernels import graph_time


def manual(q, k, v, mask):
    scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1, dtype=torch.float32).to(q.dtype) @ v


def fused(batch, filled, parts=0):
    from genplug.plugins.models.llama import decode_kernels as dk

    qkv = torch.randn(batch, 1, 48 * 64, dtype=torch.bfloat16, device="cuda")
    if parts:  # as the split-K GEMV hands it over: float32 partial sums
        qkv = dk.PartialSums(torch.randn(parts, batch, 48 * 64, device="cuda"))
    cos = torch.randn(1, 1, 1, 64, dtype=torch.bfloat16, device="cuda")
    sin = torch.randn_like(cos)
    keys = torch.randn(batch, 8, 384, 64, dtype=torch.bfloat16, device="cuda")
    values = torch.randn_like(keys)
    valid = torch.ones(batch, 384, dtype=torch.bool, device="cuda")
    slot = torch.tensor(filled, device="cuda")
    results = []
    for config in itertools.product((1, 4, 8, 16) if batch == 1 else (1, 2), (1, 4), (16, 32, 64, 128), (2, 4, 8),
                                    (1,) if batch == 1 else (1, 2)):
        try:
            t = graph_time(lambda: dk.rope_cache_attention(qkv, cos, sin, slot, valid, keys, values, 32, 8, 64, config))
        except Exception as exc:
            print(f"  fused {config}: {type(exc).__name__}")
            continue
        results.append((t, config))
    results.sort()
    tuned = dk.ATTENTION_CONFIG["one row" if batch == 1 else "rows"]
    default = [t for t, c in results if c == tuned]
    print(f"b{batch} fused, qkv in {parts or 'no'} partial sums, {filled} slots filled: best " + "; ".join(f"{t:.1f} us {c}" for t, c in results[:4])
          + (f"; default {tuned}: {default[0]:.1f} us" if default else ""), flush=True)


def main():
    for batch in (1, 16):
        for filled in (128, 383):
            for parts in ((4,) if batch == 1 else (0,)):
                fused(batch, filled, parts)
    if "--fused-only" in sys.argv:
        return
    for batch in (1, 16):
        q = torch.randn(batch, 8, 4, 64, dtype=torch.bfloat16, device="cuda")
        k = torch.randn(batch, 8, 384, 64, dtype=torch.bfloat16, device="cuda")
        v = torch.randn_like(k)
        mask = torch.zeros(batch, 1, 1, 384, dtype=torch.bool, device="cuda")
        mask[..., :200] = True
        print(f"b{batch} sdpa default   {graph_time(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)):6.1f} us")
        for backend in (SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH, SDPBackend.CUDNN_ATTENTION):
            try:
                with sdpa_kernel([backend]):
                    t = graph_time(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
                print(f"b{batch} sdpa {backend.name:18} {t:6.1f} us")
            except Exception as exc:
                print(f"b{batch} sdpa {backend.name}: {type(exc).__name__}")
        print(f"b{batch} hand-written   {graph_time(lambda: manual(q, k, v, mask)):6.1f} us", flush=True)


if __name__ == "__main__":
    main()
