"""The add+norm kernel on rows wider than decode_kernels.NORM_MAX_BLOCK (Gemma-2-27B's 4,608, Llama-70B's
8,192, Llama-405B's 16,384), walked in chunks (as shipped) against held whole (NORM_MAX_BLOCK raised:
the row's registers spill), batch 1 with 8 partial sums as the GEMVs leave them, with and without Gemma's
norm of the delta: microseconds per call, replayed from a CUDA graph, and the largest difference of the two
outputs in bf16 ulps of the output's scale.

Run on the accelerator: python bench/probes/wide_norm.py
"""
import torch
from processor_kernels import graph_time

from genplug.plugins.models.llama import decode_kernels as dk


def main():
    shipped = dk.NORM_MAX_BLOCK
    for width in (4608, 8192, 16384):
        for delta_norm in (False, True):
            g = torch.Generator().manual_seed(width)
            x = torch.randn(1, 1, width, generator=g).to("cuda", torch.bfloat16)
            delta = dk.PartialSums(torch.randn(8, 1, width, generator=g).cuda())
            weight, delta_weight = (1 + 0.3 * torch.randn(width, generator=g).cuda() for _ in range(2))
            norm = (delta_weight, 1e-5) if delta_norm else None
            times, outs = {}, {}
            for name, limit in (("chunked", shipped), ("whole row", 1 << 20)):
                dk.NORM_MAX_BLOCK = limit
                outs[name] = dk.add_rms_norm(x, delta, weight, 1e-6, delta_norm=norm)
                times[name] = graph_time(lambda: dk.add_rms_norm(x, delta, weight, 1e-6, delta_norm=norm))
            dk.NORM_MAX_BLOCK = shipped
            apart = max((a.float() - b.float()).abs().max().item() / b.float().abs().max().item()
                        for a, b in zip(outs["chunked"], outs["whole row"]))
            print(f"width {width:6d} delta norm {str(delta_norm):5}: chunked {times['chunked']:6.2f} us, "
                  f"whole row {times['whole row']:6.2f} us; largest difference {apart / 2**-8:.2f} bf16 ulps of the max",
                  flush=True)


if __name__ == "__main__":
    main()
