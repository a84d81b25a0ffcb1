"""Repetition penalties (decoder and encoder) and their factories."""


import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import genplug
from genplug.errors import GenerationConfigError

from processor_testing import config, context, factory


def _penalised(scores, ids, penalty):
    """The definition, one row and one distinct token at a time."""
    expected = scores.clone()
    for row in range(scores.shape[0]):
        for token in set(ids[row].tolist()):
            if 0 <= token < scores.shape[1]:
                value = scores[row, token]
                expected[row, token] = value * penalty if value < 0 else value / penalty
    return expected


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 3), st.integers(1, 12), st.integers(2, 20), st.floats(0.2, 3.0), st.integers(0, 100))
def test_each_seen_token_is_penalised_once(batch, length, vocab, penalty, seed):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab + 3, (batch, length), generator=generator)  # some ids beyond the LM head
    scores = torch.randn(batch, vocab, generator=generator)
    out = genplug.RepetitionPenaltyLogitsProcessor(penalty)(ids, scores)
    assert torch.equal(out, _penalised(scores, ids, penalty))


def test_prompt_ignore_length_skips_leading_tokens_per_row():
    ids = torch.tensor([[0, 0, 3, 4], [5, 6, 7, 8]])
    scores = torch.ones(2, 10)
    out = genplug.RepetitionPenaltyLogitsProcessor(2.0, prompt_ignore_length=torch.tensor([2, 0]))(ids, scores)
    assert torch.equal(out, _penalised(scores, torch.tensor([[3, 4, 3, 4], [5, 6, 7, 8]]), 2.0))
    out = genplug.RepetitionPenaltyLogitsProcessor(2.0, prompt_ignore_length=3)(ids, scores)
    assert torch.equal(out, _penalised(scores, ids[:, 3:], 2.0))


def test_a_token_both_ignored_and_counted_is_penalised():
    ids = torch.tensor([[4, 4, 1]])
    out = genplug.RepetitionPenaltyLogitsProcessor(2.0, prompt_ignore_length=torch.tensor([1]))(ids, torch.ones(1, 5))
    assert out[0, 4] == 0.5


def test_factory_ignores_each_rows_left_padding():
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    processor = factory("repetition_penalty")(config(repetition_penalty=1.3),
                                              context(torch.ones(2, 4, dtype=torch.long), attention_mask=mask))
    assert processor.penalty == 1.3
    assert processor.prompt_ignore_length.tolist() == [2, 0]


def test_factory_uses_the_decoder_mask_of_encoder_decoder_models():
    mask = torch.tensor([[0, 1], [1, 1]])
    build_context = context(torch.ones(2, 2, dtype=torch.long), is_encoder_decoder=True,
                            attention_mask=torch.zeros(2, 7), model_kwargs={"decoder_attention_mask": mask})
    processor = factory("repetition_penalty")(config(repetition_penalty=1.3), build_context)
    assert processor.prompt_ignore_length.tolist() == [1, 0]


def test_factory_without_a_mask_ignores_nothing_and_warns_without_prompt_ids():
    assert factory("repetition_penalty")(config(repetition_penalty=1.0), context()) is None
    assert factory("repetition_penalty")(config(repetition_penalty=1.3), context()).prompt_ignore_length is None
    with pytest.warns(UserWarning, match="inputs_embeds"):
        factory("repetition_penalty")(config(repetition_penalty=1.3), context(torch.zeros(2, 0, dtype=torch.long)))


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), "high"])
def test_invalid_penalties_name_the_field(bad):
    with pytest.raises(GenerationConfigError, match=r"^repetition_penalty="):
        genplug.RepetitionPenaltyLogitsProcessor(bad)
    with pytest.raises(GenerationConfigError, match=r"^encoder_repetition_penalty="):
        genplug.EncoderRepetitionPenaltyLogitsProcessor(bad, torch.ones(1, 2, dtype=torch.long))


def test_encoder_penalty_favours_the_encoder_tokens_and_follows_beams():
    encoder = torch.tensor([[1, 1, 2], [3, 4, 4]])
    scores = torch.tensor([[1.0, 2.0, -2.0, 4.0, 8.0]]).repeat(4, 1)  # 2 beams per encoder row
    out = genplug.EncoderRepetitionPenaltyLogitsProcessor(2.0, encoder)(None, scores)
    expected = scores.clone()
    expected[:2, 1], expected[:2, 2] = 4.0, -1.0
    expected[2:, 3], expected[2:, 4] = 8.0, 16.0
    assert torch.equal(out, expected)


def test_encoder_factory_needs_real_encoder_ids():
    build = factory("encoder_repetition_penalty")
    assert build(config(encoder_repetition_penalty=1.0), context(encoder_input_ids=torch.ones(1, 3).long())) is None
    processor = build(config(encoder_repetition_penalty=1.2), context(encoder_input_ids=torch.ones(1, 3).long()))
    assert processor is not None
    for missing in (None, torch.full((1, 3), -100)):
        with pytest.warns(UserWarning, match="encoder_repetition_penalty"):
            assert build(config(encoder_repetition_penalty=1.2), context(encoder_input_ids=missing)) is None
