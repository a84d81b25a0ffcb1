"""Offloaded caches: at most two layers on the device, host storage that grows, CPU-only operation."""

import torch

from genplug.plugins.caches.offloaded import HostLayer, OffloadedCache, OffloadedStaticCache
from genplug.plugins.caches.dynamic import DynamicCache


def step(cache, layers, tokens, seed):
    generator = torch.Generator().manual_seed(seed)
    outputs = []
    for layer in range(layers):
        k = torch.randn(1, 2, tokens, 4, generator=generator)
        keys, values = cache.update(k, k * 2, layer)
        outputs.append(keys.clone())
        assert len(getattr(cache, "resident_layers", list)()) <= 2
    return outputs


def test_at_most_two_layers_resident_and_results_match_dynamic():
    for offloaded in (OffloadedCache({"num_hidden_layers": 5}, initial_capacity=2),
                      OffloadedStaticCache({"num_hidden_layers": 5}, 32)):
        reference = DynamicCache({"num_hidden_layers": 5})
        for seed, tokens in enumerate([6, 1, 1, 3, 1]):
            got, want = step(offloaded, 5, tokens, seed), step(reference, 5, tokens, seed)
            for g, w in zip(got, want):
                torch.testing.assert_close(g[:, :, : w.shape[-2]], w, atol=0, rtol=0)
        slots = offloaded.extra_tensors()
        assert len(slots) == 4  # two slots, keys + values
        assert all(isinstance(layer, HostLayer) for layer in offloaded.layers)
        assert offloaded._stream is None  # no CUDA here: plain copies, no side stream


def test_host_storage_grows_and_counts_capacity():
    cache = OffloadedCache({"num_hidden_layers": 1}, initial_capacity=4)
    step(cache, 1, 3, 0)
    assert cache.layers[0].capacity == 4
    step(cache, 1, 3, 1)
    assert cache.layers[0].capacity == 8 and cache.get_seq_length() == 6
    assert cache.layers[0].keys.shape[-2] == 6
    host_bytes = 2 * 1 * 2 * 8 * 4 * 4  # keys + values, capacity 8, float32
    assert cache.storage_nbytes()["cpu"] >= host_bytes


def test_sliding_layers_stay_on_the_device_and_are_skipped_by_prefetch():
    config = {"num_hidden_layers": 3, "layer_types": ["full_attention", "sliding_attention", "full_attention"],
              "sliding_window": 3}
    cache = OffloadedCache(config)
    reference = DynamicCache(config)
    assert [type(layer).__name__ for layer in cache.layers] == ["HostLayer", "SlidingLayer", "HostLayer"]
    for seed, tokens in enumerate([5, 1, 1, 1]):
        for g, w in zip(step(cache, 3, tokens, seed), step(reference, 3, tokens, seed)):
            torch.testing.assert_close(g, w, atol=0, rtol=0)
    assert set(cache.resident_layers()) <= {0, 2}
