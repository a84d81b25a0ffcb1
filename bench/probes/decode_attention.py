"""Time one-token attention over a 384-slot static cache (1B shape: 32 query heads in 8 groups, dim 64).

SDPA's default backend, each forced backend, and a hand-written masked softmax; each captured in a CUDA
graph. Run: python bench/probes/decode_attention.py
"""
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from processor_kernels import graph_time


def manual(q, k, v, mask):
    scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1, dtype=torch.float32).to(q.dtype) @ v


def main():
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
