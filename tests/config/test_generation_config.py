"""GenerationConfig: fields, defaults, validation messages, plugin fields, merging, files."""

from __future__ import annotations

import copy
import json
import pickle
import types
import warnings

import pytest

import genplug
from genplug import plugin_manager
from genplug.config import (
    BUILTIN_FIELD_NAMES,
    BUILTIN_FIELD_SPECS,
    GROUPS,
    CompileConfig,
    ConfigField,
    GenerationConfig,
    GenerationMode,
    SynthIDTextWatermarkingConfig,
    WatermarkingConfig,
)
from genplug.errors import GenerationConfigError, PluginError
from genplug.registry import Registry

# Every GenerationConfig field documented by the seeds: transformers 4.56.2 (EN) and 5.x.
SEED_4_56_FIELDS = """
max_length max_new_tokens min_length min_new_tokens early_stopping max_time stop_strings do_sample num_beams
num_beam_groups use_cache cache_implementation cache_config return_legacy_cache temperature top_k top_p min_p
typical_p epsilon_cutoff eta_cutoff diversity_penalty repetition_penalty encoder_repetition_penalty length_penalty
no_repeat_ngram_size bad_words_ids force_words_ids renormalize_logits constraints forced_bos_token_id
forced_eos_token_id remove_invalid_values exponential_decay_length_penalty suppress_tokens begin_suppress_tokens
sequence_bias token_healing guidance_scale watermarking_config num_return_sequences output_attentions
output_hidden_states output_scores output_logits return_dict_in_generate pad_token_id bos_token_id eos_token_id
encoder_no_repeat_ngram_size decoder_start_token_id is_assistant num_assistant_tokens num_assistant_tokens_schedule
assistant_confidence_threshold prompt_lookup_num_tokens max_matching_ngram_size assistant_early_exit
assistant_lookbehind target_lookbehind compile_config disable_compile low_memory penalty_alpha dola_layers
prefill_chunk_size use_model_defaults
""".split()
V5_NEW_FIELDS = "use_mtp max_cache_len top_h assistant_ensemble_weight speculation_type continuous_batching_config".split()

TRANSFORMERS_5_23_DEFAULTS = {
    "max_length": 20, "min_length": 0, "do_sample": False, "use_cache": True, "early_stopping": False,
    "num_beams": 1, "temperature": 1.0, "top_k": 50, "top_p": 1.0, "typical_p": 1.0, "repetition_penalty": 1.0,
    "length_penalty": 1.0, "no_repeat_ngram_size": 0, "encoder_no_repeat_ngram_size": 0, "num_return_sequences": 1,
    "output_scores": False, "return_dict_in_generate": False, "remove_invalid_values": False,
    "epsilon_cutoff": 0.0, "eta_cutoff": 0.0, "encoder_repetition_penalty": 1.0, "num_assistant_tokens": 20,
    "num_assistant_tokens_schedule": "constant", "assistant_confidence_threshold": 0.4, "assistant_lookbehind": 10,
    "target_lookbehind": 10, "num_beam_groups": 1, "diversity_penalty": 0.0,
}


# ------------------------------------------------------------------------------------ a stand-in manager

REAL_GET_PLUGIN_MANAGER = plugin_manager.get_plugin_manager
REAL_ACTIVE_CONFIG_FIELDS = plugin_manager.active_config_fields


def _positive(value):
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
        raise ValueError("must be a number >= 0")


DRY = ConfigField("dry_multiplier", default=0.0, validator=_positive, help="the DRY penalty strength",
                  provider="dry (genplug-dry 1.0)")


class FakeManager:
    """Just what the config asks of a plugin manager."""

    def __init__(self, fields=(), cache_backends=(), unloaded=None):
        self.cache_registry = Registry("cache backend")
        for name in cache_backends:
            self.cache_registry.add(name, object(), "caches", "caches (genplug 0.1.0)")
        self.registries = types.SimpleNamespace(
            config_fields={f.name: types.SimpleNamespace(obj=f) for f in fields},
            cache_backends=self.cache_registry,
            candidate_generators={},
        )
        self.unloaded = unloaded or {}  # field name -> (plugin, status)
        self.infos = {plugin: types.SimpleNamespace(status=status) for plugin, status in self.unloaded.values()}

    def owners_among_unloaded(self, name):
        return [self.unloaded[name][0]] if name in self.unloaded else []


@pytest.fixture
def use_manager(monkeypatch):
    """Install a FakeManager as the active plugin manager."""

    def install(manager):
        monkeypatch.setattr(plugin_manager, "get_plugin_manager", lambda: manager)
        monkeypatch.setattr(plugin_manager, "active_config_fields", lambda: manager.registries.config_fields)
        return manager

    return install


@pytest.fixture(autouse=True)
def no_plugins(use_manager):
    """Tests see no plugin fields and no cache backends unless they install some."""
    return use_manager(FakeManager())


# ------------------------------------------------------------------------------------ fields and defaults


def test_every_seed_field_is_a_builtin_field():
    assert set(SEED_4_56_FIELDS) | set(V5_NEW_FIELDS) <= BUILTIN_FIELD_NAMES
    assert len(BUILTIN_FIELD_NAMES) == len(BUILTIN_FIELD_SPECS) == 73


def test_every_field_is_unset_by_default_and_documented():
    config = GenerationConfig()
    for spec in BUILTIN_FIELD_SPECS:
        assert getattr(config, spec.name) is None
        assert spec.group in GROUPS and spec.help and spec.accepts()
    assert config.to_diff_dict() == {}


def test_default_values_are_transformers_5_23():
    assert GenerationConfig.default_values() == TRANSFORMERS_5_23_DEFAULTS
    GenerationConfig.default_values()["top_k"] = 1  # a fresh dict each time
    assert GenerationConfig.default_values()["top_k"] == 50


def test_defaults_pass_validation():
    GenerationConfig(**GenerationConfig.default_values()).validate(strict=True)


# ------------------------------------------------------------------------------------ names


def test_unknown_name_suggests_the_closest_field():
    with pytest.raises(GenerationConfigError, match=r"'tempreature' is not a GenerationConfig field.*'temperature'"):
        GenerationConfig(tempreature=0.7)


@pytest.mark.parametrize("name", ["streamer", "logits_processor", "assistant_model", "negative_prompt_ids"])
def test_generate_arguments_are_not_config_fields(name):
    with pytest.raises(GenerationConfigError, match="argument of generate"):
        GenerationConfig(**{name: object()})
    with pytest.raises(GenerationConfigError, match="argument of generate"):
        GenerationConfig.from_dict({name: 1})


def test_setting_an_unknown_attribute_raises_but_private_and_custom_names_work():
    config = GenerationConfig.from_dict({"alignment_heads": [[1, 2]]})
    with pytest.raises(GenerationConfigError, match="'top_k'"):
        config.top_kk = 3
    config._eos_token_tensor = "runtime state"
    config.alignment_heads = [[3, 4]]
    assert config.alignment_heads == [[3, 4]]
    assert not hasattr(config, "no_such_field")


# ------------------------------------------------------------------------------------ validation

BAD_VALUES = [
    (dict(top_p=1.5), "top_p=1.5 is outside (0, 1]: top_p is the probability mass to keep; use 1.0 to disable it"),
    (dict(top_p=0.0), "outside (0, 1]"),
    (dict(top_k=-1), "top_k=-1 is less than 0"),
    (dict(top_k=True), "top_k=True is a bool"),
    (dict(top_k=5.0), "top_k=5.0 is a float"),
    (dict(min_p=1.5), "min_p=1.5 is outside [0, 1]"),
    (dict(typical_p=0), "typical_p=0 is outside (0, 1]"),
    (dict(epsilon_cutoff=1.0), "epsilon_cutoff=1.0 is outside [0, 1)"),
    (dict(eta_cutoff=-0.1), "eta_cutoff=-0.1 is outside [0, 1)"),
    (dict(top_h=0.0), "top_h=0.0 is outside (0, 1]"),
    (dict(temperature=-1.0), "temperature=-1.0 is not >= 0"),
    (dict(temperature="hot"), "temperature='hot' is a str"),
    (dict(temperature=float("nan")), "is not a finite number"),
    (dict(do_sample=True, temperature=0.0), "do_sample=False"),
    (dict(repetition_penalty=0.0), "repetition_penalty=0.0 is not > 0"),
    (dict(encoder_repetition_penalty=-2), "is not > 0"),
    (dict(num_beams=0), "num_beams=0 is less than 1"),
    (dict(num_beams="4"), "num_beams='4' is a str"),
    (dict(num_return_sequences=0), "num_return_sequences=0 is less than 1"),
    (dict(max_new_tokens=0), "max_new_tokens=0 is less than 1"),
    (dict(max_length=-1), "max_length=-1 is less than 0"),
    (dict(no_repeat_ngram_size=-3), "no_repeat_ngram_size=-3 is less than 0"),
    (dict(early_stopping="always"), "early_stopping='always' is not one of True, False, 'never'"),
    (dict(early_stopping=1), "early_stopping=1 is not one of"),
    (dict(do_sample="yes"), "do_sample='yes' is a str, expected True or False"),
    (dict(num_return_sequences=3), "set do_sample=True or num_beams >= 3"),
    (dict(num_beams=2, num_return_sequences=3), "num_return_sequences=3 is more than num_beams=2"),
    (dict(num_beams=4, num_beam_groups=3), "num_beam_groups=3 does not divide num_beams=4"),
    (dict(num_beams=4, diversity_penalty=0.5), "diversity_penalty=0.5 needs num_beam_groups > 1"),
    (dict(forced_bos_token_id=3, suppress_tokens=[1, 3]), "forced_bos_token_id=3 is also in suppress_tokens"),
    (dict(forced_eos_token_id=[2, 5], suppress_tokens=[2, 5]), "forced_eos_token_id=[2, 5] is also in suppress"),
    (dict(assistant_ensemble_weight=1.0), "assistant_ensemble_weight=1.0 is outside (0, 1)"),
    (dict(cache_implementation="statc"), "Did you mean 'static'"),
    (dict(cache_implementation=3), "cache_implementation=3 is an int"),
    (dict(bad_words_ids=[1, 2]), "each entry must be a non-empty list of token ids"),
    (dict(bad_words_ids=[[1, -2]]), "negative token id -2"),
    (dict(suppress_tokens="12"), "is a str, expected a list of token ids"),
    (dict(eos_token_id=[1, "2"]), "contains '2' (str)"),
    (dict(sequence_bias={(1,): "x"}), "biases are finite numbers"),
    (dict(sequence_bias={1: 1.0}), "keys must be tuples"),
    (dict(exponential_decay_length_penalty=(1.5, 1.0)), "start_index 1.5"),
    (dict(stop_strings=["ok", ""]), "empty string"),
    (dict(stop_strings=3), "a string or a list of strings"),
    (dict(num_assistant_tokens_schedule="fast"), "is not one of 'constant', 'heuristic', 'heuristic_transient'"),
    (dict(dola_layers="middle"), "'low', 'high'"),
    (dict(penalty_alpha=2.0), "penalty_alpha=2.0 is outside [0, 1]"),
    (dict(cache_config=[1]), "expected a dict"),
    (dict(compile_config=3), "expected a CompileConfig"),
    (dict(compile_config={"fulgraph": True}), "Did you mean 'fullgraph'"),
    (dict(compile_config=CompileConfig(mode="fast")), "compile_config.mode='fast'"),
    (dict(watermarking_config=[1]), "expected a WatermarkingConfig"),
    (dict(watermarking_config={"greenlist_ratio": 2.0}), "greenlist_ratio=2.0 is outside [0, 1]"),
    (dict(watermarking_config={"seeding_scheme": "x"}), "seeding_scheme='x' is not one of 'lefthash', 'selfhash'"),
    (dict(watermarking_config={"bias": 1.0, "color": 2}), "unknown key 'color'"),
    (dict(watermarking_config={"ngram_len": 5, "keys": [1], "sampling_table_size": 2**25}), "more than 2**24"),
    (dict(watermarking_config={"ngram_len": 5, "keys": []}), "keys=[] is not a non-empty list"),
    (dict(speculation_type="medusa"), "speculation_type='medusa' is not a known speculation type"),
]


@pytest.mark.parametrize("kwargs, message", BAD_VALUES, ids=[str(k) for k, _ in BAD_VALUES])
def test_bad_values_raise_with_field_value_and_fix(kwargs, message):
    with pytest.raises(GenerationConfigError) as err:
        GenerationConfig(**kwargs)
    assert message in str(err.value)
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize("kwargs", [
    dict(early_stopping="never", num_beams=2), dict(top_k=0, do_sample=True), dict(temperature=2, do_sample=True),
    dict(eos_token_id=[1, 2]), dict(sequence_bias=[[[1, 2], 0.5]]), dict(dola_layers=[2, 4]),
    dict(force_words_ids=[[[1, 2], [3]], [4]]), dict(cache_implementation="hybrid"),
    dict(num_beams=6, num_beam_groups=3, diversity_penalty=0.5), dict(stop_strings="\n\n"),
    dict(watermarking_config=WatermarkingConfig(bias=1.0)), dict(compile_config=CompileConfig(fullgraph=True)),
])
def test_good_values_are_accepted_silently(kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GenerationConfig(**kwargs).validate(strict=True)


def test_a_value_set_by_attribute_is_checked_by_validate():
    config = GenerationConfig()
    config.top_p = "high"
    with pytest.raises(GenerationConfigError, match="top_p='high' is a str"):
        config.validate()


def test_minor_issues_warn_once_per_call_and_raise_when_strict():
    with pytest.warns(UserWarning, match="temperature=0.5 only affects sampling") as record:
        config = GenerationConfig(temperature=0.5, top_p=0.9)
    assert len(record) == 1 and "top_p=0.9" in str(record[0].message)
    with pytest.raises(GenerationConfigError, match="would be ignored: temperature"):
        config.validate(strict=True)
    with pytest.warns(UserWarning, match="only affects beam search"):
        GenerationConfig(length_penalty=2.0)
    with pytest.warns(UserWarning, match="return_dict_in_generate"):
        GenerationConfig(output_scores=True)
    with pytest.warns(UserWarning, match="use_cache=False"):
        GenerationConfig(use_cache=False, cache_implementation="static")
    with pytest.warns(UserWarning, match="pad_token_id=-1 is negative"):
        GenerationConfig(pad_token_id=-1)


def test_inherited_sampling_flags_are_quiet_when_the_user_turned_sampling_off():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = GenerationConfig(temperature=0.6, top_p=0.9)  # as a model's file would have them
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config.update(do_sample=False)
    with pytest.warns(UserWarning, match="top_p=0.8"):
        config.update(do_sample=False, top_p=0.8)


def test_max_cache_len_warns_without_a_static_cache():
    with pytest.warns(UserWarning, match="only sizes static caches"):
        GenerationConfig(max_cache_len=64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GenerationConfig(max_cache_len=64, cache_implementation="static")


def test_continuous_batching_config_is_deprecated():
    with pytest.warns(FutureWarning, match="deprecated"):
        config = GenerationConfig(continuous_batching_config={"page_size": 128})
    assert config.to_diff_dict() == {"continuous_batching_config": {"page_size": 128}}


# ------------------------------------------------------------------------------------ cache backends


def test_cache_names_come_from_the_registry_once_backends_exist(use_manager):
    use_manager(FakeManager(cache_backends=["dynamic", "static", "paged"]))
    GenerationConfig(cache_implementation="static")
    GenerationConfig(cache_implementation="hybrid")  # reset to None by resolved(), always accepted
    with pytest.raises(GenerationConfigError) as err:
        GenerationConfig(cache_implementation="quantized")  # a transformers name nobody registered
    assert "dynamic (caches (genplug 0.1.0))" in str(err.value) and "static" in str(err.value)


def test_without_backends_the_transformers_names_are_accepted():
    for name in ("dynamic", "static", "offloaded", "offloaded_static", "quantized", "sliding_window", "paged"):
        GenerationConfig(cache_implementation=name)


# ------------------------------------------------------------------------------------ plugin fields


def test_plugin_fields_are_stored_read_validated_and_saved(use_manager, tmp_path):
    use_manager(FakeManager(fields=[DRY]))
    config = GenerationConfig(dry_multiplier=0.8, max_new_tokens=4)
    assert config.dry_multiplier == 0.8
    assert GenerationConfig().dry_multiplier == 0.0  # unset reads as the plugin's default
    with pytest.raises(GenerationConfigError, match=r"dry_multiplier=-1 is invalid: must be a number >= 0.*genplug-dry"):
        GenerationConfig(dry_multiplier=-1)
    config.dry_multiplier = 0.5
    assert config.to_diff_dict() == {"dry_multiplier": 0.5, "max_new_tokens": 4}
    config.save_pretrained(tmp_path)
    loaded = GenerationConfig.from_pretrained(tmp_path)
    assert loaded == config and loaded.dry_multiplier == 0.5 and loaded.custom_entries() == {}
    assert config.update(dry_multiplier=0.2, dry_base=1) == {"dry_base": 1}
    assert config.resolved().dry_multiplier == 0.2
    assert GenerationConfig().resolved().to_dict()["dry_multiplier"] == 0.0


def test_plugin_field_through_a_real_plugin_manager(monkeypatch):
    from genplug.plugin_manager import new_plugin_manager, use_plugin_manager

    class DryPlugin:
        @genplug.hookimpl
        def genplug_register_config_fields(self, register):
            register(ConfigField("dry_allowed_length", default=2, validator=_positive, help="tokens a repeat may run"))

    monkeypatch.setattr(plugin_manager, "get_plugin_manager", REAL_GET_PLUGIN_MANAGER)
    monkeypatch.setattr(plugin_manager, "active_config_fields", REAL_ACTIVE_CONFIG_FIELDS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = new_plugin_manager(autoload=False, plugins=[DryPlugin()])
    with use_plugin_manager(pm):
        assert GenerationConfig().dry_allowed_length == 2
        assert GenerationConfig(dry_allowed_length=5).dry_allowed_length == 5
        with pytest.raises(GenerationConfigError, match="dry_allowed_length=-2 is invalid: must be a number >= 0"):
            GenerationConfig(dry_allowed_length=-2)


def test_a_field_of_a_blocked_plugin_says_so(use_manager):
    use_manager(FakeManager(unloaded={"dry_multiplier": ("dry", "blocked")}))
    with pytest.raises(GenerationConfigError, match="belongs to plugin 'dry', which is blocked"):
        GenerationConfig(dry_multiplier=0.8)


def test_a_broken_plugin_manager_means_no_plugin_fields(monkeypatch):
    def broken():
        raise PluginError("genplug's built-in plugins were not found")

    monkeypatch.setattr(plugin_manager, "active_config_fields", broken)
    monkeypatch.setattr(plugin_manager, "get_plugin_manager", broken)
    GenerationConfig(max_new_tokens=3, cache_implementation="static")
    with pytest.raises(GenerationConfigError, match="plugin fields are unavailable: PluginError"):
        GenerationConfig(dry_multiplier=0.8)
    assert GenerationConfig.from_dict({"dry_multiplier": 0.8}).dry_multiplier == 0.8  # kept as a custom entry


# ------------------------------------------------------------------------------------ update and resolved


def test_update_returns_the_keys_that_are_not_fields():
    config = GenerationConfig()
    unused = config.update(no_repeat_ngram_size=3, attention_mask="mask", streamer="s")
    assert unused == {"attention_mask": "mask", "streamer": "s"}
    assert config.no_repeat_ngram_size == 3


def test_update_defaults_only_fills_unset_fields_and_can_keep_custom_entries():
    config = GenerationConfig(top_k=3, do_sample=True)
    assert config.update(top_k=7, top_p=0.5, defaults_only=True) == {}
    assert (config.top_k, config.top_p) == (3, 0.5)
    assert config.update(lang_to_id={"en": 1}, allow_custom_entries=True) == {}
    assert config.custom_entries() == {"lang_to_id": {"en": 1}}


def test_a_failed_update_changes_nothing():
    config = GenerationConfig(do_sample=True, top_p=0.9)
    with pytest.raises(GenerationConfigError, match="top_p=2"):
        config.update(top_k=5, top_p=2)
    assert (config.top_k, config.top_p) == (None, 0.9)


def test_resolved_fills_from_the_model_then_from_defaults():
    model = GenerationConfig.from_dict({"do_sample": True, "top_p": 0.9, "eos_token_id": [1, 2], "alignment_heads": [[0, 1]]})
    user = GenerationConfig(top_k=5, max_new_tokens=10, do_sample=True)
    merged = user.resolved(model)
    assert (merged.top_k, merged.top_p, merged.do_sample, merged.eos_token_id) == (5, 0.9, True, [1, 2])
    assert merged.max_length == 20 and merged.num_beams == 1 and merged.temperature == 1.0
    assert merged.alignment_heads == [[0, 1]]
    assert user.top_p is None and user.custom_entries() == {}  # the user's config is untouched
    for name, value in GenerationConfig.default_values().items():
        assert getattr(GenerationConfig().resolved(), name) == value


def test_resolved_accepts_dicts_and_transformers_configs_and_resets_hybrid():
    merged = GenerationConfig(cache_implementation="hybrid").resolved({"max_new_tokens": 7, "transformers_version": "x"})
    assert merged.cache_implementation is None and merged.max_new_tokens == 7 and merged.transformers_version is None
    transformers = pytest.importorskip("transformers")
    theirs = transformers.GenerationConfig(do_sample=True, temperature=0.6, watermarking_config={"bias": 1.0})
    merged = GenerationConfig().resolved(theirs)
    assert merged.temperature == 0.6 and merged.watermarking_config == WatermarkingConfig(bias=1.0)


def test_use_model_defaults_false_skips_the_model():
    model = GenerationConfig(do_sample=True, top_p=0.5)
    merged = GenerationConfig(use_model_defaults=False).resolved(model)
    assert merged.do_sample is False and merged.top_p == 1.0


def test_resolved_keeps_an_explicit_greedy_choice_quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = GenerationConfig(temperature=0.6, top_p=0.9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GenerationConfig(do_sample=False).resolved(model)


# ------------------------------------------------------------------------------------ modes


@pytest.mark.parametrize("kwargs, assistant, mode", [
    ({}, None, GenerationMode.GREEDY_SEARCH),
    (dict(do_sample=True), None, GenerationMode.SAMPLE),
    (dict(num_beams=3), None, GenerationMode.BEAM_SEARCH),
    (dict(num_beams=3, do_sample=True), None, GenerationMode.BEAM_SAMPLE),
    (dict(num_beams=4, num_beam_groups=2), None, GenerationMode.GROUP_BEAM_SEARCH),
    (dict(force_words_ids=[[1]]), None, GenerationMode.CONSTRAINED_BEAM_SEARCH),
    (dict(top_k=4, penalty_alpha=0.6), None, GenerationMode.CONTRASTIVE_SEARCH),
    (dict(prompt_lookup_num_tokens=3), None, GenerationMode.ASSISTED_GENERATION),
    (dict(do_sample=True), object(), GenerationMode.ASSISTED_GENERATION),
    (dict(use_mtp=True), None, GenerationMode.ASSISTED_GENERATION),
    (dict(dola_layers="high"), None, GenerationMode.DOLA_GENERATION),
    (dict(dola_layers="high", prompt_lookup_num_tokens=3), None, GenerationMode.ASSISTED_GENERATION),
])
def test_generation_mode(kwargs, assistant, mode):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = GenerationConfig(**kwargs).get_generation_mode(assistant)
    assert found is mode and found == mode.value and str(found) == mode.value


def test_assisted_flags_on_beam_search_are_ignored_with_a_warning():
    with pytest.warns(UserWarning, match="assisted settings are ignored"):
        assert GenerationConfig(num_beams=2, prompt_lookup_num_tokens=3).get_generation_mode() is GenerationMode.BEAM_SEARCH


def test_generation_mode_has_the_nine_transformers_values():
    assert sorted(m.value for m in GenerationMode) == sorted([
        "contrastive_search", "greedy_search", "sample", "assisted_generation", "dola_generation", "beam_search",
        "beam_sample", "constrained_beam_search", "group_beam_search",
    ])


# ------------------------------------------------------------------------------------ files


def test_save_and_load_a_directory(tmp_path):
    config = GenerationConfig(do_sample=True, top_p=0.8, eos_token_id=[1, 2], sequence_bias={(1, 2): -1.0})
    path = config.save_pretrained(tmp_path / "model")
    assert path.endswith("generation_config.json")
    data = json.loads(open(path).read())
    assert data == {"do_sample": True, "top_p": 0.8, "eos_token_id": [1, 2], "sequence_bias": [[[1, 2], -1.0]]}
    assert GenerationConfig.from_pretrained(tmp_path / "model") == config
    assert GenerationConfig.from_pretrained(path) == config  # a file path works too
    config.save_pretrained(tmp_path, config_file_name="other.json")
    assert GenerationConfig.from_pretrained(tmp_path, config_file_name="other.json") == config


def test_from_pretrained_kwargs_override_and_unused_ones_are_returned(tmp_path):
    GenerationConfig(max_new_tokens=3).save_pretrained(tmp_path)
    config, unused = GenerationConfig.from_pretrained(tmp_path, max_new_tokens=9, foo=1, return_unused_kwargs=True,
                                                      revision="main")
    assert config.max_new_tokens == 9 and unused == {"foo": 1}
    with pytest.raises(GenerationConfigError, match="'foo' is not a GenerationConfig field"):
        GenerationConfig.from_pretrained(tmp_path, foo=1)


def test_missing_paths_raise_oserror_naming_them(tmp_path):
    with pytest.raises(OSError, match="nowhere"):
        GenerationConfig.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(OSError, match="generation_config.json"):
        GenerationConfig.from_pretrained(tmp_path)


@pytest.mark.parametrize("text, message", [
    ('{"top_k": 5,\n  "top_p": }', "line 2, column 12"),
    ("[1, 2]", "holds a JSON list"),
    ("", "line 1, column 1"),
])
def test_corrupt_files_name_the_file_and_the_position(tmp_path, text, message):
    (tmp_path / "generation_config.json").write_text(text)
    with pytest.raises(GenerationConfigError) as err:
        GenerationConfig.from_pretrained(tmp_path)
    assert "generation_config.json" in str(err.value) and message in str(err.value)


def test_a_binary_file_is_a_config_error(tmp_path):
    (tmp_path / "generation_config.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(GenerationConfigError, match="not UTF-8"):
        GenerationConfig.from_pretrained(tmp_path)


def test_bad_values_in_a_file_name_the_file(tmp_path):
    (tmp_path / "generation_config.json").write_text('{"top_p": 7}')
    with pytest.raises(GenerationConfigError, match=r"generation_config.json: top_p=7 is outside \(0, 1\]"):
        GenerationConfig.from_pretrained(tmp_path)


def test_custom_entries_and_metadata_survive_a_round_trip(tmp_path):
    whisper = {"alignment_heads": [[1, 0], [2, 3]], "lang_to_id": {"<|en|>": 50259}, "is_multilingual": True,
               "max_length": 448, "transformers_version": "4.31.0", "_from_model_config": True, "_commit_hash": "x"}
    (tmp_path / "generation_config.json").write_text(json.dumps(whisper))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # names far from any field are kept silently
        config = GenerationConfig.from_pretrained(tmp_path)
    assert config.alignment_heads == [[1, 0], [2, 3]] and config.max_length == 448
    assert config.transformers_version == "4.31.0" and config._from_model_config is True
    config.save_pretrained(tmp_path / "again")
    again = json.loads((tmp_path / "again" / "generation_config.json").read_text())
    assert again == {k: v for k, v in whisper.items() if k != "_commit_hash"}


def test_a_near_miss_key_in_a_file_warns():
    with pytest.warns(UserWarning, match="'temprature' is kept as a custom entry. Did you mean 'temperature'"):
        config = GenerationConfig.from_dict({"temprature": 0.5})
    assert config.custom_entries() == {"temprature": 0.5}


def test_save_refuses_settings_that_would_be_ignored_unless_loaded_unchanged(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = GenerationConfig(temperature=0.7)
        with pytest.raises(GenerationConfigError, match="Fix these issues to save"):
            config.save_pretrained(tmp_path)
        (tmp_path / "generation_config.json").write_text('{"temperature": 0.7}')
        loaded = GenerationConfig.from_pretrained(tmp_path)
        loaded.save_pretrained(tmp_path / "copy")  # published as-is: saved back with a warning only
        loaded.top_k = 3
        with pytest.raises(GenerationConfigError, match="Fix these issues"):
            loaded.save_pretrained(tmp_path / "copy")


def test_compile_config_is_not_saved_but_is_in_json_strings(tmp_path):
    config = GenerationConfig(compile_config=CompileConfig(dynamic=True), max_new_tokens=4)
    assert json.loads(config.to_json_string())["compile_config"]["dynamic"] is True
    assert GenerationConfig.from_dict(json.loads(config.to_json_string())) == config
    config.save_pretrained(tmp_path)
    assert GenerationConfig.from_pretrained(tmp_path) == GenerationConfig(max_new_tokens=4)


def test_objects_json_cannot_hold_are_reported_by_field():
    config = GenerationConfig(constraints=[object()])
    with pytest.raises(GenerationConfigError, match="constraints=.*cannot be written to JSON"):
        config.to_json_string()


def test_to_json_string_options(tmp_path):
    config = GenerationConfig.from_dict({"max_new_tokens": 2, "transformers_version": "5.0.0"})
    assert json.loads(config.to_json_string(ignore_metadata=True)) == {"max_new_tokens": 2}
    full = json.loads(config.to_json_string(use_diff=False))
    assert set(BUILTIN_FIELD_NAMES) <= set(full) and full["top_p"] is None
    config.to_json_file(tmp_path / "c.json")
    assert GenerationConfig.from_pretrained(tmp_path / "c.json") == config


# ------------------------------------------------------------------------------------ model configs


def test_from_model_config_reads_generation_fields_and_the_decoder():
    model_config = {
        "hidden_size": 64, "bos_token_id": 0, "eos_token_id": None, "output_scores": True,
        "decoder": {"eos_token_id": 2, "pad_token_id": 1, "num_layers": 3},
    }
    config = GenerationConfig.from_model_config(model_config)
    assert config.to_diff_dict() == {
        "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1, "output_scores": True,
        "return_dict_in_generate": True, "_from_model_config": True,
    }
    assert config.custom_entries() == {}


def test_from_model_config_accepts_objects():
    class TextConfig:
        def to_dict(self):
            return {"eos_token_id": 7}

    class Composite:
        def to_dict(self):
            return {"bos_token_id": 1, "vocab_size": 10}

        def get_text_config(self, decoder=False):
            return TextConfig()

    config = GenerationConfig.from_model_config(Composite())
    assert (config.bos_token_id, config.eos_token_id, config._from_model_config) == (1, 7, True)


# ------------------------------------------------------------------------------------ nested settings


def test_watermarking_dicts_are_converted_by_their_keys():
    green = GenerationConfig(watermarking_config={"bias": 3.0})
    assert green.watermarking_config == WatermarkingConfig(bias=3.0)
    synth = GenerationConfig(watermarking_config={"ngram_len": 5, "keys": [654, 400]})
    assert isinstance(synth.watermarking_config, SynthIDTextWatermarkingConfig)
    assert synth.to_dict()["watermarking_config"] == {
        "ngram_len": 5, "keys": [654, 400], "context_history_size": 1024, "sampling_table_seed": 0,
        "sampling_table_size": 65536, "skip_first_ngram_calls": False, "debug_mode": False,
    }
    assert WatermarkingConfig.from_dict(WatermarkingConfig().to_dict()) == WatermarkingConfig()
    assert WatermarkingConfig().to_dict() == {
        "greenlist_ratio": 0.25, "bias": 2.0, "hashing_key": 15485863, "seeding_scheme": "lefthash", "context_width": 1,
    }


def test_compile_config_defaults_and_dict():
    assert CompileConfig().to_dict() == {
        "fullgraph": False, "dynamic": None, "backend": "inductor", "mode": "reduce-overhead", "options": None,
    }
    assert GenerationConfig(compile_config={"fullgraph": True}).compile_config == CompileConfig(fullgraph=True)


# ------------------------------------------------------------------------------------ object protocol


def test_copies_are_independent_and_equal():
    config = GenerationConfig.from_dict({"eos_token_id": [1, 2], "alignment_heads": [[1, 2]], "min_length": 4})
    for other in (copy.copy(config), copy.deepcopy(config), pickle.loads(pickle.dumps(config))):
        assert other == config and hash(other) == hash(config)
        other.alignment_heads = [[9]]
        other.min_length = 5
    assert config.alignment_heads == [[1, 2]] and config.min_length == 4
    deep = copy.deepcopy(config)
    deep.eos_token_id.append(3)
    assert config.eos_token_id == [1, 2]


def test_equality_ignores_metadata_and_the_form_of_equal_values():
    a = GenerationConfig(sequence_bias={(1, 2): 0.5}, exponential_decay_length_penalty=(3, 1.5))
    b = GenerationConfig.from_dict({"sequence_bias": [[[1, 2], 0.5]], "exponential_decay_length_penalty": [3, 1.5],
                                    "transformers_version": "5.0"})
    assert a == b and a != GenerationConfig() and a != "not a config"


def test_repr_shows_what_is_set():
    assert repr(GenerationConfig(top_k=3, do_sample=True)) == "GenerationConfig(do_sample=True, top_k=3)"
    assert repr(GenerationConfig()) == "GenerationConfig()"


def test_public_names_are_exported_by_genplug():
    assert genplug.GenerationConfig is GenerationConfig
    assert genplug.GenerationMode is GenerationMode
    assert genplug.CompileConfig is CompileConfig and genplug.WatermarkingConfig is WatermarkingConfig


def test_the_docs_describe_every_field():
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[2] / "docs" / "config.md").read_text()
    missing = [name for name in sorted(BUILTIN_FIELD_NAMES) if f"| `{name}` |" not in docs]
    assert not missing, f"docs/config.md has no table row for {missing}"
    for name, value in GenerationConfig.default_values().items():
        row = next(line for line in docs.splitlines() if line.startswith(f"| `{name}` |"))
        default_cell = row.split("|")[2].strip().strip("`")
        assert default_cell in (repr(value), json.dumps(value)), (name, default_cell)
