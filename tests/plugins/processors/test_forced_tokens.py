"""Forced BOS / EOS tokens and their factories."""

import pytest
import torch

import genplug
from genplug.errors import GenerationConfigError
from genplug.processing import LogitsProcessorList

from processor_testing import config, context, factory


def _only(scores, tokens):
    expected = torch.full_like(scores, float("-inf"))
    expected[:, tokens] = 0.0
    return expected


def test_forced_bos_at_length_one_only():
    processor = genplug.ForcedBOSTokenLogitsProcessor(2)
    scores = torch.randn(2, 5)
    assert torch.equal(processor(torch.ones(2, 1).long(), scores), _only(scores, [2]))
    assert processor(torch.ones(2, 2).long(), scores) is scores


def test_forced_eos_one_step_before_max_length():
    processor = genplug.ForcedEOSTokenLogitsProcessor(6, [1, 3])
    scores = torch.randn(2, 5)
    assert torch.equal(processor(torch.ones(2, 5).long(), scores), _only(scores, [1, 3]))
    assert processor(torch.ones(2, 4).long(), scores) is scores


def test_in_a_chain_the_forced_scores_replace_everything():
    scores = torch.randn(2, 5)
    chain = LogitsProcessorList([genplug.TemperatureLogitsWarper(0.5), genplug.ForcedBOSTokenLogitsProcessor(4)])
    assert torch.equal(chain(torch.ones(2, 1).long(), scores), _only(scores, [4]))


def test_factories_use_the_calls_max_length():
    eos = factory("forced_eos_token_id")(config(forced_eos_token_id=[2, 3], max_length=17), context())
    assert eos.max_length == 17 and eos.eos_token_id.tolist() == [2, 3]
    assert factory("forced_bos_token_id")(config(forced_bos_token_id=0), context()).bos_token_id == 0
    assert factory("forced_bos_token_id")(config(), context()) is None
    assert factory("forced_eos_token_id")(config(), context()) is None


def test_invalid_ids_name_the_field():
    with pytest.raises(GenerationConfigError, match=r"^forced_bos_token_id=-1"):
        genplug.ForcedBOSTokenLogitsProcessor(-1)
    with pytest.raises(GenerationConfigError, match=r"^forced_eos_token_id=\[2, -1\]"):
        genplug.ForcedEOSTokenLogitsProcessor(5, [2, -1])
    with pytest.raises(GenerationConfigError, match=r"forced_bos_token_id=40.*32 tokens"):
        factory("forced_bos_token_id")(config(forced_bos_token_id=40), context(vocab_size=32))
