"""The ROC curve and the records behind the tuned assistant_confidence_threshold (confidence_tuning.py).

Oracles: the curve's definition computed by brute force (count, for every threshold, the records at or
above it), exact rational costs, transformers' bookkeeping of its ``probs`` / ``matches`` lists written
out per row, and -- where scikit-learn is installed -- ``sklearn.metrics.roc_curve`` itself.
"""

from __future__ import annotations

import math
import warnings
from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from genplug.plugins.strategies.confidence_tuning import (ConfidenceTuner, cheapest_threshold, judged_records,
                                                          roc_curve)

TIED = st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0])  # few values: many ties
ANY = st.floats(0.0, 1.0, allow_nan=False, width=32)


@st.composite
def records(draw, both_outcomes=False):
    """``(labels, scores)``: 1 to 40 records, scores mostly tied or all distinct-ish."""
    n = draw(st.integers(2 if both_outcomes else 1, 40))
    labels = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    if both_outcomes:
        labels[0], labels[-1] = 0, 1
    scores = draw(st.lists(draw(st.sampled_from([TIED, ANY])), min_size=n, max_size=n))
    return labels, scores


def full_curve(labels, scores):
    """Brute force, no point dropped: ``(threshold, false positives, true positives)`` for ``inf`` and
    every distinct score, highest first, each count taken over the records at or above the threshold."""
    return [(t, sum(1 for y, s in zip(labels, scores) if s >= t and not y),
             sum(1 for y, s in zip(labels, scores) if s >= t and y))
            for t in [math.inf] + sorted(set(scores), reverse=True)]


def as_list(tensor):
    return [None if math.isnan(v) else v for v in tensor.tolist()]


def rate(count, total):
    return None if total == 0 else count / total


@settings(max_examples=300, deadline=None)
@given(records())
def test_without_dropping_the_curve_is_every_threshold_counted_out(data):
    labels, scores = data
    fpr, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=False)
    curve = full_curve(labels, scores)
    positives = sum(labels)
    negatives = len(labels) - positives
    assert thresholds.tolist() == [t for t, _, _ in curve]
    assert as_list(fpr) == [rate(fp, negatives) for _, fp, _ in curve]
    assert as_list(tpr) == [rate(tp, positives) for _, _, tp in curve]


@settings(max_examples=300, deadline=None)
@given(records())
def test_dropping_removes_exactly_the_points_inside_equal_steps(data):
    """scikit-learn's rule, restated by brute force: a point of the curve (the ``inf`` start aside) goes
    when the counts grow by the same steps on both sides of it. Every point that goes lies on the
    segment between the points kept around it, so no corner of the curve is lost."""
    labels, scores = data
    curve = full_curve(labels, scores)
    counted = curve[1:]  # the inf start is added after dropping
    dropped = {i for i in range(1, len(counted) - 1)
               if counted[i][1] - counted[i - 1][1] == counted[i + 1][1] - counted[i][1]
               and counted[i][2] - counted[i - 1][2] == counted[i + 1][2] - counted[i][2]}
    kept = [curve[0]] + [point for i, point in enumerate(counted) if i not in dropped]
    fpr, tpr, thresholds = roc_curve(labels, scores)
    assert thresholds.tolist() == [t for t, _, _ in kept]
    positives = sum(labels)
    negatives = len(labels) - positives
    assert as_list(fpr) == [rate(fp, negatives) for _, fp, _ in kept]
    assert as_list(tpr) == [rate(tp, positives) for _, _, tp in kept]
    for i in dropped:
        _, fp, tp = counted[i]
        before = min((p for p in kept if p[0] > counted[i][0]), key=lambda p: p[0])  # the nearest kept ones
        after = max((p for p in kept if p[0] < counted[i][0]), key=lambda p: p[0])
        # collinear: the cross product of (point - before) and (after - before) is zero
        assert (fp - before[1]) * (after[2] - before[2]) == (tp - before[2]) * (after[1] - before[1])


@settings(max_examples=300, deadline=None)
@given(records(both_outcomes=True))
def test_the_cheapest_threshold_has_the_least_exact_cost(data):
    """Exact arithmetic over every threshold: the chosen one costs the least ``fpr + 3 * fnr``, and it is
    the highest such unless float rounding tells the equal costs apart (then any of them may come first,
    as with transformers' float64 costs)."""
    labels, scores = data
    positives = sum(labels)
    negatives = len(labels) - positives
    table = [(t, Fraction(fp, negatives) + 3 * (1 - Fraction(tp, positives)),  # exact, and as floats
              fp / negatives + 3.0 * (1.0 - tp / positives)) for t, fp, tp in full_curve(labels, scores)]
    least = min(exact for _, exact, _ in table)
    cheapest = [(t, rounded) for t, exact, rounded in table if exact == least]
    chosen = cheapest_threshold(labels, scores)
    assert chosen in [t for t, _ in cheapest]
    if len({rounded for _, rounded in cheapest}) == 1:
        assert chosen == cheapest[0][0]


def test_a_hand_worked_curve():
    """scikit-learn's documented example, labels 2 -> 1: thresholds inf, 0.8, 0.4, 0.35, 0.1."""
    fpr, tpr, thresholds = roc_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    assert thresholds.tolist() == [math.inf, 0.8, 0.4, 0.35, 0.1]
    assert fpr.tolist() == [0.0, 0.0, 0.5, 0.5, 1.0] and tpr.tolist() == [0.0, 0.5, 0.5, 1.0, 1.0]
    # costs 3, 1.5, 2, 0.5, 1: keep drafting while the draft's probability is at least 0.35
    assert cheapest_threshold([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.35


def test_bad_records_are_refused():
    with pytest.raises(ValueError, match="as many labels as scores"):
        roc_curve([1, 0], [0.5])
    with pytest.raises(ValueError, match="at least one"):
        roc_curve([], [])
    with pytest.raises(ValueError, match="finite"):
        roc_curve([1, 0], [0.5, float("nan")])


@settings(max_examples=300, deadline=None)
@given(records())
def test_the_curve_is_scikit_learns(data):
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    np = pytest.importorskip("numpy")
    labels, scores = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one class only: scikit-learn warns, and its rates are NaN
        for drop in (True, False):
            expected = sklearn_metrics.roc_curve(labels, scores, drop_intermediate=drop)
            for ours, theirs in zip(roc_curve(labels, scores, drop_intermediate=drop), expected):
                np.testing.assert_array_equal(ours.numpy(), theirs)
    if 0 < sum(labels) < len(labels):
        fpr, tpr, thresholds = sklearn_metrics.roc_curve(labels, scores)
        assert cheapest_threshold(labels, scores) == thresholds[np.argmin(fpr + 3 * (1 - tpr))]


@st.composite
def rounds(draw):
    """One verification round of a batch: the draft's tokens with their probabilities, each row's number
    of proposed tokens (its last one maybe an EOS), how many the target accepted, and which rows run."""
    rows = draw(st.integers(1, 4))
    width = draw(st.integers(1, 6))
    lengths = [draw(st.integers(1, width)) for _ in range(rows)]
    lengths[draw(st.integers(0, rows - 1))] = width  # the batch drafts while any row does
    probabilities = torch.tensor([[draw(ANY) for _ in range(width)] for _ in range(rows)])
    ends_at_eos = [draw(st.booleans()) for _ in range(rows)]
    matches = [draw(st.integers(0, length)) for length in lengths]
    running = [draw(st.booleans()) for _ in range(rows)]
    return probabilities, lengths, ends_at_eos, matches, running


def transformers_bookkeeping(probabilities, lengths, ends_at_eos, matches, running):
    """transformers' lists for each running row alone, as its one-row loop keeps them: the draft's
    probabilities are appended, the accepted count -- cut back at an EOS among the kept tokens -- as 1s,
    a 0 if a drafted token is left over, then the left-over probabilities are deleted."""
    EOS, OTHER = -1, -2
    probs, flags = [], []
    for row, length in enumerate(lengths):
        if not running[row]:
            continue
        drafted = [OTHER] * (length - 1) + [EOS if ends_at_eos[row] else OTHER]
        kept = drafted[:matches[row]] + [OTHER]  # the accepted candidates and the target's own next token
        if EOS in kept:
            kept = kept[:kept.index(EOS) + 1]
        n_matches = len(kept) - 1
        probs.extend(probabilities[row, :length].tolist())
        flags.extend([True] * n_matches)
        if len(probs) > len(flags):
            flags.append(False)
        del probs[len(flags):]
    return probs, flags


@settings(max_examples=300, deadline=None)
@given(rounds())
def test_the_records_of_a_round_are_transformers_bookkeeping_row_by_row(data):
    probabilities, lengths, ends_at_eos, matches, running = data
    ours = judged_records(probabilities, torch.tensor(lengths), torch.tensor(matches), torch.tensor(running),
                          torch.tensor(ends_at_eos))
    assert ours == transformers_bookkeeping(probabilities, lengths, ends_at_eos, matches, running)


def test_the_tuner_waits_for_six_records_with_both_outcomes():
    tuner = ConfidenceTuner()
    tuner.record([0.9, 0.8, 0.7, 0.6, 0.5], [True, True, True, True, False])
    assert tuner.threshold() is None  # five records
    tuner.record([0.95], [True])
    assert tuner.threshold() == cheapest_threshold(tuner.accepted, tuner.probabilities) == 0.6
    only_accepted = ConfidenceTuner()
    only_accepted.record([0.5] * 10, [True] * 10)
    assert only_accepted.threshold() is None
