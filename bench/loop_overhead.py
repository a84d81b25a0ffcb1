"""Per-step overhead of genplug's greedy/sampling loop beyond the model forward, on CPU.

Compares genplug.generate on a tiny pure-torch model against a hand-written minimal loop (the floor:
forward + argmax/multinomial + buffer write, nothing else), and against transformers' generate on the
same tiny transformers Llama when transformers is installed. One thread; ratios are what count.
Run: python bench/loop_overhead.py
"""

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import genplug  # noqa: E402
from helpers.tiny_lm import TinyCausalLM  # noqa: E402

NEW_TOKENS = 256


def _best_times(fns, runs=21):
    """The fastest CPU time (this process's) of each of ``fns`` over ``runs`` rounds, the functions taking
    turns within each round: a disturbance slows every variant alike, and the fastest run is the one it
    disturbed least. (A median of 7 separate runs each moved the greedy ratio between 1.1x and 1.6x.)"""
    for fn in fns:
        fn()
    best = [float("inf")] * len(fns)
    for _ in range(runs):
        for i, fn in enumerate(fns):
            start = time.process_time()
            fn()
            best[i] = min(best[i], time.process_time() - start)
    return best


def new_cache(model, ids, n):
    """The same cache genplug.generate builds for this call (the "dynamic" backend)."""
    from genplug.cache import CacheRequest, build_cache
    from genplug.plugin_manager import get_plugin_manager

    request = CacheRequest(model_config=model.config, batch_size=ids.shape[0], max_cache_len=ids.shape[1] + n,
                           dtype=torch.float32, device=ids.device)
    return build_cache(get_plugin_manager().registries.cache_backends, "dynamic", request)


def minimal_loop(model, ids, n, sample=False):
    """The floor: prefill, then forward + choose + write, with the same cache backend as genplug."""
    tokens = ids.new_zeros((ids.shape[0], ids.shape[1] + n))
    tokens[:, :ids.shape[1]] = ids
    cache = new_cache(model, ids, n)
    out = model(ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
    cur = ids.shape[1]
    for _ in range(n):
        logits = out.logits[:, -1].float()
        nxt = torch.multinomial(logits.softmax(-1), 1)[:, 0] if sample else logits.argmax(-1)
        tokens[:, cur] = nxt
        cur += 1
        out = model(tokens[:, cur - 1:cur], past_key_values=cache, use_cache=True, logits_to_keep=1)
    return tokens


def forwards_only(model, ids, n):
    cache = new_cache(model, ids, n)
    model(ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
    nxt = ids[:, -1:]
    for _ in range(n):
        model(nxt, past_key_values=cache, use_cache=True, logits_to_keep=1)


@torch.no_grad()
def main():
    torch.set_num_threads(1)
    model = TinyCausalLM(vocab_size=512, hidden=64, layers=2, max_positions=512, seed=0)
    ids = torch.randint(0, 512, (1, 16))
    forward, floor_greedy, floor_sample, greedy, sample = _best_times([
        lambda: forwards_only(model, ids, NEW_TOKENS),
        lambda: minimal_loop(model, ids, NEW_TOKENS),
        lambda: minimal_loop(model, ids, NEW_TOKENS, sample=True),
        lambda: genplug.generate(model, ids, max_new_tokens=NEW_TOKENS, eos_token_id=None),
        lambda: genplug.generate(model, ids, max_new_tokens=NEW_TOKENS, eos_token_id=None, do_sample=True, top_k=0),
    ])
    floor_greedy, floor_sample, greedy, sample = (t - forward for t in (floor_greedy, floor_sample, greedy, sample))
    per = 1000 / NEW_TOKENS
    print(f"tiny model, 1 thread, {NEW_TOKENS} new tokens; overhead = generate time - bare forwards, per step")
    print(f"forward only                         {forward * per:7.3f} ms/step")
    print(f"floor (minimal loop) greedy          {floor_greedy * per:7.3f} ms/step")
    print(f"genplug greedy                       {greedy * per:7.3f} ms/step  ratio to floor {greedy / floor_greedy:5.2f}x"
          "  (target <= 1.3x)")
    print(f"floor (minimal loop) sampling        {floor_sample * per:7.3f} ms/step")
    print(f"genplug sampling (no warpers)        {sample * per:7.3f} ms/step  ratio to floor {sample / floor_sample:5.2f}x")
    print("sampling with processors against transformers: python bench/hf_loop_overhead.py")


if __name__ == "__main__":
    main()
