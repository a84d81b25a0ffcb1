"""Bad input to generate() raises a clear error before any model call."""

import pytest
import torch

import genplug
from genplug.errors import GenerationConfigError, GenerationInputError
from helpers.tiny_lm import TinyCausalLM


@pytest.fixture
def model():
    return TinyCausalLM(vocab_size=32, seed=0)


@pytest.mark.parametrize("ids, message", [
    (torch.tensor([[1.0, 2.0]]), "integer tensor"),
    (torch.tensor([1, 2]), r"expected \(batch, length\)"),
    (torch.zeros((0, 3), dtype=torch.long), "empty batch"),
    (torch.tensor([[1, 40]]), "outside the model's vocabulary"),
    (torch.tensor([[-1, 2]]), "outside the model's vocabulary"),
])
def test_bad_input_ids(model, ids, message):
    with pytest.raises(GenerationInputError, match=message):
        genplug.generate(model, ids, max_new_tokens=2)
    assert model.forward_calls == 0


def test_mismatched_attention_mask(model):
    with pytest.raises(GenerationInputError, match="must match"):
        genplug.generate(model, torch.tensor([[1, 2, 3]]), attention_mask=torch.ones(1, 2, dtype=torch.long),
                         max_new_tokens=2)
    assert model.forward_calls == 0


def test_max_new_tokens_zero(model):
    with pytest.raises(GenerationConfigError, match="max_new_tokens"):
        genplug.generate(model, torch.tensor([[1, 2]]), max_new_tokens=0)


@pytest.mark.parametrize("eos", ["2", 2.5, [1, "x"], True])
def test_eos_that_is_not_int_or_list(model, eos):
    with pytest.raises(GenerationConfigError, match="eos_token_id"):
        genplug.generate(model, torch.tensor([[1, 2]]), max_new_tokens=2, eos_token_id=eos)
    assert model.forward_calls == 0


def test_unknown_kwarg_suggests_the_field(model):
    with pytest.raises(GenerationInputError, match="Did you mean 'max_new_tokens'"):
        genplug.generate(model, torch.tensor([[1, 2]]), max_new_token=2)


def test_prompt_longer_than_max_length(model):
    with pytest.raises(GenerationInputError, match="nothing can be generated"):
        genplug.generate(model, torch.tensor([[1, 2, 3]]), max_length=3)


def test_processor_of_a_type_the_config_builds_is_refused(model):
    from genplug.plugin_manager import get_plugin_manager

    if "temperature" not in get_plugin_manager().registries.logits_processors:
        pytest.skip("temperature processor plugin not installed")
    warper = genplug.TemperatureLogitsWarper(0.5)
    with pytest.raises(GenerationInputError, match="already builds"):
        genplug.generate(model, torch.tensor([[1, 2]]), do_sample=True, temperature=0.7, max_new_tokens=2,
                         logits_processor=genplug.LogitsProcessorList([warper]))


def test_no_prompt_and_no_bos(model):
    with pytest.raises(GenerationInputError, match="bos_token_id"):
        genplug.generate(model, max_new_tokens=2)


def test_an_ignored_flag_is_reported_once_per_call():
    import warnings

    import genplug

    model, tokenizer = genplug.load_model()
    ids = tokenizer(["Once upon a time"], return_tensors="pt")["input_ids"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        genplug.generate(model, ids, max_new_tokens=2, top_k=4)
    assert sum("will be ignored" in str(w.message) for w in caught) == 1
