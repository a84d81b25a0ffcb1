"""KV-cache memory per token for every backend, and the speed cost of offloading.

1. Memory (runs anywhere): bytes of cache per token per layer at bf16 for a 1B-shaped layer
   (8 kv heads, head_dim 64), measured by filling each backend and adding up the storage it holds
   (quantized: codes + scales + zero points + residual). Two figures per backend:
   * ``marginal`` -- what one more token costs, (bytes(2N) - bytes(N)) / N; fixed parts such as the
     quantized residual window or a static buffer's unused tail do not count;
   * ``at N`` -- total bytes / N at N tokens (static buffers sized to exactly N).
   Offloaded caches are filled as a 16-layer model, so their device column shows the two staged
   layers spread over 16. Target (issue 5): int4 quantized marginal <= 30% of dynamic.

2. Speed (``torch.cuda.is_available()``, else a tiny shape on CPU): greedy decoding of a random
   1B-shaped Llama (transformers) through genplug's dynamic / offloaded / static / offloaded_static
   caches, against transformers' own ``DynamicCache`` with and without ``offloading=True`` measured
   in the same run. Prints ms per token, ratios, and peak device memory. CPU numbers are ratios only.

Run: OMP_NUM_THREADS=1 python bench/cache_memory.py [--memory-only | --speed-only] [--tokens N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from types import SimpleNamespace

import torch

HEADS, HEAD_DIM, LAYERS_1B = 8, 64, 16


# ------------------------------------------------------------------------------------------- memory


def filled_bytes(cache, layers: int, tokens: int, chunk: int = 512) -> dict:
    cache.reset()
    done = 0
    while done < tokens:
        step = min(chunk, tokens - done)
        for layer in range(layers):
            k = torch.zeros(1, HEADS, step, HEAD_DIM, dtype=torch.bfloat16)
            cache.update(k, k, layer)
        done += step
    return cache.storage_nbytes()


def memory_table(tokens: int) -> None:
    from genplug.plugins.caches.dynamic import DynamicCache
    from genplug.plugins.caches.hybrid import HybridCache
    from genplug.plugins.caches.offloaded import OffloadedCache, OffloadedStaticCache
    from genplug.plugins.caches.quantized import QuantizedCache
    from genplug.plugins.caches.sliding_window import SlidingWindowCache
    from genplug.plugins.caches.static import StaticCache

    one = SimpleNamespace(num_hidden_layers=1)
    many = SimpleNamespace(num_hidden_layers=LAYERS_1B)
    window = 1024
    half_sliding = SimpleNamespace(num_hidden_layers=2, layer_types=["full_attention", "sliding_attention"],
                                   sliding_window=window)
    rows = [
        ("dynamic", lambda n: DynamicCache(one), 1),
        ("static", lambda n: StaticCache(one, n), 1),
        ("offloaded", lambda n: OffloadedCache(many, initial_capacity=n), LAYERS_1B),
        ("offloaded_static", lambda n: OffloadedStaticCache(many, n), LAYERS_1B),
        ("quantized int8", lambda n: QuantizedCache(one, nbits=8), 1),
        ("quantized int4", lambda n: QuantizedCache(one, nbits=4), 1),
        (f"sliding_window (W={window})", lambda n: SlidingWindowCache(one, window), 1),
        (f"hybrid (1 full + 1 sliding, W={window})", lambda n: HybridCache(half_sliding, n), 2),
    ]
    print(f"\nKV cache bytes per token per layer, bf16, {HEADS} kv heads x head_dim {HEAD_DIM} "
          f"(dynamic = 2 x {HEADS} x {HEAD_DIM} x 2 B = {2 * HEADS * HEAD_DIM * 2} B)")
    header = f"{'backend':40} {'marginal':>10} {'ratio':>7} {'device @N':>10} {'ratio':>7} {'host @N':>10}   N={tokens}"
    print(header)
    print("-" * len(header))
    dynamic_marginal = dynamic_at_n = None
    for name, make, layers in rows:
        at_half = filled_bytes(make(tokens // 2), layers, tokens // 2)  # static buffers sized to what they hold
        at_full = filled_bytes(make(tokens), layers, tokens)
        marginal = (sum(at_full.values()) - sum(at_half.values())) / (tokens - tokens // 2) / layers
        # on this machine "device" and "host" are both the CPU: offloaded caches' slots are the device part
        if name.startswith("offloaded"):
            cache = make(tokens)
            filled_bytes(cache, layers, tokens)
            device = sum(t.numel() * t.element_size() for t in cache.extra_tensors()) / tokens / layers
            host = sum(at_full.values()) / tokens / layers - device
            marginal = host
        else:
            device, host = sum(at_full.values()) / tokens / layers, 0.0
        if dynamic_marginal is None:
            dynamic_marginal, dynamic_at_n = marginal, device
        print(f"{name:40} {marginal:10.1f} {marginal / dynamic_marginal:7.1%} {device:10.1f} "
              f"{device / dynamic_at_n:7.1%} {host:10.1f}")
    int4 = QuantizedCache(one, nbits=4)
    marginal_int4 = (sum(filled_bytes(int4, 1, tokens).values()) - sum(filled_bytes(int4, 1, tokens // 2).values())) \
        / (tokens - tokens // 2)
    verdict = "OK" if marginal_int4 <= 0.30 * dynamic_marginal else "MISSED"
    print(f"\ntarget: int4 quantized marginal <= 30% of dynamic: {marginal_int4 / dynamic_marginal:.1%} ({verdict})")
    print("marginal = cost of one more token (offloaded: host bytes); device/host @N = total / N at N tokens")


# -------------------------------------------------------------------------------------------- speed


def decode_ms(model, prompt, make_cache, new_tokens: int, device) -> tuple:
    """ms per decode step (prefill excluded) of one run, and the peak device bytes during it."""
    cache = make_cache()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    with torch.no_grad():
        out = model(input_ids=prompt, past_key_values=cache, use_cache=True)
        token = out.logits[:, -1:].argmax(-1)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(new_tokens):
            token = model(input_ids=token, past_key_values=cache, use_cache=True).logits[:, -1:].argmax(-1)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    elapsed = (time.perf_counter() - start) / new_tokens * 1000
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    return elapsed, peak


def speed_table(prompt_tokens: int, new_tokens: int, rounds: int = 5) -> None:
    import transformers

    from genplug.plugins.caches.dynamic import DynamicCache
    from genplug.plugins.caches.offloaded import OffloadedCache, OffloadedStaticCache
    from genplug.plugins.caches.static import StaticCache

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        shape = dict(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=LAYERS_1B,
                     num_attention_heads=32, num_key_value_heads=HEADS, max_position_embeddings=8192)
        dtype = torch.bfloat16
    else:
        shape = dict(vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=4,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096)
        dtype = torch.float32
        prompt_tokens, new_tokens = min(prompt_tokens, 256), min(new_tokens, 32)
    config = transformers.LlamaConfig(**shape)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).to(device=device, dtype=dtype).eval()
    prompt = torch.randint(0, config.vocab_size, (1, prompt_tokens), device=device)
    length = prompt_tokens + new_tokens + 1
    runs = [
        ("transformers DynamicCache (anchor)", lambda: transformers.DynamicCache(config=config)),
        ("transformers DynamicCache(offloading=True)", lambda: transformers.DynamicCache(config=config, offloading=True)),
        ("genplug dynamic", lambda: DynamicCache(config)),
        ("genplug offloaded", lambda: OffloadedCache(config, initial_capacity=length)),
        ("transformers StaticCache (eager)", lambda: transformers.StaticCache(config=config, max_cache_len=length)),
        ("genplug static (eager)", lambda: StaticCache(config, length)),
        ("genplug offloaded_static", lambda: OffloadedStaticCache(config, length)),
    ]
    if not cuda:
        runs.pop(1)  # transformers' offloading needs a CUDA stream
    where = torch.cuda.get_device_name(device) if cuda else "CPU (tiny shape: ratios only)"
    print(f"\nGreedy decode, {where}, {dtype}, prompt {prompt_tokens}, {new_tokens} new tokens, "
          f"{shape['num_hidden_layers']} layers x h{shape['hidden_size']}")
    print(f"{'cache':44} {'ms/token':>9} {'vs anchor':>10} {'peak device MB':>15}")
    # Rounds run every cache once, in turn, so drifting clocks or load from other processes hit all alike.
    samples = {name: [] for name, _ in runs}
    peaks = {}
    for _ in range(rounds):
        for name, make in runs:
            ms, peaks[name] = decode_ms(model, prompt, make, new_tokens, device)
            samples[name].append(ms)
    anchor = statistics.median(samples[runs[0][0]])
    for name, _ in runs:
        ms = statistics.median(samples[name])
        print(f"{name:44} {ms:9.2f} {ms / anchor:10.2f} {peaks[name] / 2**20 if cuda else float('nan'):15.1f}")
    print(f"(median of {rounds} rounds)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory-only", action="store_true")
    parser.add_argument("--speed-only", action="store_true")
    parser.add_argument("--tokens", type=int, default=4096, help="tokens for the memory table (N)")
    parser.add_argument("--prompt", type=int, default=2048, help="prompt tokens for the speed table")
    parser.add_argument("--new-tokens", type=int, default=128)
    args = parser.parse_args()
    if not args.speed_only:
        memory_table(args.tokens)
    if not args.memory_only:
        speed_table(args.prompt, args.new_tokens)


if __name__ == "__main__":
    main()
