"""The fused top-k -> top-p / min-p group: one topk, exactly the result of the warpers one by one."""

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import genplug
from genplug.processing import LogitsProcessorList
from genplug.plugins.processors.truncation import TruncationGroup

from processor_testing import score_rows

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _sequentially(processors, scores):
    for processor in processors:
        scores = processor(None, scores)
    return scores


def _with_minus_infinity(scores, data):
    """Some entries already removed by an earlier processor (ties between -inf entries included)."""
    mask = data.draw(st.lists(st.booleans(), min_size=scores.numel(), max_size=scores.numel()))
    return scores.masked_fill(torch.tensor(mask).reshape(scores.shape), float("-inf"))


warper_lists = st.lists(
    st.one_of(
        st.builds(genplug.TopPLogitsWarper, st.floats(0.0, 1.0), min_tokens_to_keep=st.integers(1, 6)),
        st.builds(genplug.MinPLogitsWarper, st.floats(0.0, 1.0), min_tokens_to_keep=st.integers(1, 6)),
    ),
    min_size=1, max_size=3,
)


@SETTINGS
@given(score_rows(low=-6.0, high=6.0), st.integers(1, 12), st.integers(1, 4), warper_lists, st.data())
def test_fused_group_equals_the_warpers_one_by_one(scores, k, min_keep, warpers, data):
    """Bit for bit, with ties (scores drawn from a narrow range tie often) and -inf entries."""
    if data.draw(st.booleans()):
        scores = _with_minus_infinity(scores, data)
    processors = [genplug.TopKLogitsWarper(k, min_tokens_to_keep=min_keep), *warpers]
    fused = LogitsProcessorList(processors)
    assert any(isinstance(step, TruncationGroup) for step in fused._fused()[0].steps)
    assert torch.equal(fused(None, scores), _sequentially(processors, scores))


@SETTINGS
@given(score_rows(low=-3.0, high=3.0, vocab=st.integers(1, 8)), st.integers(1, 4), st.data())
def test_fused_group_with_integer_scores_that_tie_everywhere(scores, k, data):
    scores = scores.round()
    processors = [genplug.TopKLogitsWarper(k), genplug.TopPLogitsWarper(data.draw(st.floats(0.0, 1.0))),
                  genplug.MinPLogitsWarper(data.draw(st.floats(0.0, 1.0)))]
    assert torch.equal(LogitsProcessorList(processors)(None, scores), _sequentially(processors, scores))


def test_the_group_is_one_step_of_the_plan():
    top_k, top_p, min_p = genplug.TopKLogitsWarper(5), genplug.TopPLogitsWarper(0.9), genplug.MinPLogitsWarper(0.1)
    (chain,) = LogitsProcessorList([genplug.TemperatureLogitsWarper(0.5), top_k, top_p, min_p])._fused()
    group = chain.steps[-1]
    assert isinstance(group, TruncationGroup)
    assert group.top_k_warper is top_k and group.rules == [top_p, min_p]
    assert chain.argmax_invariant and chain.compile_safe


def test_no_merge_without_a_leading_top_k_or_with_a_finite_filter_value():
    top_p = genplug.TopPLogitsWarper(0.9)
    assert genplug.TopKLogitsWarper(5).merge(genplug.TopPLogitsWarper(0.9, filter_value=-1e4)) is None
    assert top_p.merge(genplug.TopKLogitsWarper(5)) is None
    (chain,) = LogitsProcessorList([top_p, genplug.TopKLogitsWarper(5)])._fused()
    assert not any(isinstance(step, TruncationGroup) for step in chain.steps)
