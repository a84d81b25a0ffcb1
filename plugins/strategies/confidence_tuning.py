"""Tuning a draft model's ``assistant_confidence_threshold`` from how its tokens fared, as transformers does.

A draft model stops drafting once its probability of its own token falls below the threshold
(:class:`.candidates.DraftModelCandidates`). Each round the target then judges the drafted tokens: it
accepts them up to the first it would not have chosen. Every judged token is a record -- the draft's
probability of it (the softmax of the draft's processed scores) and whether the target accepted it;
tokens after the first refusal were never judged and are not recorded. Once there are more than five
records, with both outcomes among them, the threshold moves to the one with the least cost ``fpr + 3 * fnr`` on the ROC
curve of "the draft's probability predicts acceptance": drafting on past a token the target refuses (a
false positive, a wasted draft step) weighs 1, stopping at a token it accepts (a false negative, a
round cut short) weighs 3. The records and the threshold last for one ``generate`` call.

transformers (``AssistedCandidateGenerator.update_candidate_strategy``) does this only when scikit-learn
is installed, with ``sklearn.metrics.roc_curve`` and ``np.argmin``. genplug always does it, with
:func:`roc_curve` below, which returns what scikit-learn's returns (``drop_intermediate=True``): from the
same records it picks transformers' threshold bit for bit. (The records themselves agree with
transformers' to float rounding where the draft runs on genplug's native twin.)
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch

FALSE_NEGATIVE_COST = 3.0  # transformers' weights: 75% on stopping too early, 25% on drafting too long
MIN_RECORDS = 6  # transformers' "more than 5 samples", with both outcomes among them


def roc_curve(labels: Sequence, scores: Sequence[float], drop_intermediate: bool = True
              ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(fpr, tpr, thresholds)``, float64: the ROC curve of predicting ``labels`` (1 / True: positive)
    by ``score >= threshold``, with scikit-learn's ``roc_curve`` semantics.

    The thresholds are ``+inf`` (nothing predicted positive: the curve starts at (0, 0)) followed by the
    distinct scores from highest to lowest; equal scores are one threshold, so tied records move the
    curve together. ``drop_intermediate`` drops the thresholds whose point lies on a straight run of
    the curve -- its false and true positive counts both grow by the same steps before it and after
    it -- as scikit-learn does: never a corner, never the first or the last. Without negatives ``fpr``
    is all NaN, without positives ``tpr`` is (scikit-learn warns and does the same).
    """
    labels = torch.as_tensor(labels, dtype=torch.float64, device="cpu").flatten()
    scores = torch.as_tensor(scores, dtype=torch.float64, device="cpu").flatten()
    if labels.numel() != scores.numel() or scores.numel() == 0:
        raise ValueError(f"roc_curve needs as many labels as scores, at least one (got {labels.numel()} labels, "
                         f"{scores.numel()} scores)")
    if not bool(torch.isfinite(scores).all()):
        raise ValueError("roc_curve needs finite scores (got NaN or infinity)")
    order = torch.sort(scores, descending=True, stable=True).indices
    scores, labels = scores[order], labels[order]
    # one threshold per distinct score, at the last record of its run of ties
    last = torch.cat((torch.nonzero(scores[1:] != scores[:-1]).flatten(), torch.tensor([scores.numel() - 1])))
    true_positives = torch.cumsum(labels, 0)[last]  # records with score >= threshold that are positive
    false_positives = (last + 1).to(torch.float64) - true_positives
    thresholds = scores[last]
    if drop_intermediate and last.numel() > 2:
        corner = (torch.diff(false_positives, n=2) != 0) | (torch.diff(true_positives, n=2) != 0)
        keep = torch.cat((torch.tensor([True]), corner, torch.tensor([True])))
        true_positives, false_positives, thresholds = true_positives[keep], false_positives[keep], thresholds[keep]
    zero = torch.zeros(1, dtype=torch.float64)
    true_positives, false_positives = torch.cat((zero, true_positives)), torch.cat((zero, false_positives))
    thresholds = torch.cat((torch.tensor([float("inf")], dtype=torch.float64), thresholds))
    # 0 / 0 is NaN: a class with no records has no rate
    return false_positives / false_positives[-1], true_positives / true_positives[-1], thresholds


def cheapest_threshold(accepted: Sequence, probabilities: Sequence[float]) -> float:
    """The threshold of :func:`roc_curve` with the least ``fpr + 3 * fnr`` (the first, i.e. the highest,
    of equal ones, as ``np.argmin`` picks), computed in the float64 operations transformers uses."""
    fpr, tpr, thresholds = roc_curve(accepted, probabilities)
    cost = fpr + FALSE_NEGATIVE_COST * (1.0 - tpr)
    return float(thresholds[int(torch.argmin(cost))])  # torch.argmin returns the first minimum too


def judged_records(probabilities: torch.Tensor, lengths: torch.Tensor, matches: torch.Tensor, running: torch.Tensor,
                   ends_at_eos: Optional[torch.Tensor] = None) -> Tuple[List[float], List[bool]]:
    """One round's records, every row at once: ``(probabilities, accepted)`` of the drafted tokens the
    target judged, row by row.

    ``probabilities [batch, n]`` are the draft's probabilities of its tokens, of which row ``r`` proposed
    the first ``lengths[r]``; the target accepted the first ``matches[r]`` (at most ``lengths[r]``) and
    refused the next one, if the row proposed it. Rows not ``running`` (done before the round) add nothing.
    A row whose last proposed token is an EOS (``ends_at_eos``) and was accepted records it as refused:
    transformers keeps the tokens only up to an EOS and counts the candidates before it as the matches.
    """
    position = torch.arange(probabilities.shape[1], device=probabilities.device)
    matches = torch.minimum(matches, lengths)
    if ends_at_eos is not None:
        matches = torch.where(ends_at_eos & (matches == lengths), lengths - 1, matches)
    judged = (position <= matches[:, None]) & (position < lengths[:, None]) & running[:, None]
    accepted = position < matches[:, None]
    return probabilities[judged].tolist(), accepted[judged].tolist()


class ConfidenceTuner:
    """The records of one ``generate`` call and the threshold they give.

    ``record`` adds a round's judged tokens; ``threshold()`` is None until there are at least
    ``MIN_RECORDS`` of them with both outcomes, then :func:`cheapest_threshold` over all of them.
    """

    def __init__(self):
        self.probabilities: List[float] = []
        self.accepted: List[bool] = []

    def record(self, probabilities: Sequence[float], accepted: Sequence[bool]) -> None:
        self.probabilities.extend(float(p) for p in probabilities)
        self.accepted.extend(bool(a) for a in accepted)

    def threshold(self) -> Optional[float]:
        if len(self.accepted) < MIN_RECORDS or all(self.accepted) or not any(self.accepted):
            return None
        return cheapest_threshold(self.accepted, self.probabilities)
