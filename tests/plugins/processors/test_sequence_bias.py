"""SequenceBiasLogitsProcessor and its factory, checked against a plain Python definition."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import genplug
from genplug.errors import GenerationConfigError

from processor_testing import config, context, factory

biases = st.dictionaries(st.lists(st.integers(0, 4), min_size=1, max_size=3).map(tuple),
                         st.floats(-5, 5), min_size=1, max_size=6)


@settings(max_examples=60, deadline=None)
@given(biases, st.integers(1, 3), st.integers(0, 5), st.integers(0, 1000))
def test_adds_every_bias_whose_prefix_ends_the_history(sequence_bias, batch, length, seed):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 5, (batch, length), generator=generator)
    scores = torch.randn(batch, 5, generator=generator)
    out = genplug.SequenceBiasLogitsProcessor(sequence_bias)(ids, scores)
    bias = torch.zeros(batch, 5, dtype=torch.float64)
    for row in range(batch):
        history = ids[row].tolist()
        for sequence, value in sequence_bias.items():
            prefix = list(sequence[:-1])
            if len(prefix) <= len(history) and history[len(history) - len(prefix):] == prefix:
                bias[row, sequence[-1]] += value
    torch.testing.assert_close(out.double(), scores.double() + bias, rtol=0, atol=1e-5)


def test_list_form_is_the_dict_form():
    ids, scores = torch.tensor([[1, 2]]), torch.randn(1, 4)
    as_dict = genplug.SequenceBiasLogitsProcessor({(2, 3): 1.0, (0,): -0.5})(ids, scores)
    as_list = genplug.SequenceBiasLogitsProcessor([[[2, 3], 1.0], [[0], -0.5]])(ids, scores)
    assert torch.equal(as_dict, as_list)


def test_factory():
    processor = factory("sequence_bias")(config(sequence_bias={(1, 2): 3.0}), context(vocab_size=8))
    assert processor.sequence_bias == {(1, 2): 3.0}
    assert factory("sequence_bias")(config(), context()) is None


@pytest.mark.parametrize("bad", [{}, [], {"ab": 1.0}, {(1, -2): 1.0}, {(): 1.0}, {(1,): "x"}, {(1.5,): 1.0},
                                 [[[1], 1.0, 2]], [[1, 1.0]], 3])
def test_malformed_values_name_the_field(bad):
    with pytest.raises(GenerationConfigError, match=r"^sequence_bias="):
        genplug.SequenceBiasLogitsProcessor(bad)


def test_ids_outside_the_vocabulary_are_refused_when_built():
    with pytest.raises(GenerationConfigError, match=r"sequence_bias=.*\[8, 9\].*8 tokens"):
        factory("sequence_bias")(config(sequence_bias={(1, 9): 1.0, (8,): 2.0}), context(vocab_size=8))
