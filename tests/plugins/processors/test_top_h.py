"""TopHLogitsWarper and its factory."""

import math

import pytest
import torch

import genplug
from genplug.errors import GenerationConfigError

from processor_testing import config, context, factory, kept


def test_keeps_tokens_while_their_entropy_fits_the_budget():
    probs = torch.tensor([0.5, 0.25, 0.15, 0.1], dtype=torch.float64)
    terms = -probs * probs.log()  # 0.347, 0.347, 0.285, 0.230: cumulative shares 0.29, 0.57, 0.81, 1
    scores = probs.log().float()[None]
    for top_h in (0.2, 0.3, 0.6, 0.85):
        expected = (terms.cumsum(0) <= top_h * terms.sum()) | (torch.arange(4) == 0)
        assert kept(genplug.TopHLogitsWarper(top_h)(None, scores))[0].tolist() == expected.tolist()


def test_only_the_hundred_most_likely_tokens_are_candidates():
    scores = torch.linspace(0, -1, 300)[None]
    assert int(kept(genplug.TopHLogitsWarper(1.0)(None, scores)).sum()) <= 100


@pytest.mark.parametrize("fields, built", [
    (dict(do_sample=True, top_h=0.4), True),
    (dict(do_sample=True), False),
    (dict(do_sample=False, top_h=0.4), False),
])
def test_factory(fields, built):
    assert (factory("top_h")(config(**fields), context()) is not None) == built


@pytest.mark.parametrize("bad", [0.0, 1.5, math.nan])
def test_invalid_values_name_the_field(bad):
    with pytest.raises(GenerationConfigError, match=r"top_h="):
        genplug.TopHLogitsWarper(bad)
