"""EpsilonLogitsWarper and its factory."""

import math

import pytest
import torch

import genplug
from genplug.errors import GenerationConfigError

from processor_testing import config, context, factory, kept


def test_drops_tokens_below_epsilon_but_keeps_the_best_ones():
    scores = torch.tensor([[math.log(p) for p in (0.6, 0.3, 0.08, 0.02)]])
    assert kept(genplug.EpsilonLogitsWarper(0.05)(None, scores)).tolist() == [[True, True, True, False]]
    assert kept(genplug.EpsilonLogitsWarper(0.9)(None, scores)).tolist() == [[True, False, False, False]]
    out = genplug.EpsilonLogitsWarper(0.9, min_tokens_to_keep=2)(None, scores)
    assert kept(out).tolist() == [[True, True, False, False]]


@pytest.mark.parametrize("fields, built", [
    (dict(do_sample=True, epsilon_cutoff=3e-4), True),
    (dict(do_sample=True), False),  # 0.0 by default
    (dict(do_sample=False, epsilon_cutoff=3e-4), False),
])
def test_factory(fields, built):
    assert (factory("epsilon_cutoff")(config(**fields), context()) is not None) == built


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, math.nan])
def test_invalid_values_name_the_field(bad):
    with pytest.raises(GenerationConfigError, match=r"epsilon_cutoff="):
        genplug.EpsilonLogitsWarper(bad)
