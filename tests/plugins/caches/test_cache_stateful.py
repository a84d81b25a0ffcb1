"""Any sequence of update / crop / reorder / select / repeat / reset leaves every backend showing the
same keys and values as a plain-tensor reference (the dynamic cache's behaviour, written out).

After each update the test checks, for every layer of every backend, that the returned tensors are
the positions ``get_mask_sizes`` announced, that they cover everything the new queries may see (all
tokens for full layers, the last ``window - 1`` past tokens for sliding ones), and that those
positions hold the reference values -- exactly, or within the quantization bound for the quantized
cache. An operation outside a backend's capabilities must raise; a crop a sliding layer cannot do
exactly must raise; either way that backend then leaves the comparison.
"""

from types import SimpleNamespace

import pytest
import torch
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from genplug.plugins.caches.dynamic import DynamicCache
from genplug.plugins.caches.hybrid import HybridCache
from genplug.plugins.caches.offloaded import OffloadedCache, OffloadedStaticCache
from genplug.plugins.caches.quantized import QuantizedCache
from genplug.plugins.caches.sliding_window import SlidingWindowCache
from genplug.plugins.caches.static import StaticCache

WINDOW, MARGIN, MAX_LEN, HEADS, DIM, MAX_BATCH, LAYERS = 6, 4, 48, 2, 8, 6, 2
MIXED = SimpleNamespace(num_hidden_layers=2, layer_types=["full_attention", "sliding_attention"], sliding_window=WINDOW)
GROWING_KEEP, STATIC_SLOTS = WINDOW - 1 + MARGIN, WINDOW + MARGIN  # tokens a sliding layer holds at most


def backends():
    """name -> (cache, window per layer, tokens a sliding layer holds at most, int bits or None)."""
    return {
        "dynamic": (DynamicCache(), [None, None], None, None),
        "dynamic_mixed": (DynamicCache(MIXED, crop_margin=MARGIN), [None, WINDOW], GROWING_KEEP, None),
        "static": (StaticCache(None, MAX_LEN), [None, None], None, None),
        "hybrid": (HybridCache(MIXED, MAX_LEN, crop_margin=MARGIN), [None, WINDOW], STATIC_SLOTS, None),
        "offloaded": (OffloadedCache(initial_capacity=4), [None, None], None, None),
        "offloaded_mixed": (OffloadedCache(MIXED, initial_capacity=4, crop_margin=MARGIN), [None, WINDOW], GROWING_KEEP, None),
        "offloaded_static": (OffloadedStaticCache(None, MAX_LEN), [None, None], None, None),
        "sliding_window": (SlidingWindowCache(None, WINDOW, crop_margin=MARGIN), [WINDOW, WINDOW], GROWING_KEEP, None),
        "sliding_window_static": (SlidingWindowCache(None, WINDOW, static=True, max_cache_len=MAX_LEN, crop_margin=MARGIN),
                                  [WINDOW, WINDOW], STATIC_SLOTS, None),
        "quantized_int8": (QuantizedCache(nbits=8, q_group_size=4, residual_length=3), [None, None], None, 8),
        "quantized_int4": (QuantizedCache(nbits=4, q_group_size=4, residual_length=2, axis_key=-1, axis_value=-2),
                           [None, None], None, 4),
    }


class CacheMachine(RuleBasedStateMachine):
    @initialize()
    def start(self):
        self.active = backends()
        self.stored = {name: 0 for name in self.active}  # tokens held by the sliding layers of a backend
        self.batch, self.seen = 2, 0
        self.ref_k = [torch.zeros(self.batch, HEADS, 0, DIM) for _ in range(LAYERS)]
        self.ref_v = [torch.zeros(self.batch, HEADS, 0, DIM) for _ in range(LAYERS)]
        self.low, self.high, self.requantized = 0.0, 0.0, 0

    # ------------------------------------------------------------------ checks

    def tolerance(self, bits):
        if bits is None:
            return 0.0
        # per group |x - x'| <= (max - min) / (2**bits - 1) / 2; a crop through a group re-quantizes it once more
        return (self.high - self.low) / ((1 << bits) - 1) / 2 * (1 + self.requantized) + 1e-5

    def check_returned(self, name, layer, query, returned, sizes, reference):
        _, window, _, bits = self.active[name]
        kv_length, kv_offset = sizes
        end = self.seen + query
        needed_from = max(0, self.seen - (window[layer] - 1)) if window[layer] else 0
        assert returned.shape[-2] == kv_length, (name, layer, returned.shape, sizes)
        assert kv_offset <= needed_from and kv_offset + kv_length >= end, (name, layer, sizes, needed_from, end)
        got = returned[:, :, needed_from - kv_offset : end - kv_offset]
        want = reference[:, :, needed_from:end]
        assert (got - want).abs().max().item() <= self.tolerance(bits) if got.numel() else True, name

    def retire(self, name):
        del self.active[name]

    # ------------------------------------------------------------------ rules

    @precondition(lambda self: self.seen + 4 <= MAX_LEN - 8)
    @rule(query=st.integers(1, 4), seed=st.integers(0, 2**16))
    def update(self, query, seed):
        generator = torch.Generator().manual_seed(seed)
        new = [(torch.randn(self.batch, HEADS, query, DIM, generator=generator),
                torch.randn(self.batch, HEADS, query, DIM, generator=generator)) for _ in range(LAYERS)]
        for k, v in new:
            self.low = min(self.low, k.min().item(), v.min().item())
            self.high = max(self.high, k.max().item(), v.max().item())
        for layer, (k, v) in enumerate(new):
            self.ref_k[layer] = torch.cat([self.ref_k[layer], k], dim=-2)
            self.ref_v[layer] = torch.cat([self.ref_v[layer], v], dim=-2)
            for name, (cache, *_rest) in self.active.items():
                sizes = cache.get_mask_sizes(query, layer)
                keys, values = cache.update(k, v, layer)
                self.check_returned(name, layer, query, keys, sizes, self.ref_k[layer])
                self.check_returned(name, layer, query, values, sizes, self.ref_v[layer])
        self.seen += query
        for name, (_, _, holds, _) in self.active.items():
            if holds is not None:
                self.stored[name] = min(self.stored[name] + query, holds)

    @rule(data=st.data(), positive_form=st.booleans())
    def crop(self, data, positive_form):
        remove = data.draw(st.integers(0, self.seen), label="remove")
        target = self.seen - remove
        argument = target if positive_form and target > 0 else -remove
        for name, (cache, _, holds, _) in list(self.active.items()):
            exact = holds is None or self.stored[name] - remove >= min(WINDOW - 1, target)
            if exact:
                cache.crop(argument)
                if holds is not None:
                    self.stored[name] -= remove
            else:
                with pytest.raises(ValueError, match="crop_margin"):
                    cache.crop(argument)
                self.retire(name)
        if remove:
            self.requantized += 1
        self.ref_k = [k[:, :, :target] for k in self.ref_k]
        self.ref_v = [v[:, :, :target] for v in self.ref_v]
        self.seen = target

    @rule(data=st.data())
    def reorder(self, data):
        beam_idx = torch.tensor(data.draw(st.lists(st.integers(0, self.batch - 1), min_size=self.batch, max_size=self.batch)))
        for cache, *_ in self.active.values():
            cache.reorder_cache(beam_idx)
        self.ref_k = [k[beam_idx] for k in self.ref_k]
        self.ref_v = [v[beam_idx] for v in self.ref_v]

    def _row_operation(self, capability, apply, new_batch):
        for name, (cache, *_rest) in list(self.active.items()):
            if capability in cache.capabilities:
                apply(cache)
            else:
                with pytest.raises(NotImplementedError, match=capability):
                    apply(cache)
                self.retire(name)
        self.batch = new_batch

    @rule(data=st.data())
    def select(self, data):
        rows = data.draw(st.lists(st.integers(0, self.batch - 1), min_size=1, max_size=self.batch, unique=True))
        indices = torch.tensor(rows)
        self._row_operation("select", lambda cache: cache.batch_select_indices(indices), len(rows))
        self.ref_k = [k[indices] for k in self.ref_k]
        self.ref_v = [v[indices] for v in self.ref_v]

    @precondition(lambda self: self.batch * 2 <= MAX_BATCH)
    @rule(repeats=st.integers(1, 2))
    def repeat(self, repeats):
        self._row_operation("repeat", lambda cache: cache.batch_repeat_interleave(repeats), self.batch * repeats)
        self.ref_k = [k.repeat_interleave(repeats, dim=0) for k in self.ref_k]
        self.ref_v = [v.repeat_interleave(repeats, dim=0) for v in self.ref_v]

    @rule()
    def reset(self):
        for cache, *_ in self.active.values():
            cache.reset()
        self.stored = {name: 0 for name in self.stored}
        self.seen, self.requantized = 0, 0
        self.ref_k = [k[:, :, :0] for k in self.ref_k]
        self.ref_v = [v[:, :, :0] for v in self.ref_v]

    @invariant()
    def lengths_and_layer_kinds(self):
        for name, (cache, window, *_rest) in getattr(self, "active", {}).items():
            for layer in range(LAYERS):
                length = cache.get_seq_length(layer)
                assert isinstance(length, int) and length == self.seen, (name, layer, length, self.seen)
            if len(cache) == LAYERS:
                assert cache.is_sliding == [w is not None for w in window], name


CacheMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=25, deadline=None)
TestCacheBackendsAgree = CacheMachine.TestCase
