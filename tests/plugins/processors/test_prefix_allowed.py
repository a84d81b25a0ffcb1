"""PrefixConstrainedLogitsProcessor and its factory."""

import pytest
import torch

import genplug
from genplug.errors import GenerationConfigError

from processor_testing import config, context, factory


def test_keeps_the_allowed_tokens_of_each_row_and_maps_rows_to_batch_ids():
    calls = []

    def allowed(batch_id, ids):
        calls.append((batch_id, ids.tolist()))
        return [batch_id, int(ids[-1])]

    ids = torch.tensor([[1, 2], [1, 3], [4, 0], [4, 4]])
    scores = torch.randn(4, 6)
    out = genplug.PrefixConstrainedLogitsProcessor(allowed, num_beams=2)(ids, scores)
    assert [c[0] for c in calls] == [0, 0, 1, 1]
    expected = torch.full_like(scores, float("-inf"))
    for row, tokens in enumerate([[0, 2], [0, 3], [1, 0], [1, 4]]):
        expected[row, tokens] = scores[row, tokens]
    assert torch.equal(out, expected)


def test_tensor_answers_are_accepted():
    out = genplug.PrefixConstrainedLogitsProcessor(lambda b, ids: torch.tensor([1]), 1)(torch.ones(1, 2).long(),
                                                                                       torch.zeros(1, 3))
    assert torch.isneginf(out).tolist() == [[True, False, True]]


def test_an_unsatisfiable_batch_item_gets_its_allowed_tokens_forced():
    scores = torch.tensor([[0.0, float("-inf"), 1.0], [0.0, float("-inf"), 2.0]])
    out = genplug.PrefixConstrainedLogitsProcessor(lambda b, ids: [1], 2)(torch.ones(2, 1).long(), scores)
    assert out.tolist() == [[float("-inf"), 0.0, float("-inf")]] * 2


def test_an_empty_answer_says_which_row_and_why():
    processor = genplug.PrefixConstrainedLogitsProcessor(lambda b, ids: [] if b == 1 else [0], 2)
    with pytest.raises(GenerationConfigError, match=r"prefix_allowed_tokens_fn=.*no allowed tokens for batch 1, "
                                                    r"beam 0 at length 3.*cannot be satisfied"):
        processor(torch.ones(4, 3).long(), torch.zeros(4, 5))


@pytest.mark.parametrize("answer", [[7], [-1], [1.5], None])
def test_invalid_answers_are_errors(answer):
    processor = genplug.PrefixConstrainedLogitsProcessor(lambda b, ids: answer, 1)
    with pytest.raises(GenerationConfigError, match=r"^prefix_allowed_tokens_fn="):
        processor(torch.ones(1, 2).long(), torch.zeros(1, 5))


def test_not_callable_is_an_error():
    with pytest.raises(GenerationConfigError, match=r"prefix_allowed_tokens_fn=3 is not callable"):
        genplug.PrefixConstrainedLogitsProcessor(3, 1)


def test_factory_takes_the_function_from_the_call_and_beams_from_the_config():
    def allowed(batch_id, ids):
        return [0]

    processor = factory("prefix_allowed_tokens_fn")(config(num_beams=3), context(prefix_allowed_tokens_fn=allowed))
    assert processor._prefix_allowed_tokens_fn is allowed and processor._num_beams == 3
    assert factory("prefix_allowed_tokens_fn")(config(), context()) is None
    assert processor.compile_safe is False
