"""TemperatureLogitsWarper and its factory."""

import math

import pytest
import torch

import genplug
from genplug.errors import GenerationConfigError

from processor_testing import config, context, factory


def test_divides_the_scores():
    scores = torch.tensor([[2.0, -4.0, 0.5]])
    assert torch.equal(genplug.TemperatureLogitsWarper(2.0)(None, scores), torch.tensor([[1.0, -2.0, 0.25]]))


def test_in_place_form_gives_the_same_result():
    scores = torch.randn(3, 11)
    warper = genplug.TemperatureLogitsWarper(0.3)
    assert torch.equal(warper.apply_(None, scores.clone()), warper(None, scores))


@pytest.mark.parametrize("fields, built", [
    (dict(do_sample=True, temperature=0.7), True),
    (dict(do_sample=True), False),  # 1.0 by default
    (dict(do_sample=True, temperature=1.0), False),
    (dict(do_sample=False, temperature=0.7), False),  # greedy: warpers are not built
])
def test_factory_builds_only_when_sampling_with_a_temperature_other_than_one(fields, built):
    processor = factory("temperature")(config(**fields), context())
    assert (processor is not None) == built
    if built:
        assert processor.temperature == fields["temperature"]


def test_zero_temperature_points_to_greedy_decoding():
    with pytest.raises(GenerationConfigError, match=r"temperature=0.*do_sample=False"):
        genplug.TemperatureLogitsWarper(0.0)


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, "hot", None, True])
def test_invalid_temperatures_name_the_field_and_value(bad):
    with pytest.raises(GenerationConfigError, match=r"^temperature=.* is not a finite number > 0"):
        genplug.TemperatureLogitsWarper(bad)


def test_is_argmax_invariant_and_compile_safe():
    assert genplug.TemperatureLogitsWarper.argmax_invariant and genplug.TemperatureLogitsWarper.compile_safe
