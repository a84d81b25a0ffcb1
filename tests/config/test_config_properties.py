"""Properties of GenerationConfig over arbitrary values (hypothesis)."""

from __future__ import annotations

import json
import tempfile
import types
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genplug import plugin_manager
from genplug.config import BUILTIN_FIELD_NAMES, ConfigField, GenerationConfig, GenerationMode
from genplug.errors import GenerationConfigError

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _non_negative(value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError("must be an int >= 0")


PLUGIN_FIELD = ConfigField("dry_allowed_length", default=2, validator=_non_negative, help="tokens a repeat may run")


@pytest.fixture(autouse=True)
def one_plugin_field(monkeypatch):
    """A manager with one plugin field and no cache backends, whatever plugins are installed."""
    registries = types.SimpleNamespace(
        config_fields={PLUGIN_FIELD.name: types.SimpleNamespace(obj=PLUGIN_FIELD)},
        cache_backends={},
        candidate_generators={},
    )
    manager = types.SimpleNamespace(registries=registries, infos={}, owners_among_unloaded=lambda name: [])
    monkeypatch.setattr(plugin_manager, "get_plugin_manager", lambda: manager)
    monkeypatch.setattr(plugin_manager, "active_config_fields", lambda: registries.config_fields)


# ------------------------------------------------------------------------------------ arbitrary values

WORDS = ["never", "low", "high", "static", "dynamic", "hybrid", "lefthash", "selfhash", "constant", "dflash", ""]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 70), st.integers(), st.floats(), st.text(max_size=6),
    st.sampled_from(WORDS), st.sampled_from([10**400, -(10**400), 2**63, float("inf"), float("nan")]),
)
anything = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.one_of(st.text(max_size=6), st.integers(0, 9), st.tuples(st.integers(-1, 9))), inner, max_size=3),
    ),
    max_leaves=8,
)
WATERMARK_KEYS = ["greenlist_ratio", "bias", "hashing_key", "seeding_scheme", "context_width", "ngram_len", "keys",
                  "context_history_size", "sampling_table_seed", "sampling_table_size", "skip_first_ngram_calls",
                  "debug_mode"]
COMPILE_KEYS = ["fullgraph", "dynamic", "backend", "mode", "options"]
nested_settings = st.one_of(
    st.dictionaries(st.sampled_from(WATERMARK_KEYS + ["color"]), anything, max_size=4),
    st.dictionaries(st.sampled_from(COMPILE_KEYS + ["fulgraph"]), anything, max_size=3),
)
field_names = st.sampled_from(sorted(BUILTIN_FIELD_NAMES) + [PLUGIN_FIELD.name])
arbitrary_kwargs = st.dictionaries(field_names, st.one_of(anything, nested_settings), max_size=8)


@SETTINGS
@given(arbitrary_kwargs)
def test_arbitrary_values_either_build_or_raise_a_config_error(kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            config = GenerationConfig(**kwargs)
        except GenerationConfigError:
            return
        try:
            config.validate(strict=True)
        except GenerationConfigError:
            pass
        assert isinstance(config.get_generation_mode(), GenerationMode)
        repr(config)
        resolved = config.resolved()
        assert resolved.resolved() == resolved
        json.loads(config.to_json_string(use_diff=False))


@SETTINGS
@given(arbitrary_kwargs)
def test_arbitrary_values_set_as_attributes_fail_validation_only_with_config_errors(kwargs):
    config = GenerationConfig()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, value in kwargs.items():
            try:
                setattr(config, name, value)
            except GenerationConfigError:  # nested settings are converted on assignment
                pass
        try:
            config.validate()
        except GenerationConfigError:
            pass
        repr(config)
        assert config == config
        config.to_dict()


# ------------------------------------------------------------------------------------ valid values

token = st.integers(0, 50_000)
tokens = st.lists(token, min_size=1, max_size=4)
unit = st.floats(0.01, 1.0)
VALID = {
    "max_length": st.integers(0, 4096), "max_new_tokens": st.integers(1, 4096), "min_length": st.integers(0, 50),
    "min_new_tokens": st.integers(0, 50), "early_stopping": st.sampled_from([True, False, "never"]),
    "max_time": st.floats(0.1, 100), "stop_strings": st.one_of(st.text(min_size=1, max_size=5), st.lists(st.text(min_size=1, max_size=5), max_size=3)),
    "do_sample": st.booleans(), "num_beams": st.sampled_from([1, 2, 4]), "use_mtp": st.booleans(),
    "length_penalty": st.floats(-2, 2), "use_cache": st.booleans(),
    "cache_implementation": st.sampled_from(["dynamic", "static", "offloaded", "quantized", "hybrid"]),
    "cache_config": st.dictionaries(st.sampled_from(["backend", "nbits", "q_group_size"]), st.integers(1, 8), max_size=2),
    "max_cache_len": st.integers(1, 4096), "guidance_scale": st.floats(0, 5),
    "sequence_bias": st.dictionaries(st.lists(token, min_size=1, max_size=3).map(tuple), st.floats(-5, 5), min_size=1, max_size=3),
    "encoder_repetition_penalty": st.floats(0.5, 2), "repetition_penalty": st.floats(0.5, 2),
    "no_repeat_ngram_size": st.integers(0, 5), "encoder_no_repeat_ngram_size": st.integers(0, 5),
    "bad_words_ids": st.lists(tokens, min_size=1, max_size=3), "forced_bos_token_id": token,
    "forced_eos_token_id": st.one_of(token, tokens), "remove_invalid_values": st.booleans(),
    "exponential_decay_length_penalty": st.tuples(st.integers(0, 20), st.floats(1, 2)),
    "suppress_tokens": st.lists(token, max_size=3), "begin_suppress_tokens": st.lists(token, max_size=3),
    "renormalize_logits": st.booleans(),
    "watermarking_config": st.one_of(
        st.fixed_dictionaries({}, optional={"bias": st.floats(0, 4), "greenlist_ratio": st.floats(0, 1),
                                            "seeding_scheme": st.sampled_from(["lefthash", "selfhash"])}),
        st.fixed_dictionaries({"ngram_len": st.integers(1, 8), "keys": tokens}, optional={"debug_mode": st.booleans()}),
    ),
    "token_healing": st.booleans(), "temperature": st.floats(0.05, 3), "top_h": unit, "top_k": st.integers(0, 100),
    "top_p": unit, "min_p": st.floats(0, 1), "typical_p": unit, "epsilon_cutoff": st.floats(0, 0.99),
    "eta_cutoff": st.floats(0, 0.99), "num_return_sequences": st.sampled_from([1, 1, 2]),
    "output_attentions": st.booleans(), "output_hidden_states": st.booleans(), "output_scores": st.booleans(),
    "output_logits": st.booleans(), "return_dict_in_generate": st.booleans(), "pad_token_id": token,
    "bos_token_id": token, "eos_token_id": st.one_of(token, tokens), "decoder_start_token_id": st.one_of(token, tokens),
    "is_assistant": st.booleans(), "num_assistant_tokens": st.integers(1, 50),
    "num_assistant_tokens_schedule": st.sampled_from(["constant", "heuristic", "heuristic_transient"]),
    "assistant_confidence_threshold": st.floats(0, 1), "prompt_lookup_num_tokens": st.integers(1, 10),
    "max_matching_ngram_size": st.integers(1, 5), "assistant_early_exit": st.integers(1, 30),
    "assistant_lookbehind": st.integers(0, 20), "target_lookbehind": st.integers(0, 20),
    "assistant_ensemble_weight": st.floats(0.01, 0.99), "speculation_type": st.just("dflash"),
    "compile_config": st.fixed_dictionaries({}, optional={"fullgraph": st.booleans(), "dynamic": st.booleans()}),
    "disable_compile": st.booleans(), "prefill_chunk_size": st.integers(1, 512),
    "continuous_batching_config": st.dictionaries(st.sampled_from(["page_size", "num_blocks"]), st.integers(1, 512), max_size=2),
    "low_memory": st.booleans(), "penalty_alpha": st.floats(0, 1),
    "dola_layers": st.one_of(st.sampled_from(["low", "high"]), st.lists(st.integers(0, 30), min_size=1, max_size=3)),
    "diversity_penalty": st.just(0.0), "num_beam_groups": st.sampled_from([1, 2]),
    "constraints": st.lists(tokens, min_size=1, max_size=2), "force_words_ids": st.lists(tokens, min_size=1, max_size=2),
    "return_legacy_cache": st.booleans(), "use_model_defaults": st.booleans(),
    PLUGIN_FIELD.name: st.integers(0, 9),
}


def test_every_field_has_a_valid_value_strategy():
    assert set(VALID) == BUILTIN_FIELD_NAMES | {PLUGIN_FIELD.name}


valid_kwargs = st.lists(st.sampled_from(sorted(VALID)), unique=True, max_size=7).flatmap(
    lambda names: st.fixed_dictionaries({name: VALID[name] for name in names})
)


STATS = {"saved": 0}


def _build(kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return GenerationConfig(**kwargs)
        except GenerationConfigError:
            return None  # a rule between fields (e.g. num_return_sequences > num_beams)


@SETTINGS
@given(valid_kwargs)
def test_a_valid_config_survives_save_and_load(kwargs):
    config = _build(kwargs)
    if config is None:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert GenerationConfig.from_dict(json.loads(config.to_json_string())) == config
        try:
            config.validate(strict=True)
        except GenerationConfigError:
            with tempfile.TemporaryDirectory() as directory, pytest.raises(GenerationConfigError, match="Fix these"):
                config.save_pretrained(directory)
            return
        with tempfile.TemporaryDirectory() as directory:
            config.save_pretrained(directory)
            loaded = GenerationConfig.from_pretrained(directory)
        expected = GenerationConfig.from_dict({k: v for k, v in kwargs.items() if k != "compile_config"})
        assert loaded == expected  # compile_config is a run-time setting, never saved
        assert loaded.get_generation_mode() == config.get_generation_mode()
        STATS["saved"] += 1


@SETTINGS
@given(
    st.dictionaries(st.sampled_from(sorted(VALID)), st.none(), max_size=6),
    st.dictionaries(st.from_regex(r"[a-z][a-z_]{0,14}", fullmatch=True).filter(lambda k: k not in VALID), anything, max_size=4),
)
def test_update_returns_exactly_the_keys_that_are_not_fields(unset_fields, others):
    defaults = GenerationConfig.default_values()
    fields = {name: defaults.get(name) for name in unset_fields}
    config = GenerationConfig()
    unused = config.update(**fields, **others)
    assert unused == others
    for name, value in fields.items():
        assert getattr(config, name) == (PLUGIN_FIELD.default if value is None and name == PLUGIN_FIELD.name else value)
