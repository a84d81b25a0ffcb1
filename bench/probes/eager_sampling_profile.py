"""Where genplug's eager loop spends host time when sampling with a transformers model on CUDA (batch 1).

cProfile of 32 new tokens through genplug and through transformers' generate, plus the number of CUDA
kernels each launches per token. Run: python bench/probes/eager_sampling_profile.py
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

NEW = 32


def main():
    import transformers

    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(gpu_decode.one_b_config()).to(torch.bfloat16).cuda().eval()
    ids = torch.randint(3, 128000, (1, 128), device="cuda")
    common = dict(max_new_tokens=NEW, eos_token_id=None, **gpu_decode.SAMPLING)
    runs = {"genplug": lambda: genplug.generate(hf, ids, **common), "transformers": lambda: hf.generate(ids, **common)}
    for name, fn in runs.items():
        fn()
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
        kernels = len([e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA])
        seconds, _ = gpu_decode.timed(fn)
        print(f"{name}: {kernels / NEW:.0f} kernels per token, {1000 * seconds / NEW:.2f} ms per token")
        profile = cProfile.Profile()
        profile.enable()
        fn()
        torch.cuda.synchronize()
        profile.disable()
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(18)
        print("\n".join(out.getvalue().splitlines()[:45]))


if __name__ == "__main__":
    main()
