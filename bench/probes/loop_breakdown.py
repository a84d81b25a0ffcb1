"""Where a batch-1 greedy decode's time goes: set-up + prefill, graph capture, and each decoded token
(model step vs the rest of the loop: processors, token choice, bookkeeping), for the native 1B model.

Run: python bench/probes/loop_breakdown.py
"""
import cProfile
import io
import pstats
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import gpu_decode  # noqa: E402

import genplug  # noqa: E402
import genplug.graph_loop as graph_loop  # noqa: E402


def main():
    native = gpu_decode.native_one_b()
    ids = torch.randint(3, 128000, (1, gpu_decode.PROMPT), device="cuda")
    for mode, extra in (("greedy", {}), ("sampling", gpu_decode.SAMPLING)):
        def run(new):
            return genplug.generate(native, ids, cache_implementation="static", max_new_tokens=new,
                                    eos_token_id=None, **extra)

        run(256)
        run(1)  # warm too: its cache (another max_length) is new, and its first call set it up
        one, _ = gpu_decode.timed(lambda: run(1))
        full, _ = gpu_decode.timed(lambda: run(256))
        capture, reused = graph_loop.LAST_CAPTURE_SECONDS, graph_loop.LAST_GRAPH_REUSED
        per_token = (full - one - capture) / 255
        print(f"{mode}: 256 tokens {1000 * full:.1f} ms ({256 / full:.0f} tokens/s); set-up + prefill + first "
              f"token {1000 * one:.1f} ms; capture or reuse {1000 * capture:.1f} ms (graph reused: {reused}); "
              f"per decoded token {1000 * per_token:.3f} ms")
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                                torch.profiler.ProfilerActivity.CUDA]) as prof:
            run(1)
            torch.cuda.synchronize()
        print("one-token call (set-up + prefill + first token):")
        print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=25, max_name_column_width=60))
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            run(33)
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=22, max_name_column_width=60))
        profile = cProfile.Profile()
        profile.enable()
        run(256)
        torch.cuda.synchronize()
        profile.disable()
        text = io.StringIO()
        pstats.Stats(profile, stream=text).sort_stats("cumulative").print_stats(45)
        print("\n".join(line[:150] for line in text.getvalue().splitlines()[:80]))


if __name__ == "__main__":
    main()
