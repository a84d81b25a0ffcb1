"""The contrib cache backend, loaded in-process from its source folder (the install test covers pip)."""

import importlib.util
from pathlib import Path

import pytest
import torch

import genplug
from genplug.errors import GenerationConfigError
from helpers.tiny_lm import TinyCausalLM

SOURCE = Path(__file__).resolve().parents[2] / "contrib" / "genplug-half-cache" / "genplug_half_cache" / "__init__.py"


@pytest.fixture(scope="module")
def pm():
    spec = importlib.util.spec_from_file_location("genplug_half_cache_under_test", SOURCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return genplug.new_plugin_manager(autoload=False, plugins=[module])


def test_selected_by_name_and_agrees_with_dynamic(pm):
    model = TinyCausalLM(vocab_size=64, seed=3)
    ids = torch.randint(4, 64, (2, 6), generator=torch.Generator().manual_seed(0))
    kw = dict(max_new_tokens=24, eos_token_id=None, plugin_manager=pm, return_dict_in_generate=True)
    half = genplug.generate(model, ids, cache_implementation="half_precision", **kw)
    full = genplug.generate(model, ids, **kw)
    assert type(half.past_key_values).__name__ == "HalfPrecisionCache"
    assert half.past_key_values.keys[0].dtype == torch.bfloat16
    agreement = (half.sequences[:, 6:] == full.sequences[:, 6:]).float().mean().item()
    assert agreement >= 0.9


def test_float16_storage_and_bad_dtype(pm):
    model = TinyCausalLM(vocab_size=64, seed=3)
    ids = torch.tensor([[5, 6, 7]])
    out = genplug.generate(model, ids, cache_implementation="half_precision", cache_config={"dtype": "float16"},
                           max_new_tokens=3, plugin_manager=pm, return_dict_in_generate=True)
    assert out.past_key_values.keys[0].dtype == torch.float16
    with pytest.raises(GenerationConfigError, match="16-bit"):
        genplug.generate(model, ids, cache_implementation="half_precision", cache_config={"dtype": "int8"},
                         max_new_tokens=3, plugin_manager=pm)


def test_beam_search_reorders_it(pm):
    model = TinyCausalLM(vocab_size=64, seed=3)
    ids = torch.tensor([[5, 6, 7]])
    out = genplug.generate(model, ids, cache_implementation="half_precision", num_beams=3, max_new_tokens=5,
                           eos_token_id=None, plugin_manager=pm)
    assert out.shape == (1, 8)
