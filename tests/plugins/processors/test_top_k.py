"""TopKLogitsWarper and its factory (min_tokens_to_keep rules included)."""

import pytest
import torch

import genplug
from genplug.errors import GenerationConfigError

from processor_testing import NEG_INF, config, context, factory, kept


def test_keeps_the_k_highest_and_everything_tied_with_the_kth():
    scores = torch.tensor([[1.0, 3.0, 2.0, 2.0, 0.0]])
    out = genplug.TopKLogitsWarper(2)(None, scores)
    assert torch.equal(out, torch.tensor([[NEG_INF, 3.0, 2.0, 2.0, NEG_INF]]))


def test_k_larger_than_the_vocabulary_keeps_everything():
    scores = torch.randn(2, 5)
    assert torch.equal(genplug.TopKLogitsWarper(50)(None, scores), scores)


def test_min_tokens_to_keep_raises_k():
    assert genplug.TopKLogitsWarper(1, min_tokens_to_keep=3).top_k == 3
    assert int(kept(genplug.TopKLogitsWarper(1, min_tokens_to_keep=3)(None, torch.randn(1, 9))).sum()) == 3


@pytest.mark.parametrize("fields, eos, expected", [
    (dict(do_sample=True), None, (50, 1)),  # sampling truncates to 50 unless told otherwise
    (dict(do_sample=True, top_k=5), 2, (5, 1)),
    (dict(do_sample=True, top_k=1, num_beams=3), [2, 3], (3, 3)),  # beam sampling: n_eos + 1
    (dict(do_sample=True, top_k=1, num_beams=3), None, (2, 2)),  # ... and 2 without EOS
    (dict(do_sample=True, top_k=0), None, None),
    (dict(do_sample=False, top_k=5), None, None),
])
def test_factory(fields, eos, expected):
    processor = factory("top_k")(config(**fields), context(eos=eos))
    if expected is None:
        assert processor is None
    else:
        assert (processor.top_k, processor.min_tokens_to_keep) == expected


@pytest.mark.parametrize("bad", [-1, 0, 2.5, True, "5"])
def test_invalid_k_names_the_field(bad):
    with pytest.raises(GenerationConfigError, match=r"top_k=.*positive int"):
        genplug.TopKLogitsWarper(bad)


def test_invalid_min_tokens_to_keep_names_the_field():
    with pytest.raises(GenerationConfigError, match=r"min_tokens_to_keep=0"):
        genplug.TopKLogitsWarper(5, min_tokens_to_keep=0)
