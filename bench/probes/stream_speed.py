"""Batch-1 decoding with a streamer on a GPU: genplug's CUDA-graph loop (which takes streamers since the
fourteenth session) against its eager loop and transformers' static cache + compile, on issue 9's model
(random Llama-3.2-1B shape, bf16, prompt 128, 256 new greedy tokens). The streamer keeps what it is given,
as a text streamer would before decoding it. Prints tokens/s (best of ``--repeats`` calls after a first) and
whether the streamed tokens equal the returned ones.
Run on the accelerator: python bench/probes/stream_speed.py [--repeats 2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gpu_decode import NEW, PROMPT, hf_and_native_one_b, timed  # noqa: E402


class Keeping:
    """A streamer that keeps every put (on the host, as transformers' streamers receive them)."""

    def __init__(self):
        self.puts = []

    def put(self, value):
        self.puts.append(value.cpu())

    def end(self):
        pass

    def new_tokens(self):
        return torch.cat([p.reshape(-1) for p in self.puts[1:]])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    import genplug

    hf, native = hf_and_native_one_b()
    ids = torch.randint(3, 128000, (1, PROMPT), device="cuda")
    common = dict(max_new_tokens=NEW, eos_token_id=None)
    cells = {
        "genplug native, static, graph loop, no streamer": (None, lambda s: genplug.generate(
            native, ids, cache_implementation="static", **common)),
        "genplug native, static, graph loop, streamer": (Keeping, lambda s: genplug.generate(
            native, ids, cache_implementation="static", streamer=s, **common)),
        "genplug native, static, eager loop, streamer": (Keeping, lambda s: genplug.generate(
            native, ids, cache_implementation="static", disable_compile=True, streamer=s, **common)),
        "transformers static+compile, streamer": (Keeping, lambda s: hf.generate(
            ids, cache_implementation="static", streamer=s, **common)),
    }
    for name, (make, call) in cells.items():
        streamers = []

        def fn():
            streamers.append(make() if make else None)
            return call(streamers[-1])

        first, out = timed(fn)
        best = float("inf")
        for _ in range(args.repeats):
            seconds, out = timed(fn)
            best = min(best, seconds)
        streamed = ""
        if make:
            same = torch.equal(streamers[-1].new_tokens(), out[0, PROMPT:].cpu())
            streamed = f"; streamed == returned: {same}"
        print(f"{name:50} {NEW / best:8.1f} tokens/s (first call {first:5.1f} s{streamed})", flush=True)


if __name__ == "__main__":
    main()
