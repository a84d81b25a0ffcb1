"""Caches, padding, early exit and logits_to_keep against a full recompute (no transformers needed)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st

from native_llama_fixtures import GEMMA_SWITCHES, PHI3_SWITCHES, native_model

TOLERANCE = 1e-4
WINDOWED = dict(sliding_window=5, model_type="mistral")
GEMMA2, GEMMA3 = GEMMA_SWITCHES["gemma2"], GEMMA_SWITCHES["gemma3_text"]  # windows of 4 tokens
PHI3, PHI4_MINI = PHI3_SWITCHES["phi3"], PHI3_SWITCHES["phi4_mini"]  # partial rotary; and LongRoPE's long factors


def full_logits(model, input_ids, **kwargs):
    with torch.no_grad():
        return model(input_ids=input_ids, use_cache=False, **kwargs).logits


def tokens(batch, length, seed=0):
    return torch.randint(1, 97, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("overrides", [{}, WINDOWED, {"tie_word_embeddings": True}, GEMMA2, GEMMA3, PHI3, PHI4_MINI],
                         ids=["llama", "window", "tied", "gemma2", "gemma3", "phi3", "phi4_mini"])
@pytest.mark.parametrize("chunks", [(6, 1, 1, 1, 1, 1, 1), (3, 4, 2, 5)], ids=["decode", "chunked"])
def test_incremental_decoding_equals_full_recompute(overrides, chunks):
    model = native_model(**overrides)
    sequence = tokens(2, sum(chunks))
    expected = full_logits(model, sequence)
    cache, start = None, 0
    with torch.no_grad():
        for size in chunks:
            out = model(input_ids=sequence[:, start : start + size], past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            assert out.logits.sub(expected[:, start : start + size]).abs().max() <= TOLERANCE
            start += size
    assert cache.get_seq_length() == sum(chunks)


def test_sliding_window_limits_attention():
    # Each of the 3 layers looks back 4 tokens, so the last token (19) cannot see tokens before 19 - 12.
    model = native_model(**WINDOWED)
    sequence = tokens(1, 20)
    changed = sequence.clone()
    changed[0, 2] = (changed[0, 2] + 1) % 97
    last = full_logits(model, sequence)[:, -1]
    assert full_logits(model, changed)[:, -1].sub(last).abs().max() == 0
    changed[0, 16] = (changed[0, 16] + 1) % 97  # inside the window of the last token
    assert full_logits(model, changed)[:, -1].sub(last).abs().max() > 1e-3


@pytest.mark.parametrize("overrides", [{}, WINDOWED, GEMMA2, GEMMA3, PHI4_MINI],
                         ids=["llama", "window", "gemma2", "gemma3", "phi4_mini"])
def test_left_padded_batch_equals_unpadded_rows(overrides):
    model = native_model(**overrides)
    lengths = [9, 4, 6]
    rows = [tokens(1, n, seed=i)[0] for i, n in enumerate(lengths)]
    longest = max(lengths)
    input_ids = torch.zeros(len(rows), longest, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for i, row in enumerate(rows):
        input_ids[i, longest - len(row) :] = row
        attention_mask[i, longest - len(row) :] = 1
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    next_tokens = tokens(len(rows), 3, seed=9)

    with torch.no_grad():
        out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
        cache, batched = out.past_key_values, [out.logits]
        for step in range(3):  # decode three more tokens, the way generate() extends mask and positions
            attention_mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], dim=-1)
            position_ids = position_ids[:, -1:] + 1
            out = model(input_ids=next_tokens[:, step : step + 1], attention_mask=attention_mask,
                        position_ids=position_ids, past_key_values=cache)
            batched.append(out.logits)
    batched = torch.cat(batched, dim=1)
    for i, row in enumerate(rows):
        expected = full_logits(model, torch.cat([row, next_tokens[i]])[None])
        assert batched[i, longest - len(row) :].sub(expected[0]).abs().max() <= TOLERANCE


def test_logits_to_keep():
    model = native_model()
    sequence = tokens(2, 7)
    expected = full_logits(model, sequence)
    # the head's matmul over fewer rows may take another CPU kernel (float32 rounding, ~1e-7 apart);
    # a wrong position would be off by the logits' own size (~1)
    assert full_logits(model, sequence, logits_to_keep=1).sub(expected[:, -1:]).abs().max() <= 1e-5
    assert full_logits(model, sequence, logits_to_keep=3).sub(expected[:, -3:]).abs().max() <= 1e-5
    picked = torch.tensor([0, 4])
    assert full_logits(model, sequence, logits_to_keep=picked).sub(expected[:, picked]).abs().max() <= 1e-5


def test_exit_layer_equals_a_shallower_model():
    model = native_model()
    shallow = native_model(num_hidden_layers=2)
    shallow.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("model.layers.2.")})
    sequence = tokens(2, 6)
    assert full_logits(model, sequence, exit_layer=2).sub(full_logits(shallow, sequence)).abs().max() == 0
    assert full_logits(model, sequence, exit_layer=3).sub(full_logits(model, sequence)).abs().max() == 0
    with torch.no_grad():
        out = model(input_ids=sequence, exit_layer=1, output_hidden_states=True)
    assert len(out.hidden_states) == 2 and out.past_key_values.get_seq_length() == 6
    for bad in (0, 4):
        with pytest.raises(ValueError, match="exit_layer"):
            model(input_ids=sequence, exit_layer=bad)


def test_inputs_embeds_and_tuple_output():
    model = native_model()
    sequence = tokens(1, 5)
    expected = full_logits(model, sequence)
    with torch.no_grad():
        embeds = model.get_input_embeddings()(sequence)
        assert model(inputs_embeds=embeds, use_cache=False).logits.sub(expected).abs().max() == 0
        logits, cache = model(input_ids=sequence, return_dict=False)
    assert logits.sub(expected).abs().max() == 0 and cache.get_seq_length() == 5
    with pytest.raises(ValueError, match="exactly one"):
        model(input_ids=sequence, inputs_embeds=embeds)


def test_registered_cache_backends_drive_the_model():
    """Each cache backend installed in genplug decodes like a full recompute (sliding window included)."""
    from genplug.cache import CacheRequest, build_cache
    from genplug.plugin_manager import new_plugin_manager

    registry = new_plugin_manager(autoload=False).registries.cache_backends
    if "dynamic" not in registry:
        pytest.skip("no cache backend plugin installed")
    model = native_model(**WINDOWED)
    sequence = tokens(2, 10)
    expected = full_logits(model, sequence)
    names = [n for n in ("dynamic", "static", "sliding_window") if n in registry]
    assert names == ["dynamic", "static", "sliding_window"], sorted(registry)
    for name in names:
        request = CacheRequest(model_config=model.config, batch_size=2, max_cache_len=16,
                               dtype=torch.float32, device=torch.device("cpu"))
        cache = build_cache(registry, name, request)
        with torch.no_grad():
            logits = [model(input_ids=sequence[:, :4], past_key_values=cache).logits]
            for i in range(4, 10):
                logits.append(model(input_ids=sequence[:, i : i + 1], past_key_values=cache).logits)
        assert torch.cat(logits, 1).sub(expected).abs().max() <= TOLERANCE, name


def test_model_makes_its_own_cache():
    model = native_model()
    with torch.no_grad():
        out = model(input_ids=tokens(1, 3))
    assert out.past_key_values is not None and out.past_key_values.get_seq_length() == 3
    assert model(input_ids=tokens(1, 3), use_cache=False).past_key_values is None


def test_model_protocol_attributes():
    model = native_model()
    config = model.config
    assert model.main_input_name == "input_ids" and model.generation_config is None
    assert model.device == torch.device("cpu") and model.dtype == torch.float32
    assert config.get_text_config(decoder=True) is config and config.is_encoder_decoder is False
    for name in ("vocab_size", "num_hidden_layers", "num_key_value_heads", "head_dim", "hidden_size",
                 "num_attention_heads", "sliding_window", "layer_types", "max_position_embeddings"):
        assert hasattr(config, name)
    model.to(torch.bfloat16)
    assert model.dtype == torch.bfloat16 and model.model.rotary_emb.inv_freq.dtype == torch.float32


def test_fallback_cache_when_no_backend_is_installed():
    from genplug.plugin_manager import GenplugPluginManager, use_plugin_manager
    from genplug.plugins.models.llama.fallback_cache import FallbackDynamicCache

    model = native_model(**WINDOWED)
    sequence = tokens(2, 9)
    expected = full_logits(model, sequence)
    with use_plugin_manager(GenplugPluginManager()), torch.no_grad():  # a manager with no plugins at all
        out = model(input_ids=sequence[:, :5])
        cache = out.past_key_values
        assert isinstance(cache, FallbackDynamicCache)
        logits = [out.logits] + [model(input_ids=sequence[:, i : i + 1], past_key_values=cache).logits
                                 for i in range(5, 9)]
        assert torch.cat(logits, 1).sub(expected).abs().max() <= TOLERANCE
        cache.crop(-2)  # drop the last two tokens and decode them again
        again = model(input_ids=sequence[:, 7:], past_key_values=cache).logits
        assert again.sub(expected[:, 7:]).abs().max() <= TOLERANCE
        cache.crop(8)
        cache.reorder_cache(torch.tensor([1, 0]))  # rows swap places, as beam search reorders them
        swapped = model(input_ids=sequence[[1, 0], 8:], past_key_values=cache).logits
    assert swapped.sub(expected[[1, 0], 8:]).abs().max() <= TOLERANCE and cache.get_seq_length() == 9


@pytest.mark.parametrize("overrides", [GEMMA_SWITCHES["gemma"], GEMMA2, GEMMA3, PHI3, PHI4_MINI],
                         ids=[*GEMMA_SWITCHES, *PHI3_SWITCHES])
def test_static_decode_step_equals_full_recompute(overrides):
    """The CUDA-graph step (run eagerly) of Gemma models: embedding scale, four norms, soft-caps and both RoPEs,
    with sliding layers whose buffers span the static cache (crop_margin) but whose window (4) the sequence
    outgrows, so the step's own window mask is what keeps it exact. Phi-3's: half or three quarters of each
    head rotated, LongRoPE's long factors and scaled cos/sin chosen on the device."""
    import genplug
    from genplug.plugins.models.llama import graph_step

    model = native_model(**overrides)
    sequence = tokens(2, 13)
    expected = full_logits(model, sequence)
    cache = genplug.StaticCache(config=model.config, max_cache_len=16, crop_margin=16)
    with torch.no_grad():
        model(input_ids=sequence[:, :5], past_key_values=cache)
        assert model.supports_static_decode(cache)  # (float32 on the CPU: the PyTorch step, kernels or not)
        valid = torch.zeros(2, 16, dtype=torch.bool)
        valid[:, :5] = True
        for i in range(5, 13):
            valid[:, i] = True
            step = graph_step.static_decode_step(model, sequence[:, i : i + 1], torch.full((2, 1), i), torch.tensor(i),
                                                 valid, cache.layers)
            assert step.sub(expected[:, i]).abs().max() <= TOLERANCE, i


def test_static_decode_takes_sliding_layers_only_where_nothing_is_evicted():
    import genplug

    model = native_model(**GEMMA2)
    for margin, expected in ((0, False), (16, True)):  # window 4: a 4-slot sliding buffer shifts, a 16-slot one never
        cache = genplug.StaticCache(config=model.config, max_cache_len=16, crop_margin=margin)
        with torch.no_grad():
            model(input_ids=tokens(1, 3), past_key_values=cache)
        assert model.supports_static_decode(cache) is expected
    every_layer_slides = native_model(**WINDOWED)  # no full layer says how long the cache is
    cache = genplug.StaticCache(config=every_layer_slides.config, max_cache_len=16, crop_margin=16)
    with torch.no_grad():
        every_layer_slides(input_ids=tokens(1, 3), past_key_values=cache)
    assert not every_layer_slides.supports_static_decode(cache)


@pytest.mark.parametrize("partial", [0.5, 0.75, 1.0])
def test_partial_rotary_turns_the_leading_dimensions_of_each_head_only(partial):
    """RoPE rotates the first ``int(head_dim * partial_rotary_factor)`` dimensions (rotate-half within them:
    dimension i pairs with i + rotary_dim / 2); the rest of each head reaches attention unrotated."""
    from genplug.plugins.models.llama.rope import RotaryEmbedding, apply_rotary

    rope = {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": partial}
    rotary = RotaryEmbedding(rope, head_dim=8, max_position_embeddings=64)
    x = torch.randn(1, 5, 2, 8, generator=torch.Generator().manual_seed(0))
    cos, sin = rotary(torch.arange(5)[None], torch.float32)
    turned = int(8 * partial)
    assert cos.shape[-1] == turned
    rotated = apply_rotary(x, cos, sin)
    assert torch.equal(rotated[..., turned:], x[..., turned:])
    half = turned // 2
    angles = torch.arange(5)[:, None].float() * (1.0 / 10000.0 ** (torch.arange(0, turned, 2).float() / turned))
    first, second = x[..., :half], x[..., half:turned]
    c, s = angles.cos()[None, :, None], angles.sin()[None, :, None]
    assert rotated[..., :half].sub(first * c - second * s).abs().max() <= 1e-6
    assert rotated[..., half:turned].sub(second * c + first * s).abs().max() <= 1e-6


def test_longrope_switches_to_the_long_factors_past_the_original_context():
    """One choice per forward, by its furthest position (transformers' rule): up to position original - 1 the
    short factors, beyond it the long ones; cos/sin scaled by sqrt(1 + ln(64 / 16) / ln 16) either way."""
    import math

    from genplug.plugins.models.llama.rope import RotaryEmbedding
    from native_llama_fixtures import longrope

    rope = longrope(1.0, original_max_position_embeddings=16)
    rotary = RotaryEmbedding(rope, head_dim=8, max_position_embeddings=64)
    scale = math.sqrt(1 + math.log(64 / 16) / math.log(16))
    base = 1.0 / 10000.0 ** (torch.arange(0, 8, 2).float() / 8)
    for last, factors in ((15, "short_factor"), (16, "long_factor")):
        positions = torch.tensor([[3, last]])
        cos, _ = rotary(positions, torch.float32)
        expected = (positions[..., None].float() * base / torch.tensor(rope[factors])).cos() * scale
        assert cos[0, :, 0, :4].sub(expected[0]).abs().max() <= 1e-6, factors


@settings(max_examples=20, deadline=None)
@given(rope_type=st.sampled_from(["default", "linear", "llama3"]), length=st.integers(1, 300),
       dtype=st.sampled_from([torch.float32, torch.bfloat16]), data=st.data())
def test_rope_table_rows_hold_the_bits_of_each_position(rope_type, length, dtype, data):
    """Row p of ``RotaryEmbedding.table`` is what ``forward`` gives for position p alone (the decode
    kernels read it instead of computing cos/sin); it has at least ``length`` rows, grows by powers of
    two, and a table it replaces stays alive (a captured graph still reads it)."""
    from genplug.plugins.models.llama.rope import RotaryEmbedding

    rope = {"rope_type": rope_type, "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    rotary = RotaryEmbedding(rope, head_dim=16, max_position_embeddings=256)
    cos, sin = rotary.table(length, dtype, "cpu")
    assert cos.shape == sin.shape and cos.shape[1] == 16 and length <= cos.shape[0] < 2 * max(length, 1) + 1
    assert cos.shape[0] & (cos.shape[0] - 1) == 0
    for p in data.draw(st.lists(st.integers(0, length - 1), min_size=1, max_size=5), label="positions"):
        one_cos, one_sin = rotary(torch.tensor([[p]]), dtype)
        assert torch.equal(cos[p], one_cos.view(-1)) and torch.equal(sin[p], one_sin.view(-1))
    assert rotary.table(length, dtype, "cpu")[0] is cos  # long enough: the same tensors
    grown, _ = rotary.table(cos.shape[0] + 1, dtype, "cpu")
    assert grown.shape[0] == 2 * cos.shape[0] and torch.equal(grown[: cos.shape[0]], cos)
    assert any(old[0] is cos for old in rotary.retired_tables)


def test_rope_table_is_refused_where_angles_depend_on_the_forward():
    from genplug.plugins.models.llama.rope import RotaryEmbedding
    from native_llama_fixtures import longrope

    dynamic = RotaryEmbedding({"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0}, 8, 64)
    for rotary in (dynamic, RotaryEmbedding(longrope(1.0, original_max_position_embeddings=16), 8, 64)):
        assert not rotary.tabulates()
        with pytest.raises(ValueError, match="no table"):
            rotary.table(4, torch.float32, "cpu")
