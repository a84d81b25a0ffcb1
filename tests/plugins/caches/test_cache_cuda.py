"""On a CUDA device: offloading through pinned host memory and a side stream, and a static cache under
CUDA graphs (torch.compile mode="reduce-overhead"). Skipped without CUDA."""

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("backend", ["dynamic", "offloaded", "offloaded_static", "static", "hybrid"])
def test_decoding_on_cuda_matches_transformers(backend):
    from .tiny_models import build, greedy_with_cache, tiny_llama, tiny_qwen2, transformers

    for model in (tiny_llama(), tiny_qwen2(["full_attention", "sliding_attention"], 4)):
        model = model.cuda()
        prompt = torch.randint(0, 128, (2, 9), generator=torch.Generator().manual_seed(0)).cuda()
        ref_ids, ref_logits = greedy_with_cache(model, prompt, transformers.DynamicCache(config=model.config), 40)
        cache = build(backend, model.config, max_cache_len=49)
        ids, logits = greedy_with_cache(model, prompt, cache, 40)
        assert torch.equal(ids, ref_ids)
        torch.testing.assert_close(logits, ref_logits, atol=1e-4, rtol=0)
        if backend.startswith("offloaded"):
            host = [layer for layer in cache.layers if type(layer).__name__ == "HostLayer"]
            assert host and all(layer.host_keys.is_pinned() and not layer.host_keys.is_cuda for layer in host)
            assert len(cache.resident_layers()) <= 2  # two layers fit both slots: no prefetch needed
            assert all(t.is_cuda for t in cache.extra_tensors())


def test_quantization_on_cuda_matches_cpu():
    from genplug.plugins.caches.quantized import dequantize, quantize

    x = torch.randn(2, 4, 64, 64, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    for nbits in (4, 8):
        for axis in (-1, -2):
            on_cpu, on_gpu = quantize(x, nbits, 32, axis), quantize(x.cuda(), nbits, 32, axis)
            assert torch.equal(on_cpu.codes, on_gpu.codes.cpu())
            torch.testing.assert_close(dequantize(on_gpu, torch.bfloat16).cpu(), dequantize(on_cpu, torch.bfloat16))


def test_offloaded_keeps_two_layers_on_the_device_and_matches_dynamic():
    from genplug.plugins.caches.dynamic import DynamicCache
    from genplug.plugins.caches.offloaded import OffloadedCache

    config = {"num_hidden_layers": 8}
    dynamic, offloaded = DynamicCache(config), OffloadedCache(config)
    torch.manual_seed(0)
    for chunk in [64] * 15 + [1] * 8:  # a prompt, then single-token steps
        for layer in range(8):
            k = torch.randn(1, 8, chunk, 64, device="cuda", dtype=torch.bfloat16)
            want, _ = dynamic.update(k, -k, layer)
            got, got_values = offloaded.update(k, -k, layer)
            assert torch.equal(got, want) and torch.equal(got_values, -want), (chunk, layer)
            assert len(offloaded.resident_layers()) <= 2
    assert offloaded._stream is not None
    all_layers = sum(dynamic.storage_nbytes().values())
    on_device = offloaded.storage_nbytes().get("cuda", 0)
    assert on_device <= all_layers / 4 * 1.3  # two of eight layers (plus slot headroom)
    assert torch.equal(offloaded.layers[3].keys, dynamic.layers[3].keys.cpu())


@pytest.mark.slow
def test_static_cache_under_cuda_graphs():
    from .tiny_models import build, greedy_with_cache, tiny_llama, transformers

    model = tiny_llama().cuda()
    prompt = torch.randint(0, 128, (1, 9), generator=torch.Generator().manual_seed(0)).cuda()
    ref_ids, _ = greedy_with_cache(model, prompt, transformers.DynamicCache(config=model.config), 24)
    cache = build("static", model.config, batch=1, max_cache_len=40)

    def step(token, position):
        return model(input_ids=token, position_ids=position, past_key_values=cache, use_cache=True).logits[:, -1]

    compiled = torch.compile(step, mode="reduce-overhead", fullgraph=True)
    for run in range(2):  # the second call reuses the cache (reset, no reallocation) and the graphs
        cache.reset()
        with torch.no_grad():
            token = model(input_ids=prompt, past_key_values=cache, use_cache=True).logits[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([prompt, token], dim=1)
            for _ in range(23):
                position = torch.full((1, 1), ids.shape[1] - 1, device="cuda")
                token = compiled(token, position).argmax(-1, keepdim=True).clone()
                ids = torch.cat([ids, token], dim=1)
        assert torch.equal(ids, ref_ids), run
        assert cache.get_seq_length() == ids.shape[1] - 1
