"""TypicalLogitsWarper and its factory."""

import math

import pytest
import torch

import genplug
from genplug.errors import GenerationConfigError

from processor_testing import config, context, factory, kept


def test_keeps_the_tokens_closest_to_the_entropy_first():
    # probabilities 0.4, 0.3, 0.2, 0.1: entropy 1.28 nats; surprises 0.92, 1.20, 1.61, 2.30, so the
    # distances to the entropy rank the tokens 0.3 (0.08), 0.2 (0.33), 0.4 (0.36), 0.1 (1.02)
    scores = torch.tensor([[math.log(p) for p in (0.4, 0.3, 0.2, 0.1)]])
    assert kept(genplug.TypicalLogitsWarper(0.25)(None, scores)).tolist() == [[False, True, False, False]]
    assert kept(genplug.TypicalLogitsWarper(0.45)(None, scores)).tolist() == [[False, True, True, False]]
    assert kept(genplug.TypicalLogitsWarper(0.6)(None, scores)).tolist() == [[True, True, True, False]]


def test_min_tokens_to_keep_counts_in_typicality_order():
    scores = torch.tensor([[math.log(p) for p in (0.4, 0.3, 0.2, 0.1)]])
    out = genplug.TypicalLogitsWarper(0.25, min_tokens_to_keep=2)(None, scores)
    assert kept(out).tolist() == [[False, True, True, False]]


@pytest.mark.parametrize("fields, built", [
    (dict(do_sample=True, typical_p=0.9), True),
    (dict(do_sample=True), False),
    (dict(do_sample=False, typical_p=0.9), False),
])
def test_factory(fields, built):
    assert (factory("typical_p")(config(**fields), context()) is not None) == built


@pytest.mark.parametrize("bad", [0.0, 1.0, 1.5, math.nan])
def test_invalid_values_name_the_field(bad):
    with pytest.raises(GenerationConfigError, match=r"typical_p="):
        genplug.TypicalLogitsWarper(bad)
