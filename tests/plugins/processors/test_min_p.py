"""MinPLogitsWarper and its factory."""

import math

import pytest
import torch

import genplug
from genplug.errors import GenerationConfigError

from processor_testing import config, context, factory, kept


def test_keeps_tokens_at_least_min_p_times_as_likely_as_the_best():
    scores = torch.tensor([[math.log(p) for p in (0.5, 0.3, 0.12, 0.08)]])
    assert kept(genplug.MinPLogitsWarper(0.2)(None, scores)).tolist() == [[True, True, True, False]]
    assert kept(genplug.MinPLogitsWarper(0.7)(None, scores)).tolist() == [[True, False, False, False]]


def test_min_tokens_to_keep():
    scores = torch.tensor([[10.0, 0.0, -1.0, -2.0]])
    assert kept(genplug.MinPLogitsWarper(0.5, min_tokens_to_keep=3)(None, scores)).tolist() == [
        [True, True, True, False]]


@pytest.mark.parametrize("fields, built", [
    (dict(do_sample=True, min_p=0.05), True),
    (dict(do_sample=True, min_p=0.0), True),  # transformers builds it for any value that is set
    (dict(do_sample=True), False),
    (dict(do_sample=False, min_p=0.05), False),
])
def test_factory(fields, built):
    assert (factory("min_p")(config(**fields), context()) is not None) == built


@pytest.mark.parametrize("bad", [1.5, -0.1, math.nan])
def test_invalid_values_name_the_field(bad):
    with pytest.raises(GenerationConfigError, match=r"min_p="):
        genplug.MinPLogitsWarper(bad)
