"""Properties every processor must have, checked on arbitrary scores (hypothesis).

Each truncation warper is compared with its definition computed independently in float64; cases
within float rounding of a boundary are skipped (``assume``), since either answer is then correct.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import genplug
from genplug.processing import LogitsProcessorList

from processor_testing import build_all, config, context, distinct_rows, kept, registry, score_rows

SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MARGIN = 1e-5  # relative distance from a boundary under which float rounding may decide either way


def _probs64(scores):
    return torch.softmax(scores.double(), dim=-1)


def _catalogue(batch, vocab, seed=0):
    """One instance of every processor class, with settings that make it do something."""
    generator = torch.Generator().manual_seed(seed)
    history = torch.randint(0, vocab, (batch, 8), generator=generator)
    encoder = torch.randint(0, vocab, (batch, 6), generator=generator)
    last = int(history[0, -1])
    return history, [
        genplug.TemperatureLogitsWarper(0.6),
        genplug.TopKLogitsWarper(3),
        genplug.TopPLogitsWarper(0.7, min_tokens_to_keep=2),
        genplug.MinPLogitsWarper(0.2),
        genplug.TypicalLogitsWarper(0.7),
        genplug.EpsilonLogitsWarper(0.05),
        genplug.EtaLogitsWarper(0.05),
        genplug.TopHLogitsWarper(0.5),
        genplug.RepetitionPenaltyLogitsProcessor(1.4),
        genplug.RepetitionPenaltyLogitsProcessor(0.7, prompt_ignore_length=2),
        genplug.EncoderRepetitionPenaltyLogitsProcessor(1.4, encoder),
        genplug.NoRepeatNGramLogitsProcessor(2),
        genplug.EncoderNoRepeatNGramLogitsProcessor(2, encoder),
        genplug.NoBadWordsLogitsProcessor([[0], [last, 1 % vocab]]),
        genplug.SequenceBiasLogitsProcessor({(0,): 1.5, (last, 1 % vocab): -2.0}),
        genplug.SuppressTokensLogitsProcessor([0]),
        genplug.SuppressTokensAtBeginLogitsProcessor([0], 8),
        genplug.ForcedBOSTokenLogitsProcessor(0),
        genplug.ForcedEOSTokenLogitsProcessor(9, [0]),
        genplug.MinLengthLogitsProcessor(10, [0]),
        genplug.MinNewTokensLengthLogitsProcessor(6, 5, [0]),
        genplug.ExponentialDecayLengthPenalty((1, 1.2), [0], 4),
        genplug.InfNanRemoveLogitsProcessor(),
        genplug.LogitNormalization(),
    ]


# ---------------------------------------------------------------------------------------------------
# What each truncation warper keeps
# ---------------------------------------------------------------------------------------------------


@SETTINGS
@given(distinct_rows(), st.integers(1, 45))
def test_top_k_keeps_exactly_k_tokens_the_highest(scores, k):
    out = genplug.TopKLogitsWarper(k)(None, scores)
    expected = min(k, scores.shape[-1])
    assert (kept(out).sum(-1) == expected).all()
    best = torch.topk(scores, expected, dim=-1).indices
    assert kept(out).gather(-1, best).all()


@SETTINGS
@given(distinct_rows(), st.floats(0.05, 0.99), st.integers(1, 4))
def test_top_p_keeps_the_smallest_set_with_mass_at_least_p(scores, top_p, min_keep):
    out = genplug.TopPLogitsWarper(top_p, min_tokens_to_keep=min_keep)(None, scores)
    for row in range(scores.shape[0]):
        probs, order = torch.sort(_probs64(scores[row]), descending=True)
        cumulative = probs.cumsum(0)
        assume(((cumulative - top_p).abs() > MARGIN).all())
        smallest = int((cumulative < top_p).sum()) + 1
        expected = max(min(smallest, probs.numel()), min(min_keep, probs.numel()))
        kept_row = kept(out[row])
        assert int(kept_row.sum()) == expected
        assert kept_row[order[:expected]].all()  # the most likely ones


@SETTINGS
@given(distinct_rows(), st.floats(0.0, 1.0), st.integers(1, 4))
def test_min_p_keeps_tokens_at_least_min_p_times_the_top_probability(scores, min_p, min_keep):
    out = genplug.MinPLogitsWarper(min_p, min_tokens_to_keep=min_keep)(None, scores)
    probs = _probs64(scores)
    threshold = min_p * probs.amax(-1, keepdim=True)
    assume(((probs - threshold).abs() > MARGIN * threshold + 1e-300).all())
    top = torch.zeros_like(probs, dtype=torch.bool).scatter_(
        -1, torch.topk(probs, min(min_keep, probs.shape[-1])).indices, True)
    assert torch.equal(kept(out), (probs >= threshold) | top)


@SETTINGS
@given(distinct_rows(low=-8.0, high=8.0), st.floats(0.05, 0.95))
def test_typical_keeps_the_most_typical_tokens_up_to_the_mass(scores, mass):
    out = genplug.TypicalLogitsWarper(mass)(None, scores)
    for row in range(scores.shape[0]):
        log_probs = torch.log_softmax(scores[row].double(), -1)
        entropy = -(log_probs.exp() * log_probs).sum()
        distance = (-log_probs - entropy).abs()
        order = torch.argsort(distance)
        assume((distance[order].diff().abs() > MARGIN).all())
        cumulative = log_probs.exp()[order].cumsum(0)
        assume(((cumulative - mass).abs() > MARGIN).all())
        count = min(int((cumulative < mass).sum()) + 1, scores.shape[-1])
        expected = torch.zeros(scores.shape[-1], dtype=torch.bool)
        expected[order[:count]] = True
        assert torch.equal(kept(out[row]), expected)


@SETTINGS
@given(distinct_rows(), st.floats(1e-4, 0.5), st.integers(1, 3))
def test_epsilon_keeps_tokens_with_probability_at_least_epsilon(scores, epsilon, min_keep):
    out = genplug.EpsilonLogitsWarper(epsilon, min_tokens_to_keep=min_keep)(None, scores)
    probs = _probs64(scores)
    assume(((probs - epsilon).abs() > MARGIN * epsilon).all())
    top = torch.zeros_like(probs, dtype=torch.bool).scatter_(
        -1, torch.topk(probs, min(min_keep, probs.shape[-1])).indices, True)
    assert torch.equal(kept(out), (probs >= epsilon) | top)


@SETTINGS
@given(distinct_rows(), st.floats(1e-4, 0.5), st.integers(1, 3))
def test_eta_keeps_tokens_above_the_entropy_scaled_cutoff(scores, epsilon, min_keep):
    out = genplug.EtaLogitsWarper(epsilon, min_tokens_to_keep=min_keep)(None, scores)
    probs = _probs64(scores)
    entropy = -(probs * torch.log(probs.clamp(min=1e-300))).sum(-1, keepdim=True)
    eta = torch.minimum(torch.tensor(epsilon, dtype=torch.float64), math.sqrt(epsilon) * torch.exp(-entropy))
    assume(((probs - eta).abs() > MARGIN * eta).all())
    top = torch.zeros_like(probs, dtype=torch.bool).scatter_(
        -1, torch.topk(probs, min(min_keep, probs.shape[-1])).indices, True)
    assert torch.equal(kept(out), (probs >= eta) | top)


@SETTINGS
@given(score_rows(), st.floats(0.05, 20.0))
def test_temperature_preserves_the_order_of_scores(scores, temperature):
    out = genplug.TemperatureLogitsWarper(temperature)(None, scores)
    order = torch.argsort(scores, dim=-1, stable=True)
    assert (out.gather(-1, order).diff(dim=-1) >= 0).all()


# ---------------------------------------------------------------------------------------------------
# Properties of all processors
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("do_sample", [False, True])
def test_disabled_processors_leave_scores_bit_identical(do_sample):
    """With a default config no factory builds anything (but sampling's default top-k 50)."""
    generation_config = config(do_sample=do_sample, top_k=0 if do_sample else None)
    build_context = context(torch.tensor([[1, 2, 3]]), vocab_size=32, eos=2)
    assert all(entry.obj(generation_config, build_context) is None for entry in registry().values())
    processors = build_all(generation_config, build_context)
    scores = torch.randn(1, 32)
    assert torch.equal(processors(build_context.input_ids, scores.clone()), scores)


def test_default_sampling_builds_top_k_50_only():
    processors = build_all(config(do_sample=True), context(eos=2))
    assert [(type(p).__name__, p.top_k) for p in processors] == [("TopKLogitsWarper", 50)]


@SETTINGS
@given(score_rows(vocab=st.integers(2, 30)))
def test_neutral_settings_leave_scores_bit_identical(scores):
    input_ids = torch.zeros(scores.shape[0], 3, dtype=torch.long)
    for neutral in (genplug.TemperatureLogitsWarper(1.0), genplug.TopKLogitsWarper(scores.shape[-1]),
                    genplug.TopPLogitsWarper(1.0), genplug.MinPLogitsWarper(0.0),
                    genplug.RepetitionPenaltyLogitsProcessor(1.0), genplug.SuppressTokensLogitsProcessor([]),
                    genplug.MinLengthLogitsProcessor(3, [0])):
        assert torch.equal(neutral(input_ids, scores), scores), type(neutral).__name__


@SETTINGS
@given(score_rows(vocab=st.integers(2, 30)), st.integers(0, 3))
def test_no_processor_turns_finite_scores_into_nan_or_changes_its_input(scores, seed):
    history, processors = _catalogue(scores.shape[0], scores.shape[-1], seed)
    original = scores.clone()
    for processor in processors:
        out = processor(history, scores)
        assert not out.isnan().any(), type(processor).__name__
        assert out.shape == scores.shape
        assert torch.equal(scores, original), f"{type(processor).__name__} changed its input"
    chained = LogitsProcessorList(processors)(history, scores)  # the whole catalogue, fused where possible
    assert not chained.isnan().any()
    assert torch.equal(scores, original)


@SETTINGS
@given(score_rows(vocab=st.integers(1, 30)), st.integers(0, 3))
def test_argmax_invariant_processors_keep_the_best_token_best(scores, seed):
    """A highest-scoring token before an argmax-invariant processor is a highest-scoring one after it.

    Float rounding may turn two nearly equal scores into a tie (log-softmax of 0 and 1e-38); then the
    argmax may pick the other token of the tie, never a worse one. Without a tie it is a best token.
    """
    history, processors = _catalogue(scores.shape[0], scores.shape[-1], seed)
    invariant = [p for p in processors if p.argmax_invariant]
    assert {type(p).__name__ for p in invariant} == {
        "TemperatureLogitsWarper", "TopKLogitsWarper", "TopPLogitsWarper", "MinPLogitsWarper", "EpsilonLogitsWarper",
        "EtaLogitsWarper", "TopHLogitsWarper", "LogitNormalization"}
    was_best = scores == scores.amax(-1, keepdim=True)
    for processor in invariant + [LogitsProcessorList(invariant)]:
        out = processor(history, scores)
        is_best = out == out.amax(-1, keepdim=True)
        assert (was_best & is_best).any(-1).all(), type(processor).__name__
        unique = is_best.sum(-1) == 1
        assert was_best.gather(-1, out.argmax(-1, keepdim=True))[unique].all(), type(processor).__name__


def test_typical_is_not_argmax_invariant():
    """Probabilities 0.4 and 6 x 0.1: entropy 1.75 nats, the top token's surprise 0.92, the others' 2.30.

    The 0.1 tokens are the typical ones, so a small mass keeps them (all: they tie) and drops the top token.
    """
    scores = torch.tensor([[math.log(0.4)] + [math.log(0.1)] * 6])
    assert genplug.TypicalLogitsWarper.argmax_invariant is False
    out = genplug.TypicalLogitsWarper(0.15)(None, scores)
    assert torch.isneginf(out[0, 0])
    assert int(kept(out).sum()) == 6


def test_compile_safe_is_false_only_for_the_user_callback():
    _, processors = _catalogue(2, 10)
    assert all(p.compile_safe for p in processors)
    assert genplug.PrefixConstrainedLogitsProcessor(lambda b, ids: [0], 1).compile_safe is False


@pytest.mark.slow
def test_compile_safe_processors_trace_into_one_graph():
    """compile_safe is truthful: no graph break (host sync, data-dependent shape) alone or chained."""
    torch._dynamo.reset()
    history, processors = _catalogue(2, 12)
    scores = torch.randn(2, 12)
    chained = LogitsProcessorList(processors)

    def one_by_one(input_ids, scores):
        for processor in processors:
            scores = processor(input_ids, scores)
        return scores

    for run in (one_by_one, chained):
        expected = run(history, scores)
        compiled = torch.compile(run, fullgraph=True, backend="eager")
        assert torch.equal(compiled(history, scores), expected)


@SETTINGS
@given(score_rows(vocab=st.integers(2, 30)), st.integers(0, 3), st.integers(1, 6))
def test_history_use_is_truthful(scores, seed, padding):
    """"none": the history does not matter; "set": repeating the last token at the end changes nothing;
    "length": only the token count matters, and ``at_length`` gives the same scores for every count;
    "prefix": ``at_prefix`` over a longer buffer gives the call's scores on its first ``length`` tokens.

    The CUDA-graph loop relies on this: it feeds such processors a fixed-size token buffer whose unfilled
    part repeats the last prompt token (never one of the ignored leading tokens).
    """
    history, processors = _catalogue(scores.shape[0], scores.shape[-1], seed)
    other_history = torch.randint(0, scores.shape[-1], (scores.shape[0], 11), generator=torch.Generator().manual_seed(9))
    padded = torch.cat([history, history[:, -1:].expand(-1, padding)], dim=1)
    for processor in processors:
        use = processor.history_use
        if use == "none":
            assert torch.equal(processor(history, scores), processor(other_history, scores)), type(processor).__name__
        elif use == "set":
            assert torch.equal(processor(history, scores), processor(padded, scores)), type(processor).__name__
        elif use == "length":
            # only the count matters, and at_length (the graph form) agrees with __call__ at every length
            same_length = torch.randint(0, scores.shape[-1], history.shape, generator=torch.Generator().manual_seed(3))
            assert torch.equal(processor(history, scores), processor(same_length, scores)), type(processor).__name__
            for length in range(history.shape[1] + 3):
                prefix = padded[:, :length] if length <= padded.shape[1] else torch.zeros(
                    history.shape[0], length, dtype=torch.long)
                expected = processor(prefix, scores.clone())
                assert torch.equal(processor.at_length(torch.tensor(length), scores.clone()), expected), \
                    type(processor).__name__
        elif use == "prefix":
            buffer = torch.cat([padded, other_history], dim=1)
            for length in range(buffer.shape[1] + 1):
                expected = processor(buffer[:, :length], scores.clone())
                got = processor.at_prefix(buffer, torch.tensor(length), scores.clone())
                assert torch.equal(got, expected), (type(processor).__name__, length)
        else:
            assert use == "sequence", (type(processor).__name__, use)
