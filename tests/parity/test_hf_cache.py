"""Caches with transformers models: every genplug backend, transformers' own caches passed by the
caller, and no cache at all give transformers' tokens and scores.

The models cover full attention (Llama), all-sliding attention with a window shorter than the
generation (Mistral) and hybrid layers whose first one slides (Gemma 2). An EOS that stops rows early
makes genplug's loop run a few steps past the stop and crop them, so cropping is exercised too.
"""

import pytest
import transformers

import genplug
from genplug.plugin_manager import get_plugin_manager
from parity_tools import assert_same, left_padded, run_both, tiny_model, token_generated_at

SCORES = dict(return_dict_in_generate=True, output_scores=True)

# backends that keep every token of full-attention layers: exact for any model
EXACT_BACKENDS = ("dynamic", "static", "offloaded", "offloaded_static", "quantized", "hybrid")
# backends that make every layer slide: exact only for models whose layers all slide
ALL_SLIDING_BACKENDS = ("sliding_window", "sliding_window_static")


def _inputs(name):
    model = tiny_model(name)
    ids, mask = left_padded(batch=3, length=6, pads=(2, 0, 1))
    # every row stops within 5 steps, so genplug's loop runs past the last stop and crops the cache
    eos = [token_generated_at(model, ids, step=step, row=row, attention_mask=mask) for row, step in ((0, 2), (1, 4), (2, 3))]
    return model, dict(input_ids=ids, attention_mask=mask, max_new_tokens=12, do_sample=False, eos_token_id=eos,
                       pad_token_id=0)


def test_the_cases_stop_every_row_early():
    model, kwargs = _inputs("llama")
    out = model.generate(**kwargs)
    assert out.shape[1] < kwargs["input_ids"].shape[1] + kwargs["max_new_tokens"]


def test_every_registered_backend_is_covered():
    known = set(get_plugin_manager().registries.cache_backends)
    assert set(EXACT_BACKENDS) | set(ALL_SLIDING_BACKENDS) >= known, (
        f"cache backends without a parity case: {sorted(known - set(EXACT_BACKENDS) - set(ALL_SLIDING_BACKENDS))}"
    )


@pytest.mark.parametrize("backend", EXACT_BACKENDS)
@pytest.mark.parametrize("name", ["llama", "mistral", "gemma2"])
def test_genplug_backends_match_transformers_default_cache(name, backend):
    if backend not in get_plugin_manager().registries.cache_backends:
        pytest.skip(f"cache backend {backend!r} is not installed")
    model, kwargs = _inputs(name)
    reference = model.generate(**kwargs, **SCORES)
    ours = genplug.generate(model, cache_implementation=backend, **kwargs, **SCORES)
    assert_same(ours, reference)


@pytest.mark.parametrize("backend", ALL_SLIDING_BACKENDS)
def test_sliding_backends_on_an_all_sliding_model(backend):
    model, kwargs = _inputs("mistral")
    reference = model.generate(**kwargs, **SCORES)
    ours = genplug.generate(model, cache_implementation=backend, **kwargs, **SCORES)
    assert_same(ours, reference)


@pytest.mark.parametrize("name", ["llama", "mistral", "gemma2"])
def test_static_cache_on_both_sides(name):
    model, kwargs = _inputs(name)
    ours, theirs = run_both(model, cache_implementation="static", **kwargs, **SCORES)
    assert_same(ours, theirs)


@pytest.mark.parametrize("name", ["llama", "mistral", "gemma2"])
@pytest.mark.parametrize("cache", ["DynamicCache", "StaticCache", "DynamicCache(config)"])
def test_a_transformers_cache_passed_by_the_caller(name, cache):
    model, kwargs = _inputs(name)

    def fresh():
        if cache == "DynamicCache":
            return {"past_key_values": transformers.DynamicCache()}
        if cache == "DynamicCache(config)":  # sliding layers keep only their window: they cannot crop
            return {"past_key_values": transformers.DynamicCache(config=model.config)}
        return {"past_key_values": transformers.StaticCache(config=model.config, max_cache_len=24)}

    ours, theirs = run_both(model, fresh=fresh, **kwargs, **SCORES)
    assert_same(ours, theirs)
    assert type(ours.past_key_values) is type(theirs.past_key_values)
    assert ours.past_key_values.get_seq_length() == theirs.past_key_values.get_seq_length()


def test_the_callers_cache_is_filled_in_place_and_returned():
    model, kwargs = _inputs("llama")
    cache = transformers.DynamicCache()
    out = genplug.generate(model, past_key_values=cache, **kwargs, **SCORES)
    assert out.past_key_values is cache
    assert cache.get_seq_length() == out.sequences.shape[1] - 1


def test_a_genplug_cache_passed_by_the_caller():
    from genplug.plugins.caches.dynamic import DynamicCache

    for name in ("llama", "mistral", "gemma2"):
        model, kwargs = _inputs(name)
        reference = model.generate(**kwargs, **SCORES)
        cache = DynamicCache(model.config)
        ours = genplug.generate(model, past_key_values=cache, **kwargs, **SCORES)
        assert_same(ours, reference)
        assert ours.past_key_values is cache


@pytest.mark.parametrize("name", ["llama", "gemma2", "gpt2"])
def test_without_a_cache(name):
    model, kwargs = _inputs(name)
    ours, theirs = run_both(model, use_cache=False, **kwargs, **SCORES)
    assert_same(ours, theirs)
    assert ours.past_key_values is None


def test_sampling_through_a_static_cache():
    model, kwargs = _inputs("gemma2")
    kwargs.update(do_sample=True, top_k=0)
    for seed in (0, 1):
        ours, theirs = run_both(model, seed=seed, cache_implementation="static", **kwargs, **SCORES)
        assert_same(ours, theirs)
