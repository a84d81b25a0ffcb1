"""EtaLogitsWarper and its factory."""

import math

import pytest
import torch

import genplug
from genplug.errors import GenerationConfigError

from processor_testing import config, context, factory, kept


def test_cutoff_shrinks_with_the_entropy():
    # A flat distribution over 1000 tokens has high entropy: eta = sqrt(eps) * exp(-H) is tiny,
    # so nothing is dropped although every probability (0.001) is below eps.
    flat = torch.zeros(1, 1000)
    assert kept(genplug.EtaLogitsWarper(0.002)(None, flat)).all()
    # A peaked one has low entropy: eta = eps, which drops the 0.001 tokens.
    peaked = torch.tensor([[math.log(0.9)] + [math.log(0.001)] * 100])
    assert kept(genplug.EtaLogitsWarper(0.002)(None, peaked)).tolist() == [[True] + [False] * 100]


def test_matches_its_formula():
    scores = torch.randn(3, 50) * 2
    epsilon = 0.01
    probs = scores.double().softmax(-1)
    entropy = -(probs * probs.log()).sum(-1, keepdim=True)
    eta = torch.clamp(math.sqrt(epsilon) * torch.exp(-entropy), max=epsilon)
    expected = (probs >= eta) | (scores == scores.amax(-1, keepdim=True))
    assert torch.equal(kept(genplug.EtaLogitsWarper(epsilon)(None, scores)), expected)


@pytest.mark.parametrize("fields, built", [
    (dict(do_sample=True, eta_cutoff=3e-4), True),
    (dict(do_sample=True), False),
    (dict(do_sample=False, eta_cutoff=3e-4), False),
])
def test_factory(fields, built):
    assert (factory("eta_cutoff")(config(**fields), context()) is not None) == built


@pytest.mark.parametrize("bad", [0.0, 1.0, 2.0, math.nan])
def test_invalid_values_name_the_field(bad):
    with pytest.raises(GenerationConfigError, match=r"eta_cutoff="):
        genplug.EtaLogitsWarper(bad)
