"""generation_config.json written by transformers loads in genplug and the other way round."""

from __future__ import annotations

import json
import types
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genplug import plugin_manager
from genplug.config import BUILTIN_FIELD_NAMES, GenerationConfig, GenerationMode
from genplug.config.plugin_lookup import TRANSFORMERS_CACHE_IMPLEMENTATIONS
from genplug.config.serialization import to_jsonable
from genplug.errors import GenerationConfigError

transformers = pytest.importorskip("transformers")
from transformers.generation import configuration_utils as hf_config  # noqa: E402

pytestmark = pytest.mark.parity

GENPLUG_ONLY_FIELDS = {"return_legacy_cache", "use_model_defaults"}  # transformers 4.56 only


@pytest.fixture(autouse=True)
def no_plugins(monkeypatch):
    registries = types.SimpleNamespace(config_fields={}, cache_backends={}, candidate_generators={})
    manager = types.SimpleNamespace(registries=registries, infos={}, owners_among_unloaded=lambda name: [])
    monkeypatch.setattr(plugin_manager, "get_plugin_manager", lambda: manager)
    monkeypatch.setattr(plugin_manager, "active_config_fields", lambda: registries.config_fields)


@pytest.fixture(autouse=True)
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def theirs_value(config, name):
    """A transformers field as JSON-ready data, comparable with genplug's ``to_dict()`` values."""
    value = getattr(config, name, None)
    return to_jsonable(value.to_dict() if hasattr(value, "to_dict") else value)


REPRESENTATIVE = {
    "sampling": dict(do_sample=True, temperature=0.7, top_p=0.9, top_k=20, min_p=0.05, repetition_penalty=1.1,
                     max_new_tokens=64),
    "beam": dict(num_beams=4, num_return_sequences=2, early_stopping="never", length_penalty=0.8,
                 no_repeat_ngram_size=3, max_length=128),
    "special tokens": dict(eos_token_id=[1, 32000, 32001], pad_token_id=0, bos_token_id=1, decoder_start_token_id=2),
    "processors": dict(bad_words_ids=[[5], [6, 7]], suppress_tokens=[9], begin_suppress_tokens=[10],
                       forced_bos_token_id=3, forced_eos_token_id=[2, 4], exponential_decay_length_penalty=(5, 1.2),
                       renormalize_logits=True, remove_invalid_values=True, guidance_scale=1.5),
    "watermarking": dict(do_sample=True, watermarking_config={"bias": 2.5, "seeding_scheme": "selfhash",
                                                              "context_width": 2}),
    "compile and cache": dict(cache_implementation="static", max_cache_len=256, disable_compile=False,
                              compile_config=hf_config.CompileConfig(fullgraph=True), use_cache=True),
    "assisted": dict(prompt_lookup_num_tokens=10, max_matching_ngram_size=3, num_assistant_tokens=5,
                     num_assistant_tokens_schedule="heuristic", assistant_confidence_threshold=0.3),
    "outputs": dict(return_dict_in_generate=True, output_scores=True, output_logits=True, stop_strings=["\n\n"]),
    "custom keys": dict(max_length=448, alignment_heads=[[1, 0], [2, 3]], lang_to_id={"<|en|>": 50259},
                        no_timestamps_token_id=50363),
}


def _save_theirs(kwargs, directory):
    config = transformers.GenerationConfig(**kwargs)
    config.save_pretrained(directory)
    return transformers.GenerationConfig.from_pretrained(directory)


@pytest.mark.parametrize("kwargs", REPRESENTATIVE.values(), ids=REPRESENTATIVE.keys())
def test_a_transformers_file_loads_with_the_same_values(kwargs, tmp_path):
    theirs = _save_theirs(kwargs, tmp_path)
    ours = GenerationConfig.from_pretrained(tmp_path)
    ours_dict = ours.to_dict()
    for name in theirs.to_dict():
        if name in ("transformers_version", "_from_model_config"):
            continue
        assert ours_dict[name] == theirs_value(theirs, name), name
    assert ours.transformers_version == transformers.__version__
    assert json.loads(ours.to_json_string()) == json.loads(theirs.to_json_string())


@pytest.mark.parametrize("kwargs", REPRESENTATIVE.values(), ids=REPRESENTATIVE.keys())
def test_a_genplug_file_loads_in_transformers_with_the_same_values(kwargs, tmp_path):
    ours = GenerationConfig.from_dict(kwargs)
    ours.save_pretrained(tmp_path)
    theirs = transformers.GenerationConfig.from_pretrained(tmp_path)
    expected = {**ours.to_diff_dict(), "compile_config": None}  # neither library saves compile_config
    for name, value in expected.items():
        assert theirs_value(theirs, name) == value, name
    if ours.watermarking_config is not None:
        assert isinstance(theirs.watermarking_config, hf_config.WatermarkingConfig)
    assert theirs.get_generation_mode() == ours.get_generation_mode()


def test_sequence_bias_survives_both_ways(tmp_path):
    bias = {(1, 2): -1.5, (7,): 3.0}
    theirs = transformers.GenerationConfig(sequence_bias=bias)
    theirs.save_pretrained(tmp_path / "theirs")  # transformers writes the keys as "(1, 2)"
    assert GenerationConfig.from_pretrained(tmp_path / "theirs").sequence_bias == bias
    GenerationConfig(sequence_bias=bias).save_pretrained(tmp_path / "ours")  # genplug writes the list form
    loaded = transformers.GenerationConfig.from_pretrained(tmp_path / "ours").sequence_bias
    processor = transformers.SequenceBiasLogitsProcessor(loaded)  # which transformers accepts
    assert processor.sequence_bias == bias


def test_synthid_settings_are_written_like_transformers_does():
    keys = [654, 400, 836]
    theirs = transformers.GenerationConfig(watermarking_config=hf_config.SynthIDTextWatermarkingConfig(ngram_len=5, keys=keys))
    ours = GenerationConfig(watermarking_config={"ngram_len": 5, "keys": keys})
    assert json.loads(ours.to_json_string()) == json.loads(theirs.to_json_string(ignore_metadata=True))
    assert GenerationConfig(watermarking_config=theirs.watermarking_config) == ours  # their object converts too


def test_the_field_sets_match():
    theirs = set(transformers.GenerationConfig().to_dict()) - set(hf_config.METADATA_FIELDS)
    assert theirs == BUILTIN_FIELD_NAMES - GENPLUG_ONLY_FIELDS


def test_the_defaults_match():
    theirs = transformers.GenerationConfig._get_default_generation_params()
    assert GenerationConfig.default_values() == {k: v for k, v in theirs.items() if v is not None}


def test_the_cache_names_and_modes_match():
    assert set(TRANSFORMERS_CACHE_IMPLEMENTATIONS) == set(hf_config.ALL_CACHE_IMPLEMENTATIONS) | {"paged"}
    assert {m.name: m.value for m in GenerationMode} == {m.name: m.value for m in hf_config.GenerationMode}


@pytest.mark.parametrize("model_config", ["LlamaConfig", "BartConfig", "T5Config", "WhisperConfig"])
def test_from_model_config_matches(model_config):
    model_config = getattr(transformers, model_config)()
    theirs = transformers.GenerationConfig.from_model_config(model_config)
    ours = GenerationConfig.from_model_config(model_config)
    assert json.loads(ours.to_json_string(ignore_metadata=True)) == json.loads(theirs.to_json_string(ignore_metadata=True))
    assert ours._from_model_config is True


REJECTED_BY_BOTH = [
    dict(early_stopping="sometimes"), dict(max_new_tokens=0), dict(assistant_ensemble_weight=1.5),
    dict(cache_implementation="magic"), dict(num_return_sequences=2), dict(num_beams=2, num_return_sequences=3),
    dict(forced_eos_token_id=2, suppress_tokens=[2]), dict(watermarking_config={"greenlist_ratio": 3.0}),
    dict(watermarking_config={"seeding_scheme": "righthash"}),
]


@pytest.mark.parametrize("kwargs", REJECTED_BY_BOTH, ids=[str(k) for k in REJECTED_BY_BOTH])
def test_transformers_hard_errors_are_config_errors(kwargs):
    with pytest.raises(ValueError):
        transformers.GenerationConfig(**kwargs)
    with pytest.raises(GenerationConfigError):
        GenerationConfig(**kwargs)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    num_beams=st.sampled_from([None, 1, 2, 3, 4]),
    do_sample=st.sampled_from([None, False, True]),
    top_k=st.sampled_from([None, 0, 1, 4, 50]),
    penalty_alpha=st.sampled_from([None, 0.0, 0.6]),
    num_beam_groups=st.sampled_from([None, 1, 2]),
    constraints=st.sampled_from([None, [[1, 2]]]),
    force_words_ids=st.sampled_from([None, [[3]]]),
    prompt_lookup_num_tokens=st.sampled_from([None, 3]),
    use_mtp=st.sampled_from([None, False, True]),
    assistant_early_exit=st.sampled_from([None, 2]),
    dola_layers=st.sampled_from([None, "low", [2, 4]]),
    with_assistant=st.booleans(),
)
def test_generation_mode_agrees_with_transformers(with_assistant, **kwargs):
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    assistant = object() if with_assistant else None
    try:
        ours = GenerationConfig(**kwargs)
    except GenerationConfigError as exc:
        # genplug also checks group beam search's divisibility rule, which transformers 5 dropped
        assert "num_beam_groups" in str(exc)
        return
    theirs = transformers.GenerationConfig(**kwargs)
    assert ours.get_generation_mode(assistant).value == theirs.get_generation_mode(assistant).value
