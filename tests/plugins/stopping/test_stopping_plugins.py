"""The four built-in criteria as plugins: registration, order, entry points, assembly by the core."""

import importlib
import sys
import types
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings, strategies as st

import genplug
from genplug.pipeline import build_stopping_criteria
from genplug.plugin_manager import GenplugPluginManager
from genplug.plugins.stopping import PUBLIC_CLASSES, eos, max_length, max_time, stop_strings

MODULES = {"max_length": max_length, "max_time": max_time, "stop_strings": stop_strings, "eos": eos}
ORDER = {"max_length": 10, "max_time": 20, "stop_strings": 30, "eos": 40}


@pytest.fixture
def registry():
    pm = GenplugPluginManager()
    for name, module in MODULES.items():
        pm.register(module, name=f"stopping_{name}")
    return pm.registries.stopping_criteria


def test_registered_with_transformers_order(registry):
    assert {name: entry.options["order"] for name, entry in registry.items()} == ORDER
    for entry in registry.values():
        assert entry.options["fields"] and entry.options["description"]


def test_entry_points_are_declared():
    tomllib = pytest.importorskip("tomllib") if sys.version_info >= (3, 11) else pytest.importorskip("tomli")
    pyproject = tomllib.loads((Path(__file__).parents[3] / "pyproject.toml").read_text())
    declared = pyproject["project"]["entry-points"]["genplug"]
    for name, module in MODULES.items():
        assert declared[f"stopping_{name}"] == module.__name__


def test_public_classes_are_importable_from_genplug():
    assert set(PUBLIC_CLASSES) == {"MaxLengthCriteria", "MaxTimeCriteria", "EosTokenCriteria", "StopStringCriteria"}
    for name, module in PUBLIC_CLASSES.items():
        assert getattr(genplug, name) is getattr(importlib.import_module(module), name)


def test_core_assembles_them_in_transformers_order(registry):
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    model = Tokenizer(models.WordLevel(vocab={"a": 0, "b": 1, "abcdef": 2, "<unk>": 3}, unk_token="<unk>"))
    model.decoder = decoders.Metaspace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=model, unk_token="<unk>")
    config = types.SimpleNamespace(max_length=8, max_time=5.0, stop_strings=["ab"], eos_token_id=3)
    context = types.SimpleNamespace(model=None, tokenizer=tokenizer, eos_token_ids=torch.tensor([3]))
    criteria, providers = build_stopping_criteria(registry, config, context)
    # transformers' _get_stopping_criteria order: MaxLength, MaxTime, StopString, EosToken
    assert [type(c).__name__ for c in criteria] == [
        "MaxLengthCriteria", "MaxTimeCriteria", "StopStringCriteria", "EosTokenCriteria"]
    assert criteria.has_eos and criteria.max_length == 8
    ids = torch.tensor([[2, 0, 1], [1, 1, 3], [1, 1, 1]])
    assert criteria(ids, None).tolist() == [True, True, False]


def test_nothing_is_built_for_an_unset_config(registry):
    config = types.SimpleNamespace(max_length=None, max_time=None, stop_strings=None, eos_token_id=None)
    context = types.SimpleNamespace(model=None, tokenizer=None, eos_token_ids=None)
    criteria, _ = build_stopping_criteria(registry, config, context)
    assert list(criteria) == []


@settings(max_examples=40, deadline=None)
@given(answers=st.lists(st.lists(st.booleans(), min_size=3, max_size=3), max_size=4), only_at_max=st.booleans())
def test_the_per_step_list_answers_as_the_whole_list_does(answers, only_at_max):
    """per_step() leaves out criteria that stop only at max_length and ORs the rest starting from the first
    answer (no all-False tensor): row for row the same flags as the full list's OR over the same criteria."""
    from genplug.stopping import StoppingCriteria, StoppingCriteriaList

    class Fixed(StoppingCriteria):
        def __init__(self, rows):
            self.rows = torch.tensor(rows)

        def __call__(self, input_ids, scores, **kwargs):
            return self.rows.clone()

    class AtMaxLength(Fixed):
        stops_only_at_max_length = True

    criteria = [Fixed(rows) for rows in answers]
    full = StoppingCriteriaList(criteria + ([AtMaxLength([True] * 3)] if only_at_max else []))
    per_step = full.per_step()
    assert len(per_step) == len(criteria)
    ids = torch.zeros(3, 2, dtype=torch.long)
    expected = StoppingCriteriaList(criteria)(ids, None)
    flags = per_step(ids, None)
    assert flags.dtype == torch.bool and torch.equal(flags, expected)
    assert torch.equal(expected, torch.tensor(answers).any(0) if answers else torch.zeros(3, dtype=torch.bool))
