"""Bad input to caches raises with a message that says what was wrong and how to fix it."""

import pytest
import torch

from genplug.errors import GenerationConfigError, GenerationInputError
from genplug.plugins.caches.dynamic import DynamicCache
from genplug.plugins.caches.offloaded import OffloadedCache
from genplug.plugins.caches.quantized import QuantizedCache
from genplug.plugins.caches.sliding_window import SlidingWindowCache
from genplug.plugins.caches.static import StaticCache

MAKERS = {
    "dynamic": lambda: DynamicCache(),
    "static": lambda: StaticCache(None, 16),
    "offloaded": lambda: OffloadedCache(),
    "quantized": lambda: QuantizedCache(nbits=8, q_group_size=2, residual_length=1),
    "sliding_window": lambda: SlidingWindowCache(None, 4),
}


def kv(tokens=2, dtype=torch.float32, device="cpu", batch=1):
    return torch.zeros(batch, 2, tokens, 4, dtype=dtype, device=device), torch.zeros(batch, 2, tokens, 4, dtype=dtype, device=device)


@pytest.mark.parametrize("name", MAKERS)
def test_update_with_another_dtype_or_device_or_batch_raises(name):
    cache = MAKERS[name]()
    cache.update(*kv(), 0)
    with pytest.raises(GenerationInputError, match=r"float64 keys on cpu.*holds torch.float32"):
        cache.update(*kv(dtype=torch.float64), 0)
    with pytest.raises(GenerationInputError, match=r"on meta.*holds torch.float32 on cpu"):
        cache.update(*kv(device="meta"), 0)
    with pytest.raises(GenerationInputError, match="batch_select_indices"):
        cache.update(*kv(batch=3), 0)
    assert cache.get_seq_length() == 2


def test_keys_and_values_must_agree():
    with pytest.raises(GenerationInputError, match="values"):
        DynamicCache().update(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4, dtype=torch.float64), 0)
    with pytest.raises(GenerationInputError, match=r"\[batch, kv_heads, seq, head_dim\]"):
        DynamicCache().update(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), 0)


@pytest.mark.parametrize("name", MAKERS)
def test_cropping_past_zero_raises_and_changes_nothing(name):
    cache = MAKERS[name]()
    cache.update(*kv(3), 0)
    with pytest.raises(ValueError, match=r"crop\(-4\) would remove 4 tokens but the cache holds only 3"):
        cache.crop(-4)
    assert cache.get_seq_length() == 3
    with pytest.raises(ValueError, match="holds only 0"):
        MAKERS[name]().crop(-1)


def test_crop_conventions():
    cache = DynamicCache()
    cache.update(*kv(5), 0)
    cache.crop(0)  # transformers 5: remove nothing
    assert cache.get_seq_length() == 5
    cache.crop(9)  # keep the first 9: a no-op
    assert cache.get_seq_length() == 5
    cache.crop(4)
    assert cache.get_seq_length() == 4 and cache.layers[0].keys.shape[-2] == 4
    cache.crop(-1)
    assert cache.get_seq_length() == 3


def test_sliding_crop_beyond_what_was_kept_raises_and_changes_nothing():
    cache = SlidingWindowCache(None, 4, crop_margin=1)
    cache.update(*kv(10), 0)
    assert cache.layers[0].stored == 4  # window - 1 + margin
    with pytest.raises(ValueError, match="crop_margin"):
        cache.crop(-2)
    assert cache.get_seq_length() == 10 and cache.layers[0].stored == 4
    cache.crop(-1)
    assert cache.get_seq_length() == 9


def test_static_cache_refuses_row_operations_it_cannot_do():
    cache = StaticCache(None, 8)
    with pytest.raises(NotImplementedError, match="'select'"):
        cache.batch_select_indices(torch.tensor([0]))
    with pytest.raises(NotImplementedError, match="'repeat'"):
        cache.batch_repeat_interleave(2)


@pytest.mark.parametrize("options,match", [
    ({"nbits": 3}, "nbits=3"),
    ({"q_group_size": 0}, "q_group_size=0"),
    ({"residual_length": -1}, "residual_length=-1"),
    ({"axis_key": 0}, "axis_key=0"),
])
def test_quantized_options_are_checked(options, match):
    with pytest.raises(GenerationConfigError, match=match):
        QuantizedCache(**options)


def test_quantized_group_must_tile_the_head_dimension():
    cache = QuantizedCache(q_group_size=3, axis_key=-1)
    with pytest.raises(GenerationConfigError, match="does not divide the key head dimension 4"):
        cache.update(*kv(), 0)


def test_sliding_window_needs_a_window():
    with pytest.raises(GenerationConfigError, match="needs a window size"):
        SlidingWindowCache({"num_hidden_layers": 2})
    with pytest.raises(GenerationConfigError, match="layer type 'linear_attention'"):
        DynamicCache({"num_hidden_layers": 1, "layer_types": ["linear_attention"]})


def test_update_past_the_built_layers_raises():
    cache = DynamicCache({"num_hidden_layers": 1})
    with pytest.raises(IndexError, match="built for 1 layers"):
        cache.update(*kv(), 1)
