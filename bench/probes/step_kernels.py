"""Which kernels one native decode step launches (batch 1, 1B shape, bf16), from torch.profiler,
and what one step costs replayed as a CUDA graph -- with the fused Triton kernels (default) and
without them (GENPLUG_DECODE_KERNELS=0, the plain PyTorch step).

Run: python bench/probes/step_kernels.py
"""
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import gpu_decode  # noqa: E402

from processor_kernels import graph_time  # noqa: E402

from genplug.plugins.caches.static import StaticCache  # noqa: E402


def one_step_setting(native=None):
    """The native 1B model (``native``, else a new one) with a 128-token prompt in a 384-slot static cache,
    and the inputs of its next one-token decode step: ``(model, cache, token, position_ids, slot, valid)``."""
    native = native if native is not None else gpu_decode.native_one_b()
    cache = StaticCache(native.config, 384)
    ids = torch.randint(3, 1000, (1, 128), device="cuda")
    with torch.no_grad():
        native(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
    valid = torch.zeros(1, 384, dtype=torch.bool, device="cuda")
    valid[:, :129] = True
    return native, cache, ids[:, -1:], torch.tensor([[128]], device="cuda"), torch.tensor(128, device="cuda"), valid


def main():
    native, cache, token, pos, slot, valid = one_step_setting()
    with torch.no_grad():
        for fused in ("1", "0"):
            os.environ["GENPLUG_DECODE_KERNELS"] = fused
            for _ in range(3):
                native.static_decode_step(token, pos, slot, valid, cache.layers)
            torch.cuda.synchronize()
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
                native.static_decode_step(token, pos, slot, valid, cache.layers)
                torch.cuda.synchronize()
            events = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
            print(f"fused kernels {'on' if fused == '1' else 'off'}: kernels per step: {len(events)}, "
                  f"summed kernel time {sum(e.device_time for e in events):.0f} us, "
                  f"one step as a CUDA graph {graph_step_ms(native, token, pos, slot, valid, cache):.3f} ms")
            print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=70))
    x = torch.randn(1, 1, 2048, dtype=torch.bfloat16, device="cuda")
    w = torch.ones(2048, dtype=torch.bfloat16, device="cuda")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        F.rms_norm(x, (2048,), w, 1e-5)
        torch.cuda.synchronize()
    print("F.rms_norm on bf16 launches", len([e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]),
          "kernels")


def graph_step_ms(native, token, pos, slot, valid, cache):
    """Milliseconds per step of the step captured once and replayed (what the decode loop runs)."""
    return graph_time(lambda: native.static_decode_step(token, pos, slot, valid, cache.layers)) / 1000


if __name__ == "__main__":
    main()
