"""What a batch-1 token costs beyond the model's step: the decode loop's graph (model forward, token choice,
bookkeeping) against the model's step alone, and the gap between one replay and the next.

genplug's native 1B greedy measured ~1,159 us a token on an H100 (863 tokens/s) where the model's step,
replayed alone, took ~1,112 us. This probe says where the ~47 us go: it runs ``genplug.generate`` once
(prompt 128, 256 new tokens, static cache), takes that call's captured loop step, and prints

* the time per token of a whole ``generate`` call, of the loop's graph replayed back to back, and of
  the model's step alone, replayed back to back;
* three consecutive replays of the loop's graph under the profiler: every kernel that is not one of
  the model's (token choice, bookkeeping) with its duration, and the idle time between one replay's
  last kernel and the next one's first.

Run on the accelerator: python bench/probes/loop_timeline.py
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_decode  # noqa: E402
from processor_kernels import graph_time, replay_time  # noqa: E402
from step_kernels import one_step_setting  # noqa: E402

import genplug  # noqa: E402
from genplug import graph_loop  # noqa: E402

MODEL_KERNELS = ("gemv", "rms_norm", "attention", "gemm", "cublas", "sm90", "nvjet")


def main():
    native = gpu_decode.native_one_b()
    ids = torch.randint(3, 128000, (1, gpu_decode.PROMPT), device="cuda")
    run = dict(cache_implementation="static", max_new_tokens=gpu_decode.NEW, eos_token_id=None)
    one = dict(run, max_new_tokens=2)  # the prefill, the first token and one replay of the loop's graph
    genplug.generate(native, ids, **one)
    short = min(gpu_decode.timed(lambda: genplug.generate(native, ids, **one))[0] for _ in range(3))
    genplug.generate(native, ids, **run)  # (a new graph: the session kept is now this call's)
    best = min(gpu_decode.timed(lambda: genplug.generate(native, ids, **run))[0] for _ in range(3))
    print(f"generate (prompt {gpu_decode.PROMPT}, {gpu_decode.NEW} new tokens): {gpu_decode.NEW / best:.1f} tokens/s, "
          f"{best * 1e6 / gpu_decode.NEW:.1f} us a token (prefill included)")
    print(f"generate with 2 new tokens: {short * 1e6:.1f} us; the other {gpu_decode.NEW - 2} tokens "
          f"{(best - short) * 1e6 / (gpu_decode.NEW - 2):.1f} us each")

    session = graph_loop._SESSIONS[native]
    first_logits = torch.zeros(1, native.config.vocab_size, device="cuda")

    def refill():  # the slot back to the prompt's end, and the first token accepted (which primes the fed token)
        session.fill(ids, None)
        session.first_token(first_logits)
    refill()
    session.graph.replay()  # (a warm-up replay)
    torch.cuda.synchronize()
    refill()
    loop_us = replay_time(session.graph, 200)
    _, cache, token, pos, slot, valid = one_step_setting(native)
    model_us = graph_time(lambda: native.static_decode_step(token, pos, slot, valid, cache.layers), reps=200)
    print(f"loop step replayed back to back: {loop_us:.1f} us; model step alone: {model_us:.1f} us; "
          f"difference {loop_us - model_us:.1f} us")

    refill()
    torch.cuda.synchronize()
    replays = 3
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(replays):
            session.graph.replay()
        torch.cuda.synchronize()
    kernels = sorted((e.time_range.start, e.time_range.end, e.name) for e in prof.events()
                     if e.device_type == torch.autograd.DeviceType.CUDA and e.time_range.end > e.time_range.start)
    if not kernels or len(kernels) % replays:
        print(f"the profiler saw {len(kernels)} kernels in {replays} replays; no per-replay split")
        return
    per = len(kernels) // replays
    print(f"kernels per loop step: {per}")
    for r in range(replays):
        chunk = kernels[r * per:(r + 1) * per]
        span = chunk[-1][1] - chunk[0][0]
        gap = f", idle before it {chunk[0][0] - kernels[r * per - 1][1]:.1f} us" if r else ""
        print(f"replay {r}: first start to last end {span:.1f} us{gap}")
    print("kernels of the last replay that are not the model's (start from the replay's first, duration, us):")
    chunk = kernels[-per:]
    for begin, finish, name in chunk:
        if not any(k in name.lower() for k in MODEL_KERNELS):
            print(f"  {begin - chunk[0][0]:8.1f} {finish - begin:7.1f}  {name[:90]}")
    tail = [k for k in chunk if any(m in k[2].lower() for m in MODEL_KERNELS)][-1]
    print(f"after the model's last kernel ends: {chunk[-1][1] - tail[1]:.1f} us to the replay's end")


if __name__ == "__main__":
    with torch.no_grad():
        main()
