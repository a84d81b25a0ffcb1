"""TopPLogitsWarper and its factory."""

import math

import pytest
import torch

import genplug
from genplug.errors import GenerationConfigError

from processor_testing import config, context, factory, kept


def _logits(probs):
    return torch.tensor([[math.log(p) for p in probs]])


def test_keeps_the_smallest_prefix_reaching_the_mass():
    scores = _logits([0.5, 0.3, 0.15, 0.05])
    assert kept(genplug.TopPLogitsWarper(0.7)(None, scores)).tolist() == [[True, True, False, False]]
    assert kept(genplug.TopPLogitsWarper(0.85)(None, scores)).tolist() == [[True, True, True, False]]
    assert kept(genplug.TopPLogitsWarper(0.4)(None, scores)).tolist() == [[True, False, False, False]]


def test_min_tokens_to_keep_wins_over_the_mass():
    scores = _logits([0.9, 0.05, 0.03, 0.02])
    assert int(kept(genplug.TopPLogitsWarper(0.5, min_tokens_to_keep=3)(None, scores)).sum()) == 3


def test_a_tie_at_the_boundary_is_kept_whole():
    scores = _logits([0.4, 0.2, 0.2, 0.2])
    assert kept(genplug.TopPLogitsWarper(0.5)(None, scores)).all()


def test_top_p_one_keeps_everything_even_underflowing_tokens():
    scores = torch.tensor([[0.0, -200.0, -1e30]])
    assert torch.equal(genplug.TopPLogitsWarper(1.0)(None, scores), scores)


def test_rows_of_minus_infinity_stay_as_they_are():
    scores = torch.full((2, 4), float("-inf"))
    assert torch.equal(genplug.TopPLogitsWarper(0.5)(None, scores), scores)


@pytest.mark.parametrize("fields, built", [
    (dict(do_sample=True, top_p=0.9), True),
    (dict(do_sample=True, top_p=1.0), False),
    (dict(do_sample=True), False),
    (dict(do_sample=False, top_p=0.9), False),
])
def test_factory(fields, built):
    assert (factory("top_p")(config(**fields), context()) is not None) == built


def test_factory_keeps_n_eos_plus_one_with_beam_sampling():
    processor = factory("top_p")(config(do_sample=True, top_p=0.5, num_beams=2), context(eos=[1, 2, 3]))
    assert processor.min_tokens_to_keep == 4


@pytest.mark.parametrize("bad", [1.5, -0.1, math.nan, "0.9"])
def test_invalid_values_name_the_field(bad):
    with pytest.raises(GenerationConfigError, match=r"top_p=.*probability mass"):
        genplug.TopPLogitsWarper(bad)
