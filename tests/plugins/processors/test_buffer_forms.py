"""The graph loop's forms of processors that read the tokens (``at_prefix``) or their count
(``at_length``) equal the processors' own call on the first ``length`` tokens, bit for bit.

Oracle: each processor's ``__call__``, which the parity suite checks against transformers. Property:
whatever the buffer holds past ``length`` (the graph loop leaves old or filler tokens there) changes nothing.
"""

import torch
from hypothesis import given, settings, strategies as st

from genplug.plugins.processors.bad_words import NoBadWordsLogitsProcessor
from genplug.plugins.processors.exponential_decay import ExponentialDecayLengthPenalty
from genplug.plugins.processors.forced_tokens import ForcedBOSTokenLogitsProcessor, ForcedEOSTokenLogitsProcessor
from genplug.plugins.processors.no_repeat_ngram import EncoderNoRepeatNGramLogitsProcessor, NoRepeatNGramLogitsProcessor
from genplug.plugins.processors.sequence_bias import SequenceBiasLogitsProcessor
from genplug.plugins.processors.suppress_tokens import SuppressTokensAtBeginLogitsProcessor

VOCAB = 12
WIDTH = 14  # the buffer's columns

token = st.integers(0, VOCAB - 1)
words = st.lists(st.lists(token, min_size=1, max_size=3), min_size=1, max_size=4)


def processors(draw):
    kind = draw(st.sampled_from(["ngram", "encoder ngram", "bad words", "sequence bias", "bos", "eos",
                                 "begin suppress", "decay"]))
    if kind == "ngram":
        return NoRepeatNGramLogitsProcessor(draw(st.integers(1, 4)))
    if kind == "encoder ngram":
        encoder = torch.tensor(draw(st.lists(st.lists(token, min_size=5, max_size=5), min_size=1, max_size=1)))
        return EncoderNoRepeatNGramLogitsProcessor(draw(st.integers(1, 4)), encoder)
    if kind == "bad words":
        return NoBadWordsLogitsProcessor(draw(words), eos_token_id=draw(st.one_of(st.none(), token)))
    if kind == "sequence bias":
        pairs = {tuple(w): draw(st.floats(-4, 4)) for w in draw(words)}
        return SequenceBiasLogitsProcessor(pairs)
    if kind == "bos":
        return ForcedBOSTokenLogitsProcessor(draw(token))
    if kind == "eos":
        return ForcedEOSTokenLogitsProcessor(draw(st.integers(2, WIDTH + 1)), draw(token))
    if kind == "begin suppress":
        return SuppressTokensAtBeginLogitsProcessor(draw(st.lists(token, min_size=1, max_size=3)), draw(st.integers(1, WIDTH)))
    return ExponentialDecayLengthPenalty((draw(st.integers(0, 6)), draw(st.floats(0.5, 2.0))), draw(token),
                                         draw(st.integers(0, 4)))


@settings(max_examples=150, deadline=None)
@given(data=st.data(), batch=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_buffer_form_equals_the_call_on_the_prefix(data, batch, seed):
    processor = processors(data.draw)
    length = data.draw(st.integers(1, WIDTH), label="length")
    g = torch.Generator().manual_seed(seed)
    buffer = torch.randint(0, VOCAB, (batch, WIDTH), generator=g)
    buffer[:, :length] = torch.randint(0, 4, (batch, length), generator=g)  # few distinct ids: n-grams repeat
    scores = torch.randn(batch, VOCAB, generator=g)
    expected = processor(buffer[:, :length], scores.clone())
    if processor.history_use == "prefix":
        got = processor.at_prefix(buffer, torch.tensor(length), scores.clone())
    else:
        assert processor.history_use == "length"
        got = processor.at_length(torch.tensor(length), scores.clone())
    assert torch.equal(got, expected)


def test_the_buffer_forms_leave_their_input_unchanged():
    scores = torch.randn(2, VOCAB)
    kept = scores.clone()
    buffer = torch.tensor([[1, 2, 1, 2, 1] + [0] * (WIDTH - 5)] * 2)
    for processor in (NoRepeatNGramLogitsProcessor(2), NoBadWordsLogitsProcessor([[2], [1, 3]]),
                      SequenceBiasLogitsProcessor({(2, 1): 1.0})):
        processor.at_prefix(buffer, torch.tensor(5), scores)
    ForcedBOSTokenLogitsProcessor(3).at_length(torch.tensor(1), scores)
    assert torch.equal(scores, kept)
