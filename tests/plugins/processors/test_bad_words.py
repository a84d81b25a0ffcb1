"""NoBadWordsLogitsProcessor and its factory, checked against a plain Python definition."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import genplug
from genplug.errors import GenerationConfigError

from processor_testing import config, context, factory

words = st.lists(st.lists(st.integers(0, 5), min_size=1, max_size=3), min_size=1, max_size=6)


@settings(max_examples=60, deadline=None)
@given(words, st.integers(1, 3), st.integers(0, 6), st.integers(0, 1000))
def test_bans_the_token_completing_any_bad_word(bad_words, batch, length, seed):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 6, (batch, length), generator=generator)
    scores = torch.randn(batch, 6, generator=generator)
    out = genplug.NoBadWordsLogitsProcessor(bad_words)(ids, scores)
    expected = scores.clone()
    for row in range(batch):
        history = ids[row].tolist()
        for word in bad_words:
            prefix = word[:-1]
            if len(prefix) <= len(history) and history[len(history) - len(prefix):] == prefix:
                expected[row, word[-1]] = float("-inf")
    assert torch.equal(out, expected)


def test_single_token_eos_entries_are_dropped_but_longer_ones_kept():
    processor = genplug.NoBadWordsLogitsProcessor([[2], [3], [1, 2]], eos_token_id=[2, 7])
    out = processor(torch.tensor([[1]]), torch.zeros(1, 5))
    assert torch.isneginf(out[0]).tolist() == [False, False, True, True, False]


def test_nothing_left_after_dropping_eos_is_a_no_op():
    scores = torch.randn(1, 4)
    assert torch.equal(genplug.NoBadWordsLogitsProcessor([[2]], eos_token_id=2)(torch.tensor([[0]]), scores), scores)


def test_factory_filters_this_calls_eos():
    processor = factory("bad_words_ids")(config(bad_words_ids=[[2], [4]]), context(eos=2, vocab_size=8))
    assert list(processor.sequence_bias) == [(4,)]
    assert factory("bad_words_ids")(config(), context()) is None


@pytest.mark.parametrize("bad", [[], [[]], [1, 2], [[1, -2]], [[1.0]], [["a"]], "[[1]]", [[True]]])
def test_malformed_values_name_the_field_and_value(bad):
    with pytest.raises(GenerationConfigError, match=r"^bad_words_ids=") as info:
        genplug.NoBadWordsLogitsProcessor(bad)
    assert repr(bad) in str(info.value)


def test_ids_outside_the_vocabulary_are_refused_when_built():
    with pytest.raises(GenerationConfigError, match=r"bad_words_ids=\[\[3\], \[9, 40\]\].*\[40\].*32 tokens"):
        factory("bad_words_ids")(config(bad_words_ids=[[3], [9, 40]]), context(vocab_size=32))
