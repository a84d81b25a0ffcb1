"""The transformers model adapter: what it claims, the defaults and keywords it gives the core, the
caches it hands over, and GenerationMixin mixed into a transformers class."""

import subprocess
import sys
import textwrap

import pytest

transformers = pytest.importorskip("transformers")

import torch  # noqa: E402

import genplug  # noqa: E402
from genplug.errors import GenerationInputError  # noqa: E402
from genplug.plugin_manager import get_plugin_manager  # noqa: E402
from genplug.plugins.transformers.adapter import TransformersAdapter, is_transformers_lm  # noqa: E402
from helpers.transformers_version import transformers_at_least  # noqa: E402

transformers.logging.set_verbosity_error()

LLAMA = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             vocab_size=128)


@pytest.fixture(scope="module")
def llama():
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**LLAMA)).eval()


@pytest.fixture(scope="module")
def t5():
    torch.manual_seed(0)
    config = transformers.T5Config(vocab_size=128, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                   decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    return transformers.T5ForConditionalGeneration(config).eval()


def _adapt(model):
    return get_plugin_manager().hook.genplug_adapt_model(model=model)


# ------------------------------------------------------------------------------------------ claiming


def test_claims_language_models_and_nothing_else(llama, t5):
    assert isinstance(_adapt(llama), TransformersAdapter)
    assert isinstance(_adapt(t5), TransformersAdapter)
    assert not is_transformers_lm(transformers.LlamaModel(transformers.LlamaConfig(**LLAMA)))  # no LM head
    assert not is_transformers_lm(torch.nn.Linear(2, 2))
    assert type(_adapt(torch.nn.Linear(2, 2))) is genplug.models.ModelAdapter  # the generic fallback


def test_is_listed_as_a_plugin_with_its_adapter_and_loader():
    registries = get_plugin_manager().registries
    assert "transformers" in registries.model_adapters
    entry = registries.model_loaders["transformers"]
    assert entry.options["priority"] == -10


def test_plugin_modules_do_not_import_transformers():
    code = textwrap.dedent("""
        import sys, tempfile, torch
        from genplug.plugin_manager import get_plugin_manager
        from genplug.plugins.transformers import adapter, loader
        pm = get_plugin_manager()
        pm.registries
        assert pm.hook.genplug_adapt_model(model=torch.nn.Linear(2, 2)) is not None
        loader.TransformersLoader.claims(tempfile.mkdtemp())
        assert "transformers" not in sys.modules, "the transformers plugin imported transformers"
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# -------------------------------------------------------------------------------------- model facts


def test_the_models_generation_config_becomes_genplugs(t5):
    adapter = _adapt(t5)
    assert isinstance(adapter.generation_config, genplug.GenerationConfig)
    theirs = t5.generation_config.to_diff_dict()
    ours = adapter.generation_config.to_diff_dict()
    for key in ("decoder_start_token_id", "pad_token_id", "eos_token_id", "use_cache"):
        assert ours[key] == theirs[key]
    assert adapter.is_encoder_decoder and adapter.vocab_size == 128


def test_a_change_to_the_models_generation_config_shows_in_the_next_call():
    """The conversion is kept between calls (it costs ~0.1 ms each) but follows the transformers config:
    a field set, a list changed in place, a config replaced; and a kept conversion is never handed out
    itself (a caller changing its copy changes nothing else)."""
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**LLAMA)).eval()
    ids = torch.tensor([[5, 9, 17]])
    model.generation_config.max_new_tokens = 3
    assert genplug.generate(model, ids, eos_token_id=None).shape[1] == 6
    model.generation_config.max_new_tokens = 5
    assert genplug.generate(model, ids, eos_token_id=None).shape[1] == 8
    greedy = genplug.generate(model, ids, max_new_tokens=6)
    model.generation_config.eos_token_id = [127]
    model.generation_config.eos_token_id.append(int(greedy[0, 4]))  # in place: the second new token stops it
    assert genplug.generate(model, ids, max_new_tokens=6).shape[1] == 5
    model.generation_config = transformers.GenerationConfig(max_new_tokens=2)
    assert genplug.generate(model, ids, eos_token_id=None).shape[1] == 5
    first, second = _adapt(model).generation_config, _adapt(model).generation_config
    assert first is not second and first == second
    first.max_new_tokens = 9
    assert _adapt(model).generation_config.max_new_tokens == 2


def test_a_misspelt_model_argument_is_refused_with_a_suggestion(llama):
    ids = torch.tensor([[5, 6, 7]])
    # LlamaForCausalLM.forward takes **kwargs, yet transformers refuses unknown keywords: so does genplug
    with pytest.raises(ValueError, match="attention_maks"):
        llama.generate(ids, max_new_tokens=2, attention_maks=torch.ones_like(ids))
    with pytest.raises(GenerationInputError, match="attention_maks.*Did you mean .attention_mask"):
        genplug.generate(llama, ids, max_new_tokens=2, attention_maks=torch.ones_like(ids))


def test_encoder_and_decoder_arguments_are_accepted(t5):
    adapter = _adapt(t5)
    accepted = adapter.accepted_model_kwargs()
    assert {"attention_mask", "decoder_attention_mask", "encoder_outputs", "inputs_embeds"} <= accepted
    assert not adapter.accepts_any_model_kwarg()
    ids = torch.tensor([[5, 6, 7, 8]])
    out = genplug.generate(t5, ids, max_new_tokens=3, decoder_attention_mask=torch.ones(1, 1, dtype=torch.long))
    assert out.shape == (1, 4)


# ------------------------------------------------------------------------------------------- caches


def test_which_transformers_caches_the_loop_may_crop(llama):
    adapter = _adapt(llama)
    sliding = transformers.MistralConfig(**LLAMA, sliding_window=4)
    assert adapter.can_crop(transformers.DynamicCache())
    # transformers 5.25 gave static layers a crop (the next update overwrites what it takes back)
    static_crops = transformers_at_least("5.25")
    assert adapter.can_crop(transformers.StaticCache(config=llama.config, max_cache_len=8)) == static_crops
    assert not adapter.can_crop(transformers.DynamicCache(config=sliding))
    # a recurrent (Mamba) layer rolls back only what it recorded, whatever its is_croppable says
    mamba = transformers.DynamicCache(config=transformers.MambaConfig(vocab_size=128, hidden_size=32,
                                                                      num_hidden_layers=2, state_size=4))
    assert not adapter.can_crop(mamba)
    assert adapter.can_crop(transformers.EncoderDecoderCache(transformers.DynamicCache(), transformers.DynamicCache()))
    assert not adapter.can_crop(transformers.EncoderDecoderCache(
        transformers.StaticCache(config=llama.config, max_cache_len=8), transformers.DynamicCache()))


def test_a_transformers_static_cache_cropped_after_a_stop_continues_exactly(llama):
    """Where a transformers StaticCache may crop (5.25 on), the loop runs past a stop and crops the extra steps
    off; oracle: generating on from the returned cache gives what a fresh call on the whole sequence gives."""
    ids = torch.tensor([[5, 6, 7, 8]])
    eos = int(llama.generate(ids, max_new_tokens=3, do_sample=False)[0, -1])
    out = genplug.generate(llama, ids, past_key_values=transformers.StaticCache(config=llama.config, max_cache_len=40),
                           max_new_tokens=12, eos_token_id=eos, stop_check_interval=8, return_dict_in_generate=True)
    assert out.sequences.shape[1] == ids.shape[1] + 3  # stopped well before the next stop check
    assert out.past_key_values.get_seq_length() == out.sequences.shape[1] - 1
    on = genplug.generate(llama, out.sequences, past_key_values=out.past_key_values, max_new_tokens=6, do_sample=False)
    assert torch.equal(on, genplug.generate(llama, out.sequences, max_new_tokens=6, do_sample=False))


def test_a_models_own_mask_builder_gets_the_cache_under_its_name():
    """BLOOM builds its own mask for a static cache; transformers >= 5.24 names its cache argument `cache` and
    warns (FutureWarning) when it is passed as `past_key_values`."""
    import warnings

    torch.manual_seed(0)
    bloom = transformers.BloomForCausalLM(transformers.BloomConfig(vocab_size=128, hidden_size=32, n_layer=2, n_head=4,
                                                                   pad_token_id=0)).eval()
    ids, mask = torch.tensor([[0, 5, 6, 7], [8, 9, 10, 11]]), torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        ours = genplug.generate(bloom, ids, attention_mask=mask, max_new_tokens=5, cache_implementation="static")
    assert torch.equal(ours, bloom.generate(ids, attention_mask=mask, max_new_tokens=5, cache_implementation="static"))


def test_encoder_decoder_models_get_a_transformers_encoder_decoder_cache(t5):
    out = genplug.generate(t5, torch.tensor([[5, 6, 7]]), max_new_tokens=3, cache_implementation="static",
                           return_dict_in_generate=True)
    assert isinstance(out.past_key_values, transformers.EncoderDecoderCache)


# -------------------------------------------------------------------------------- GenerationMixin


def test_generation_mixin_replaces_a_transformers_models_generate(llama):
    class GenplugLlama(genplug.GenerationMixin, transformers.LlamaForCausalLM):
        pass

    model = GenplugLlama(llama.config).eval()
    model.load_state_dict(llama.state_dict())
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12]])
    out = model.generate(ids, max_new_tokens=5, pad_token_id=0, return_dict_in_generate=True, output_scores=True)
    assert type(out) is genplug.GenerateDecoderOnlyOutput  # genplug's path, not transformers'
    reference = llama.generate(ids, max_new_tokens=5, pad_token_id=0, return_dict_in_generate=True, output_scores=True)
    assert torch.equal(out.sequences, reference.sequences)
    scores = model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
    torch.testing.assert_close(
        scores, llama.compute_transition_scores(reference.sequences, reference.scores, normalize_logits=True),
        atol=1e-5, rtol=0)
