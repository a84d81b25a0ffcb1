"""Token suppression, always and at the first generated position, and the begin_index rule."""

import pytest
import torch

import genplug
from genplug.errors import GenerationConfigError

from processor_testing import config, context, factory


def test_suppress_tokens_always():
    out = genplug.SuppressTokensLogitsProcessor([1, 3])(torch.ones(2, 7).long(), torch.zeros(2, 5))
    assert torch.isneginf(out).tolist() == [[False, True, False, True, False]] * 2


def test_begin_suppress_only_at_begin_index():
    processor = genplug.SuppressTokensAtBeginLogitsProcessor([0], begin_index=3)
    assert torch.isneginf(processor(torch.ones(1, 3).long(), torch.zeros(1, 4)))[0, 0]
    assert not torch.isneginf(processor(torch.ones(1, 4).long(), torch.zeros(1, 4))).any()
    processor.set_begin_index(4)
    assert torch.isneginf(processor(torch.ones(1, 4).long(), torch.zeros(1, 4)))[0, 0]


@pytest.mark.parametrize("prompt_length, forced_bos, begin_index", [(5, None, 5), (5, 0, 5), (1, None, 1), (1, 0, 2)])
def test_begin_index_is_the_prompt_length_plus_a_forced_bos_of_a_one_token_prompt(prompt_length, forced_bos,
                                                                                   begin_index):
    build_context = context(torch.ones(1, prompt_length, dtype=torch.long))
    processor = factory("begin_suppress_tokens")(config(begin_suppress_tokens=[3], forced_bos_token_id=forced_bos),
                                                 build_context)
    assert processor.begin_index == begin_index


def test_factories_build_only_when_set():
    assert factory("suppress_tokens")(config(), context()) is None
    assert factory("begin_suppress_tokens")(config(), context()) is None
    assert factory("suppress_tokens")(config(suppress_tokens=[]), context()) is not None  # as transformers


@pytest.mark.parametrize("field", ["suppress_tokens", "begin_suppress_tokens"])
def test_ids_outside_the_vocabulary_are_refused_when_built(field):
    with pytest.raises(GenerationConfigError, match=field + r"=\[1, 99\].*\[99\]"):
        factory(field)(config(**{field: [1, 99]}), context(vocab_size=32))


def test_negative_ids_name_the_field():
    with pytest.raises(GenerationConfigError, match=r"^suppress_tokens=\[-1\]"):
        genplug.SuppressTokensLogitsProcessor([-1])
