"""ExponentialDecayLengthPenalty and its factory."""

import pytest
import torch

import genplug
from genplug.errors import GenerationConfigError

from processor_testing import config, context, factory


def test_eos_scores_grow_by_their_magnitude_times_factor_power_minus_one():
    processor = genplug.ExponentialDecayLengthPenalty((2, 1.5), [1, 3], 4)  # starts after length 6
    scores = torch.tensor([[0.5, -2.0, 1.0, 4.0]])
    assert torch.equal(processor(torch.ones(1, 6).long(), scores), scores)
    out = processor(torch.ones(1, 8).long(), scores)  # 2 tokens past the start: factor 1.5 ** 2 - 1 = 1.25
    assert torch.equal(out, torch.tensor([[0.5, -2.0 + 2.0 * 1.25, 1.0, 4.0 + 4.0 * 1.25]]))


def test_infinite_eos_scores_are_left_alone():
    processor = genplug.ExponentialDecayLengthPenalty((0, 2.0), [0], 1)
    out = processor(torch.ones(1, 3).long(), torch.tensor([[float("-inf"), 1.0]]))
    assert torch.isneginf(out[0, 0])


def test_factory_counts_from_the_prompt_and_needs_eos():
    processor = factory("exponential_decay_length_penalty")(config(exponential_decay_length_penalty=(3, 1.1)),
                                                            context(torch.ones(1, 5, dtype=torch.long), eos=2))
    assert processor.regulation_start == 8
    with pytest.raises(GenerationConfigError, match=r"eos_token_id=None is not set.*exponential_decay_length_penalty"):
        factory("exponential_decay_length_penalty")(config(exponential_decay_length_penalty=(3, 1.1)), context())


@pytest.mark.parametrize("bad", [(1,), (1.5, 2.0), (-1, 2.0), (1, "x"), 3])
def test_malformed_values_name_the_field(bad):
    with pytest.raises(GenerationConfigError, match=r"^exponential_decay_length_penalty="):
        genplug.ExponentialDecayLengthPenalty(bad, 2, 4)
