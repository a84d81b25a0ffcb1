"""Greedy decoding through every backend equals transformers' own cache and a no-cache recompute.

The oracles are transformers (its ``DynamicCache`` on the same model) and recomputing the whole
sequence at every step; each backend is driven by a manual loop (prefill, then one token per step
with ``past_key_values=<cache>``), exactly as genplug's loop drives a model.
"""

import pytest
import torch

from .tiny_models import (build, greedy_with_cache, recompute_logits, tiny_llama, tiny_mistral, tiny_qwen2,
                          transformers)

pytestmark = pytest.mark.parity

PROMPT_LEN, STEPS = 7, 24
ALL_BACKENDS = ["dynamic", "static", "offloaded", "offloaded_static", "sliding_window", "sliding_window_static", "hybrid"]


@pytest.fixture(scope="module")
def llama_reference():
    model = tiny_llama()
    prompt = torch.randint(0, 128, (2, PROMPT_LEN), generator=torch.Generator().manual_seed(0))
    ids, logits = greedy_with_cache(model, prompt, transformers.DynamicCache(config=model.config), STEPS)
    return model, prompt, ids, logits


def test_transformers_cache_equals_recompute(llama_reference):
    model, _, ids, logits = llama_reference
    torch.testing.assert_close(logits, recompute_logits(model, ids, PROMPT_LEN), atol=1e-5, rtol=0)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_llama_greedy_identical_across_backends(llama_reference, backend):
    model, prompt, ref_ids, ref_logits = llama_reference
    # sliding backends get a window longer than the sequence, so they must change nothing
    cache_config = {"sliding_window": 64} if backend.startswith("sliding") else {}
    cache = build(backend, model.config, max_cache_len=PROMPT_LEN + STEPS, cache_config=cache_config)
    ids, logits = greedy_with_cache(model, prompt, cache, STEPS)
    assert torch.equal(ids, ref_ids)
    torch.testing.assert_close(logits, ref_logits, atol=1e-5, rtol=0)
    assert cache.get_seq_length() == PROMPT_LEN + STEPS
    assert isinstance(cache.get_seq_length(), int)


@pytest.mark.parametrize("backend", ALL_BACKENDS + ["quantized"])
def test_mistral_small_window_matches_transformers_and_windowed_recompute(backend):
    """Window 4 < sequence: sliding layers drop tokens yet logits match transformers' cache and the
    recompute, whose full-sequence forward applies Mistral's windowed mask."""
    model = tiny_mistral(window=4)
    prompt = torch.randint(0, 128, (2, PROMPT_LEN), generator=torch.Generator().manual_seed(1))
    ref_ids, ref_logits = greedy_with_cache(model, prompt, transformers.DynamicCache(config=model.config), STEPS)
    torch.testing.assert_close(ref_logits, recompute_logits(model, ref_ids, PROMPT_LEN), atol=1e-5, rtol=0)
    cache = build(backend, model.config, max_cache_len=PROMPT_LEN + STEPS)
    ids, logits = greedy_with_cache(model, prompt, cache, STEPS)
    assert torch.equal(ids, ref_ids)
    torch.testing.assert_close(logits, ref_logits, atol=1e-5, rtol=0)
    assert cache.get_seq_length() == PROMPT_LEN + STEPS  # counts every token, not the stored window
    assert all(cache.is_sliding)


@pytest.mark.parametrize("backend", ["dynamic", "static", "hybrid", "offloaded", "offloaded_static"])
def test_hybrid_layer_types_follow_the_config(backend):
    """Qwen2 with layer_types [full, sliding]: each layer stores what its attention needs."""
    model = tiny_qwen2(["full_attention", "sliding_attention"], window=4)
    prompt = torch.randint(0, 128, (1, PROMPT_LEN), generator=torch.Generator().manual_seed(2))
    ref_ids, ref_logits = greedy_with_cache(model, prompt, transformers.DynamicCache(config=model.config), STEPS)
    cache = build(backend, model.config, batch=1, max_cache_len=PROMPT_LEN + STEPS)
    assert cache.is_sliding == [False, True]
    ids, logits = greedy_with_cache(model, prompt, cache, STEPS)
    assert torch.equal(ids, ref_ids)
    torch.testing.assert_close(logits, ref_logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(logits, recompute_logits(model, ids, PROMPT_LEN), atol=1e-5, rtol=0)


def test_sliding_window_backend_makes_a_full_model_windowed():
    """On a full-attention model the sliding_window backend limits what each new token sees: the
    result is no longer the model's, but it is exactly a model whose mask has that window (for a
    prompt no longer than the window: the prompt itself runs with the model's own full mask)."""
    model = tiny_llama()
    prompt = torch.randint(0, 128, (1, 4), generator=torch.Generator().manual_seed(3))
    ids, logits = greedy_with_cache(model, prompt, build("sliding_window", model.config, cache_config={"sliding_window": 5}), 12)
    windowed = tiny_mistral(window=5)
    windowed.load_state_dict(model.state_dict())  # same weights, windowed mask
    torch.testing.assert_close(logits, recompute_logits(windowed, ids, 4), atol=1e-5, rtol=0)
    unwindowed = recompute_logits(model, ids, 4)
    assert (logits - unwindowed).abs().max() > 1e-3  # the window did change the output


def test_first_layer_sliding_needs_the_transformers_view():
    """transformers sizes the full-attention mask from layer 0 unless the cache *is* a transformers
    Cache; with a sliding first layer and padded static buffers that fails. to_transformers fixes it."""
    from genplug.plugins.caches.transformers_bridge import from_transformers, to_transformers

    model = tiny_qwen2(["sliding_attention", "full_attention"], window=4)
    prompt = torch.randint(0, 128, (1, PROMPT_LEN), generator=torch.Generator().manual_seed(4))
    ref_ids, ref_logits = greedy_with_cache(model, prompt, transformers.DynamicCache(config=model.config), STEPS)
    cache = build("static", model.config, batch=1, max_cache_len=PROMPT_LEN + STEPS)
    view = to_transformers(cache)  # (passed as it is, transformers 5.23 fails with a mask size mismatch)
    assert isinstance(view, transformers.Cache) and from_transformers(view) is cache
    ids, logits = greedy_with_cache(model, prompt, view, STEPS)
    assert torch.equal(ids, ref_ids)
    torch.testing.assert_close(logits, ref_logits, atol=1e-5, rtol=0)


def test_genplug_cache_works_inside_transformers_generate():
    """transformers' own generate() accepts a genplug cache (duck typing) and returns the same tokens."""
    model = tiny_llama()
    prompt = torch.randint(0, 128, (1, PROMPT_LEN), generator=torch.Generator().manual_seed(5))
    expected = model.generate(prompt, max_new_tokens=10, do_sample=False)
    for backend in ("dynamic", "static"):
        cache = build(backend, model.config, batch=1, max_cache_len=PROMPT_LEN + 10)
        assert torch.equal(model.generate(prompt, max_new_tokens=10, do_sample=False, past_key_values=cache), expected)


# ------------------------------------------------------------------------------ encoder-decoder


def tiny_bart():
    config = transformers.BartConfig(vocab_size=128, d_model=32, encoder_layers=2, decoder_layers=2,
                                     encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                                     decoder_ffn_dim=64, max_position_embeddings=64)
    torch.manual_seed(0)
    return transformers.BartForConditionalGeneration(config).eval()


def tiny_t5():
    config = transformers.T5Config(vocab_size=128, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                   decoder_start_token_id=0)
    torch.manual_seed(0)
    return transformers.T5ForConditionalGeneration(config).eval()


@torch.no_grad()
def decode_encoder_decoder(model, encoder_outputs, cache, steps=10):
    ids = torch.zeros(encoder_outputs.last_hidden_state.shape[0], 1, dtype=torch.long)
    token, all_logits = ids, []
    for _ in range(steps):
        logits = model(encoder_outputs=encoder_outputs, decoder_input_ids=token, past_key_values=cache,
                       use_cache=True).logits[:, -1]
        all_logits.append(logits)
        token = logits.argmax(-1, keepdim=True)
        ids = torch.cat([ids, token], dim=1)
    return ids, torch.stack(all_logits, dim=1)


@pytest.mark.parametrize("make_model", [tiny_bart, tiny_t5], ids=["bart", "t5"])
@pytest.mark.parametrize("backend", ["dynamic", "static", "offloaded"])
def test_encoder_decoder_cache_through_the_transformers_view(make_model, backend):
    model = make_model()
    encoder_ids = torch.randint(3, 128, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        encoder_outputs = model.get_encoder()(input_ids=encoder_ids)
    reference = transformers.EncoderDecoderCache(transformers.DynamicCache(), transformers.DynamicCache())
    ref_ids, ref_logits = decode_encoder_decoder(model, encoder_outputs, reference)

    cache = build(backend, model.config, max_cache_len=12, is_encoder_decoder=True, encoder_length=9)
    assert type(cache).__name__ == "EncoderDecoderCache"
    # A duck-typed cache is not enough: the models test isinstance(..., transformers.EncoderDecoderCache).
    with pytest.raises(TypeError, match="to_transformers"):
        decode_encoder_decoder(model, encoder_outputs, cache)
    cache.reset()
    ids, logits = decode_encoder_decoder(model, encoder_outputs, cache.to_transformers())
    assert torch.equal(ids, ref_ids)
    torch.testing.assert_close(logits, ref_logits, atol=1e-5, rtol=0)
    assert cache.is_updated == {0: True, 1: True}
    assert cache.get_seq_length() == 10
    assert cache.cross_attention_cache.get_seq_length() == 9
    assert cache.cross_attention_cache.layers[0].keys.shape[-2] == 9
