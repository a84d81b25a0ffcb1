"""Static caches: one allocation reused across calls, clear errors when too short, and a decode step
torch.compile(fullgraph=True) captures once."""

import pytest
import torch

from genplug.errors import GenerationConfigError
from genplug.plugins.caches.static import StaticCache


def kv(tokens, batch=1, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 2, tokens, 4, generator=generator), torch.randn(batch, 2, tokens, 4, generator=generator)


def test_reset_reuses_the_buffers_across_calls():
    cache = StaticCache(None, 16)
    cache.update(*kv(5), 0)
    keys = cache.layers[0].keys
    address = keys.data_ptr()
    cache.reset()
    assert cache.get_seq_length() == 0 and keys.abs().sum() == 0
    returned, _ = cache.update(*kv(3, seed=1), 0)
    assert returned.data_ptr() == address and cache.get_seq_length() == 3
    torch.testing.assert_close(returned[:, :, :3], kv(3, seed=1)[0])


def test_reset_zeroes_every_layer_together_and_calls_overridden_resets():
    """The cache zeroes its static layers' buffers in one batched call; full and sliding layers alike end
    empty, and a layer class overriding reset() still has it called."""
    from types import SimpleNamespace

    from genplug.plugins.caches.layers import StaticLayer

    class Counted(StaticLayer):
        resets = 0

        def reset(self):
            Counted.resets += 1
            super().reset()

    config = SimpleNamespace(num_hidden_layers=2, layer_types=["full_attention", "sliding_attention"], sliding_window=4)
    cache = StaticCache(config, 16)
    cache.layers.append(Counted(16))
    for index in range(3):
        cache.update(*kv(6, seed=index), index)
    buffers = [t for layer in cache.layers for t in (layer.keys, layer.values, layer.position)]
    assert all(t.abs().sum() > 0 for t in buffers[:2])
    cache.reset()
    assert all(t.abs().sum() == 0 for t in buffers)
    assert [layer.get_seq_length() for layer in cache.layers] == [0, 0, 0] and Counted.resets == 1
    assert cache.layers[1].stored == 0 and cache.layers[1].seen_counter.sum() == 0
    keys, _ = cache.update(*kv(3, seed=5), 1)  # the sliding layer starts over at slot 0
    torch.testing.assert_close(keys[:, :, :3], kv(3, seed=5)[0])


def test_decode_steps_return_one_shape_and_address():
    cache = StaticCache(None, 16)
    cache.update(*kv(5), 0)
    seen = set()
    for step in range(6):
        keys, _ = cache.update(*kv(1, seed=step), 0)
        seen.add((tuple(keys.shape), keys.data_ptr()))
    assert len(seen) == 1 and cache.get_mask_sizes(1, 0) == (16, 0)


def test_too_short_static_cache_raises_at_build_and_at_update():
    from .tiny_models import build

    config = {"num_hidden_layers": 1}
    with pytest.raises(GenerationConfigError, match=r"max_cache_len=8 is too short.*at least 20"):
        build("static", config, max_cache_len=20, cache_config={"max_cache_len": 8})
    cache = build("static", config, max_cache_len=8)
    cache.update(*kv(6), 0)
    with pytest.raises(GenerationConfigError, match=r"max_cache_len=8 tokens, but this update needs 10"):
        cache.update(*kv(4), 0)
    assert cache.get_seq_length() == 6  # the refused update changed nothing


def test_crop_moves_the_write_position_back():
    cache = StaticCache(None, 16)
    cache.update(*kv(6), 0)
    cache.crop(-2)
    k, v = kv(1, seed=9)
    keys, _ = cache.update(k, v, 0)
    assert cache.get_seq_length() == 5
    torch.testing.assert_close(keys[:, :, 4:5], k)


@pytest.mark.slow
@pytest.mark.parametrize("backend,model", [("static", "llama"), ("hybrid", "qwen2"), ("sliding_window_static", "mistral")])
def test_decode_step_compiles_once_with_fullgraph(backend, model):
    """torch.compile(fullgraph=True) (eager backend: no compiler toolchain needed) captures the decode
    step once; later steps reuse the graph and match the recompute oracle."""
    import torch._dynamo.testing

    from .tiny_models import build, recompute_logits, tiny_llama, tiny_mistral, tiny_qwen2

    net = {"llama": tiny_llama, "qwen2": lambda: tiny_qwen2(["full_attention", "sliding_attention"], 4),
           "mistral": lambda: tiny_mistral(4)}[model]()
    cache = build(backend, net.config, max_cache_len=24)
    counter = torch._dynamo.testing.CompileCounter()

    def step(token, position):
        return net(input_ids=token, position_ids=position, past_key_values=cache, use_cache=True).logits[:, -1]

    compiled = torch.compile(step, backend=counter, fullgraph=True)
    ids = torch.randint(0, 128, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        token = net(input_ids=ids, past_key_values=cache, use_cache=True).logits[:, -1].argmax(-1, keepdim=True)
        steps = []
        for _ in range(8):  # crosses the window of the sliding layers
            ids = torch.cat([ids, token], dim=1)
            logits = compiled(token, torch.full((2, 1), ids.shape[1] - 1))
            steps.append(logits)
            token = logits.argmax(-1, keepdim=True)
    torch._dynamo.reset()
    assert counter.frame_count == 1
    assert cache.get_seq_length() == ids.shape[1]  # the Python counter caught up with the device one
    # steps[i] predicts the token after ids[:, :8 + i]; the last one has no later token to check against
    torch.testing.assert_close(torch.stack(steps[:-1], 1), recompute_logits(net, ids, 8), atol=1e-5, rtol=0)
