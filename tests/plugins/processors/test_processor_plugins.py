"""The processor plugins as a whole: registration, stages, order, public names, third-party slots."""

import warnings
from importlib import metadata
from pathlib import Path

import pytest

import genplug
from genplug.processing import LogitsProcessor, order_entries
from genplug.plugins.processors import PUBLIC_CLASSES

from processor_testing import build_all, config, context, registry

ORDER = [  # transformers' _get_logits_processor order, by config field
    "guidance_scale", "sequence_bias", "encoder_repetition_penalty", "repetition_penalty", "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size", "bad_words_ids", "min_length", "min_new_tokens", "prefix_allowed_tokens_fn",
    "forced_bos_token_id", "forced_eos_token_id", "remove_invalid_values", "exponential_decay_length_penalty",
    "suppress_tokens", "begin_suppress_tokens", "temperature", "top_h", "top_k", "top_p", "min_p", "typical_p",
    "epsilon_cutoff", "eta_cutoff", "synthid_watermarking", "watermarking_config",
    "renormalize_logits",
]
PROCESSOR_MODULES = sorted(p.stem for p in Path(genplug.plugins.processors.__file__).parent.glob("*.py")
                           if p.stem not in ("__init__", "chaining", "enabling", "history", "masking", "truncation",
                                             "truncation_kernels", "validation", "watermark_detector",
                                             "synthid_detector"))


def test_registered_names_and_order():
    builtin = [e for e in order_entries(registry().values()) if e.plugin.startswith("processor_")]
    assert [e.name for e in builtin] == ORDER


def test_one_entry_point_per_processor_module():
    points = {ep.name: ep.value for ep in metadata.entry_points(group="genplug") if ep.name.startswith("processor_")}
    assert points == {f"processor_{m}": f"genplug.plugins.processors.{m}" for m in PROCESSOR_MODULES}


def test_every_entry_documents_its_fields():
    for name in ORDER:
        entry = registry()[name]
        assert entry.options["fields"] and entry.options["description"], name


@pytest.mark.parametrize("name", sorted(PUBLIC_CLASSES))
def test_public_classes_resolve_from_the_top_level_package(name):
    cls = getattr(genplug, name)
    assert cls.__name__ == name and issubclass(cls, LogitsProcessor)
    assert isinstance(cls.compile_safe, bool) and isinstance(cls.argmax_invariant, bool)


class ThirdPartyWarper(LogitsProcessor):
    def __call__(self, input_ids, scores):
        return scores


class ThirdPartyPlugin:
    """A processor a plugin slots between top-k and top-p by naming them."""

    @genplug.hookimpl
    def genplug_register_logits_processors(self, register):
        register("my_cutoff", lambda cfg, ctx: ThirdPartyWarper(), stage="truncation", after=("top_k",),
                 before=("top_p",), fields=(), description="test")


def test_a_third_party_processor_slots_in_by_stage_and_neighbours():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = genplug.new_plugin_manager(autoload=False, plugins=[ThirdPartyPlugin()])
    names = [e.name for e in order_entries(pm.registries.logits_processors.values())]
    assert names.index("top_k") < names.index("my_cutoff") < names.index("top_p")
    with genplug.use_plugin_manager(pm):
        built = build_all(config(do_sample=True, top_k=5, top_p=0.5), context())
    assert [type(p).__name__ for p in built] == ["TopKLogitsWarper", "ThirdPartyWarper", "TopPLogitsWarper"]
