"""Minimum length and minimum new tokens, and their factories."""

import pytest
import torch

import genplug
from genplug.errors import GenerationConfigError

from processor_testing import config, context, factory


def _eos_blocked(processor, length):
    return torch.isneginf(processor(torch.ones(1, length).long(), torch.zeros(1, 6)))[0, [2, 4]].tolist()


def test_min_length_counts_the_prompt():
    processor = genplug.MinLengthLogitsProcessor(5, [2, 4])
    assert _eos_blocked(processor, 4) == [True, True]
    assert _eos_blocked(processor, 5) == [False, False]


def test_min_new_tokens_counts_after_the_prompt():
    processor = genplug.MinNewTokensLengthLogitsProcessor(3, 2, [2, 4])
    assert _eos_blocked(processor, 4) == [True, True]
    assert _eos_blocked(processor, 5) == [False, False]


def test_factories_need_eos():
    prompt = context(torch.ones(1, 7, dtype=torch.long), eos=[2, 4])
    both = config(min_length=9, min_new_tokens=3)
    assert factory("min_length")(both, prompt).min_length == 9
    new_tokens = factory("min_new_tokens")(both, prompt)
    assert (new_tokens.prompt_length_to_skip, new_tokens.min_new_tokens) == (7, 3)
    no_eos = context(torch.ones(1, 7, dtype=torch.long))
    assert factory("min_length")(both, no_eos) is None and factory("min_new_tokens")(both, no_eos) is None
    assert factory("min_length")(config(), prompt) is None  # 0 by default


@pytest.mark.parametrize("bad", [-1, 1.5, "3"])
def test_invalid_lengths_name_the_field(bad):
    with pytest.raises(GenerationConfigError, match=r"^min_length="):
        genplug.MinLengthLogitsProcessor(bad, 2)
    with pytest.raises(GenerationConfigError, match=r"^min_new_tokens="):
        genplug.MinNewTokensLengthLogitsProcessor(0, bad, 2)
