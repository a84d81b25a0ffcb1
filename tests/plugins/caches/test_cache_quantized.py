"""The quantized cache: the reconstruction bound, the memory it saves, and greedy agreement with dynamic."""

import pytest
import torch
from hypothesis import given, settings, strategies as st

from genplug.plugins.caches.quantized import PER_CHANNEL, PER_TOKEN, QuantizedCache, dequantize, quantize

UNIT_ROUNDOFF = {torch.float32: 2.0**-24, torch.bfloat16: 2.0**-8}


def groups(x, group, axis):
    """The test's own grouping: one row per quantization group (independent of the code under test)."""
    b, h, t, d = x.shape
    if axis == PER_TOKEN:
        g = min(group, d)
        return x.reshape(b, h, t, d // g, g).reshape(-1, g)
    return x.reshape(b, h, t // group, group, d).transpose(3, 4).reshape(-1, group)


@settings(max_examples=150, deadline=None)
@given(
    nbits=st.sampled_from([4, 8]),
    axis=st.sampled_from([PER_TOKEN, PER_CHANNEL]),
    group=st.sampled_from([2, 4, 8, 16]),
    batch=st.integers(1, 2),
    heads=st.integers(1, 3),
    groups_along=st.integers(1, 3),
    half_dim=st.integers(1, 8),
    dtype=st.sampled_from([torch.float32, torch.bfloat16]),
    scale=st.floats(1e-3, 1e3),
    offset=st.floats(-100, 100),
    constant=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_reconstruction_error_is_bounded_per_group(nbits, axis, group, batch, heads, groups_along, half_dim, dtype,
                                                   scale, offset, constant, seed):
    """Per group: |x - dq(q(x))| <= (max - min) / (2**nbits - 1) / 2 + eps, with
    eps = 4 * u * max(|min|, |max|) for the storage dtype's unit roundoff u (scale and zero point are
    stored in that dtype, and the result is rounded to it)."""
    dim = 2 * half_dim
    if axis == PER_TOKEN:
        if dim > group:
            dim -= dim % group  # per-token groups must tile the head dimension
        tokens = groups_along
    else:
        tokens = group * groups_along
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, heads, tokens, dim, generator=generator) * scale + offset
    if constant:
        x = torch.full_like(x, offset)
    x = x.to(dtype)
    q = quantize(x, nbits, group, axis)
    restored = dequantize(q, dtype)
    assert restored.shape == x.shape and restored.dtype == dtype
    original, error = groups(x.float(), group, axis), groups((restored.float() - x.float()).abs(), group, axis)
    low, high = original.min(dim=1).values, original.max(dim=1).values
    eps = 4 * UNIT_ROUNDOFF[dtype] * torch.maximum(low.abs(), high.abs())
    bound = (high - low) / ((1 << nbits) - 1) / 2 + eps
    assert (error.max(dim=1).values <= bound).all()
    if constant:
        assert torch.equal(restored, x)


def test_int4_packs_two_codes_per_byte_and_counts_its_scales():
    x = torch.randn(1, 8, 128, 64, dtype=torch.bfloat16)
    for nbits, code_bytes in ((8, 128 * 64 * 8), (4, 128 * 64 * 8 // 2)):
        q = quantize(x, nbits, 64, PER_CHANNEL)
        assert q.codes.dtype == torch.uint8 and q.codes.numel() == code_bytes
        assert q.scale.dtype == torch.bfloat16 and q.scale.numel() == q.zero.numel() == 8 * (128 // 64) * 64


def test_memory_int4_is_under_30_percent_of_dynamic():
    """Marginal bytes per token (scales and zero points included, the fixed residual excluded)."""
    from genplug.plugins.caches.dynamic import DynamicCache

    def bytes_after(cache, tokens):
        cache.reset()
        for _ in range(tokens // 64):
            cache.update(torch.randn(1, 8, 64, 64, dtype=torch.bfloat16), torch.randn(1, 8, 64, 64, dtype=torch.bfloat16), 0)
        return sum(cache.storage_nbytes().values())

    def per_token(cache):
        return (bytes_after(cache, 1024) - bytes_after(cache, 512)) / 512

    dynamic = per_token(DynamicCache())
    assert dynamic == 2 * 8 * 64 * 2
    assert per_token(QuantizedCache(nbits=4)) <= 0.30 * dynamic
    assert per_token(QuantizedCache(nbits=8)) <= 0.55 * dynamic


def test_flushes_keep_the_residual_between_its_bounds_and_crop_undoes_them():
    cache = QuantizedCache(nbits=8, q_group_size=4, residual_length=5)
    history = []
    for step in range(23):
        k = torch.randn(1, 1, 1 + step % 3, 8)
        history.append(k)
        keys, _ = cache.update(k, k, 0)
        layer = cache.layers[0]
        assert 5 <= layer.k.residual.shape[-2] <= 5 + 4 - 1 or layer.k.quantized_tokens == 0
        assert layer.k.quantized_tokens % 4 == 0
    full = torch.cat(history, dim=-2)
    cache.crop(-10)
    keys, _ = cache.update(torch.zeros(1, 1, 1, 8), torch.zeros(1, 1, 1, 8), 0)
    assert keys.shape[-2] == full.shape[-2] - 10 + 1
    assert (keys[:, :, :-1] - full[:, :, :-10]).abs().max() < (full.max() - full.min()) / 255 + 1e-5


@pytest.mark.parametrize("nbits,minimum", [(8, 0.99), (4, 0.90)])
def test_greedy_agreement_with_dynamic(nbits, minimum):
    """Next-token agreement over 128 greedy tokens, feeding the dynamic cache's tokens to both (so
    one early disagreement does not decide the rest). Uses tiny_models.agreement_model(), which
    GENPLUG_CACHE_TEST_MODEL can point at a real local checkpoint."""
    from .tiny_models import agreement_model, build, greedy_with_cache, teacher_forced_logits

    model = agreement_model()
    prompt = torch.randint(0, model.config.vocab_size, (1, 32), generator=torch.Generator().manual_seed(0))
    ids, reference = greedy_with_cache(model, prompt, build("dynamic", model.config, batch=1), 128)
    cache = build("quantized", model.config, batch=1, max_cache_len=160,
                  cache_config={"nbits": nbits, "q_group_size": 16, "residual_length": 16})
    logits = teacher_forced_logits(model, ids, 32, cache)
    agreement = (logits.argmax(-1) == reference.argmax(-1)).float().mean().item()
    assert agreement >= minimum, agreement
    assert cache.layers[0].k.quantized_tokens >= 128  # most of the sequence really was quantized
