"""core/cache.py: build_cache, check_capabilities and the registry path a third-party backend takes."""

import warnings
from types import SimpleNamespace

import pytest
import torch

import genplug
from genplug.cache import CAPABILITIES, Cache, CacheRequest, build_cache, check_capabilities
from genplug.errors import GenerationConfigError, PluginError
from genplug.plugin_manager import new_plugin_manager

CONFIG = SimpleNamespace(num_hidden_layers=2, num_key_value_heads=2, head_dim=4, sliding_window=None, layer_types=None)


def manager(*plugins):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return new_plugin_manager(autoload=False, plugins=plugins)


def request(**kwargs):
    values = dict(model_config=CONFIG, batch_size=1, max_cache_len=16, dtype=torch.float32, device=torch.device("cpu"))
    values.update(kwargs)
    return CacheRequest(**values)


class RecordingCache(Cache):
    """A third-party backend: keeps every update in Python lists."""

    capabilities = frozenset({"crop"})

    def __init__(self, request):
        self.request = request
        self.keys, self.values = {}, {}

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        for store, new in ((self.keys, key_states), (self.values, value_states)):
            store[layer_idx] = new if layer_idx not in store else torch.cat([store[layer_idx], new], dim=-2)
        return self.keys[layer_idx], self.values[layer_idx]

    def get_seq_length(self, layer_idx=0):
        return self.keys[layer_idx].shape[-2] if layer_idx in self.keys else 0

    def __len__(self):
        return len(self.keys)


class RecordingPlugin:
    @genplug.hookimpl
    def genplug_register_cache_backends(self, register):
        register("recording", RecordingCache, capabilities=frozenset({"crop"}), config_keys=("note",),
                 description="test backend")


def test_every_builtin_backend_is_registered_with_known_capabilities():
    registry = manager().registries.cache_backends
    expected = {"dynamic", "static", "offloaded", "offloaded_static", "quantized", "sliding_window",
                "sliding_window_static", "hybrid"}
    assert expected <= set(registry)
    for name in expected:
        entry = registry[name]
        assert entry.options["capabilities"] <= CAPABILITIES
        assert entry.provider.startswith("cache_") and "genplug" in entry.provider
        cache_config = {"sliding_window": 4} if name.startswith("sliding") else {}
        cache = build_cache(registry, name, request(cache_config=cache_config))
        assert cache.capabilities == entry.options["capabilities"], name


def test_third_party_backend_is_built_by_name_and_used():
    pm = manager(RecordingPlugin())
    cache = build_cache(pm.registries, "recording", request(cache_config={"note": "hi"}))
    assert isinstance(cache, RecordingCache) and cache.request.cache_config == {"note": "hi"}
    keys, _ = cache.update(torch.ones(1, 2, 3, 4), torch.ones(1, 2, 3, 4), 0)
    assert keys.shape == (1, 2, 3, 4) and cache.get_seq_length() == 3
    entry = pm.registries.cache_backends.lookup("recording")
    assert "in-process" in entry.provider
    check_capabilities("greedy_search", set(), "recording", entry)
    with pytest.raises(GenerationConfigError) as err:
        check_capabilities("beam_search", {"reorder", "crop"}, "recording", entry)
    message = str(err.value)
    assert "beam_search" in message and "'reorder'" in message and "recording" in message and "in-process" in message
    assert "'crop'" not in message.split("does not have")[0]


def test_third_party_backend_drives_a_model():
    transformers = pytest.importorskip("transformers")
    from .tiny_models import greedy_with_cache, tiny_llama

    model = tiny_llama()
    prompt = torch.randint(0, 128, (1, 5), generator=torch.Generator().manual_seed(0))
    expected, _ = greedy_with_cache(model, prompt, transformers.DynamicCache(), 8)
    cache = build_cache(manager(RecordingPlugin()).registries, "recording", request(model_config=model.config))
    got, _ = greedy_with_cache(model, prompt, cache, 8)
    assert torch.equal(got, expected)


def test_unknown_backend_lists_known_names_and_providers():
    with pytest.raises(PluginError) as err:
        build_cache(manager().registries, "dynamc", request())
    message = str(err.value)
    assert "'dynamc'" in message and "Did you mean 'dynamic'" in message
    assert "static (cache_static (genplug" in message


def test_unknown_cache_config_key_names_it_and_the_accepted_keys():
    registry = manager(RecordingPlugin()).registries
    with pytest.raises(GenerationConfigError) as err:
        build_cache(registry, "quantized", request(cache_config={"nbit": 4}))
    message = str(err.value)
    assert "'nbit'" in message and "quantized" in message and "nbits, q_group_size" in message
    assert "Did you mean 'nbits'" in message
    with pytest.raises(GenerationConfigError, match="accepts: no options"):
        build_cache(registry, "dynamic", request(cache_config={"max_cache_len": 4}))
    with pytest.raises(GenerationConfigError, match="'other'.*accepts: note"):
        build_cache(registry, "recording", request(cache_config={"other": 1}))


def test_check_capabilities_accepts_anything_with_capabilities():
    check_capabilities("sample", {"crop"}, "x", SimpleNamespace(capabilities=frozenset({"crop"})))
    with pytest.raises(GenerationConfigError, match="'reorder'"):
        check_capabilities("beam_search", {"reorder"}, "x", SimpleNamespace(capabilities=frozenset()))


class BadCapabilityPlugin:
    @genplug.hookimpl
    def genplug_register_cache_backends(self, register):
        register("weird", RecordingCache, capabilities=frozenset({"teleport"}))


def test_unknown_capability_in_a_registration_is_a_plugin_error():
    with pytest.raises(PluginError, match="teleport"):
        build_cache(manager(BadCapabilityPlugin()).registries, "weird", request())


class DecoderOnlyPlugin:
    @genplug.hookimpl
    def genplug_register_cache_backends(self, register):
        register("decoder_only", RecordingCache)


def test_encoder_decoder_request_needs_an_encoder_decoder_cache():
    pm = manager(DecoderOnlyPlugin())
    with pytest.raises(PluginError, match="EncoderDecoderCache"):
        build_cache(pm.registries, "decoder_only", request(is_encoder_decoder=True, encoder_length=5))
    cache = build_cache(pm.registries, "dynamic", request(is_encoder_decoder=True, encoder_length=5))
    assert isinstance(cache, genplug.EncoderDecoderCache)
    static = build_cache(pm.registries, "static", request(is_encoder_decoder=True, encoder_length=5))
    assert static.cross_attention_cache.capabilities >= {"static_shape"}


def test_public_classes_are_importable_from_genplug():
    for name in ("DynamicCache", "StaticCache", "OffloadedCache", "OffloadedStaticCache", "QuantizedCache",
                 "SlidingWindowCache", "HybridCache", "EncoderDecoderCache"):
        assert issubclass(getattr(genplug, name), Cache)


def test_a_beam_reorder_on_the_caches_device_dispatches_only_the_row_selections():
    """Beam search reorders every layer each step: on the index's own device that is one row selection (and,
    static, one copy back) per tensor, with no no-op ``.to`` in between -- which, under ``torch.inference_mode``
    as callers often run generate, goes all the way through the dispatcher; the rows land where the index says."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from genplug.plugins.caches.dynamic import DynamicCache
    from genplug.plugins.caches.static import StaticCache

    class Dispatched(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    keys = torch.arange(3 * 2 * 4 * 5, dtype=torch.float32).view(3, 2, 4, 5)
    beam_idx = torch.tensor([2, 2, 0])
    for cache, per_layer in ((DynamicCache(), ["index_select"] * 2), (StaticCache(None, 8), ["index_select", "copy_"] * 2)):
        for layer in range(2):
            cache.update(keys + layer, -keys - layer, layer)
        with torch.inference_mode(), Dispatched() as dispatched:
            cache.reorder_cache(beam_idx)
        assert dispatched.ops == per_layer * 2, type(cache).__name__
        assert torch.equal(cache.layers[1].keys[:, :, :4], keys[beam_idx] + 1)
        assert torch.equal(cache.layers[0].values[:, :, :4], -keys[beam_idx])
