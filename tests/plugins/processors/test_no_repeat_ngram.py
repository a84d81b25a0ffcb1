"""N-gram blocking (decoder and encoder), checked against a plain Python definition."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import genplug
from genplug.errors import GenerationConfigError

from processor_testing import config, context, factory


def _banned(history, source, n):
    """Tokens t such that history[-(n-1):] + [t] is an n-gram of ``source`` (both lists)."""
    if len(history) < n - 1:
        return set()
    suffix = tuple(history[len(history) - (n - 1):])
    return {tuple(source[i:i + n])[-1] for i in range(len(source) - n + 1) if tuple(source[i:i + n - 1]) == suffix}


def _expected(scores, rows_and_sources, n):
    expected = scores.clone()
    for row, (history, source) in enumerate(rows_and_sources):
        for token in _banned(history, source, n):
            if token < scores.shape[1]:
                expected[row, token] = float("-inf")
    return expected


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3), st.integers(1, 20), st.integers(1, 4), st.integers(2, 6), st.integers(0, 1000))
def test_bans_exactly_the_tokens_completing_a_seen_ngram(batch, length, n, vocab, seed):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab + 1, (batch, length), generator=generator)  # vocab + 1: one id past the head
    scores = torch.randn(batch, vocab, generator=generator)
    out = genplug.NoRepeatNGramLogitsProcessor(n)(ids, scores)
    rows = [(ids[r].tolist(), ids[r].tolist()) for r in range(batch)]
    assert torch.equal(out, _expected(scores, rows, n))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 2), st.integers(1, 3), st.integers(1, 10), st.integers(1, 12), st.integers(1, 4),
       st.integers(0, 1000))
def test_encoder_variant_bans_ngrams_of_each_rows_encoder_input(batch, beams, length, encoder_length, n, seed):
    generator = torch.Generator().manual_seed(seed)
    encoder = torch.randint(0, 5, (batch, encoder_length), generator=generator)
    ids = torch.randint(0, 5, (batch * beams, length), generator=generator)
    scores = torch.randn(batch * beams, 5, generator=generator)
    out = genplug.EncoderNoRepeatNGramLogitsProcessor(n, encoder)(ids, scores)
    rows = [(ids[r].tolist(), encoder[r // beams].tolist()) for r in range(batch * beams)]
    assert torch.equal(out, _expected(scores, rows, n))


def test_short_history_bans_nothing_and_returns_the_scores():
    scores = torch.randn(1, 4)
    assert genplug.NoRepeatNGramLogitsProcessor(3)(torch.tensor([[1, 2]]), scores) is scores


def test_factories():
    assert factory("no_repeat_ngram_size")(config(), context()) is None
    assert factory("no_repeat_ngram_size")(config(no_repeat_ngram_size=3), context()).ngram_size == 3
    build = factory("encoder_no_repeat_ngram_size")
    assert build(config(encoder_no_repeat_ngram_size=2), context(encoder_input_ids=torch.ones(2, 4).long())) is not None
    with pytest.warns(UserWarning, match="encoder_no_repeat_ngram_size"):
        assert build(config(encoder_no_repeat_ngram_size=2), context()) is None


@pytest.mark.parametrize("bad", [0, -2, 1.5, "3"])
def test_invalid_sizes_name_the_field(bad):
    with pytest.raises(GenerationConfigError, match=r"^no_repeat_ngram_size="):
        genplug.NoRepeatNGramLogitsProcessor(bad)
    with pytest.raises(GenerationConfigError, match=r"^encoder_no_repeat_ngram_size="):
        genplug.EncoderNoRepeatNGramLogitsProcessor(bad, torch.ones(1, 4, dtype=torch.long))
