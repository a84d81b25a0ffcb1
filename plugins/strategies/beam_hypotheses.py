"""The finished-hypothesis bookkeeping of transformers 4.56's beam scorers, batched on the device.

4.56 keeps, per prompt (or per prompt and beam group), a Python list of at most ``size`` finished
hypotheses (``BeamHypotheses``): a new one enters if the list is not full or it beats the worst one,
which then leaves. The list therefore always holds the best ``size`` hypotheses added so far. Here
that list is a row of fixed-shape tensors, and adding a step's candidates is one sort over
"kept + new": no Python loop over prompts or candidates.

Scores are kept in float64, as 4.56 kept them in Python floats: ``score / generated_len **
length_penalty`` is computed in double precision from the float32 summed log-probs, so rankings and
the "done" test agree with 4.56 to the last bit; ``sequences_scores`` are returned as float32.

Exact ties are broken in favour of the hypothesis added first (4.56's list favours it when adding but,
when choosing the returned ones, the one added last); with float scores a tie needs identical sums of
log-probs and does not occur in practice.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import torch


class FinishedHypotheses:
    """The best ``size`` finished hypotheses of each of ``slots`` independent searches.

    * ``tokens`` (slots, size, max_length) -- the whole sequence, prompt included; a hypothesis that
      ended with EOS includes that token; unused positions hold ``fill``;
    * ``lengths`` (slots, size) -- tokens used in ``tokens``;
    * ``beams`` (slots, size, max_length - prompt_len) -- the flattened beam row each generated token
      came from, -1 where nothing was generated;
    * ``scores`` (slots, size) float64 -- length-normalised; ``valid`` (slots, size) -- slot in use.
    """

    def __init__(self, slots: int, size: int, max_length: int, prompt_len: int, length_penalty: float,
                 early_stopping, fill: int, device: torch.device):
        self.size, self.max_length, self.prompt_len = size, max_length, prompt_len
        self.length_penalty, self.early_stopping = length_penalty, early_stopping
        self.tokens = torch.full((slots, size, max_length), fill, dtype=torch.long, device=device)
        self.lengths = torch.zeros((slots, size), dtype=torch.long, device=device)
        self.beams = torch.full((slots, size, max_length - prompt_len), -1, dtype=torch.long, device=device)
        self.scores = torch.full((slots, size), float("-inf"), dtype=torch.float64, device=device)
        self.valid = torch.zeros((slots, size), dtype=torch.bool, device=device)

    def add(self, tokens: torch.Tensor, length: int, summed_log_probs: torch.Tensor, beams: torch.Tensor,
            eligible: torch.Tensor) -> None:
        """Offer ``m`` candidates per slot, all ``length`` tokens long; only ``eligible`` ones count.

        ``tokens`` (slots, m, max_length), ``summed_log_probs`` (slots, m), ``beams`` (slots, m,
        max_length - prompt_len), ``eligible`` (slots, m) bool.
        """
        generated = length - self.prompt_len
        scores = summed_log_probs.to(torch.float64) / (generated ** self.length_penalty)
        all_scores = torch.cat((self.scores, scores), dim=1)
        all_valid = torch.cat((self.valid, eligible), dim=1)
        keep = rank(all_scores, all_valid)[:, :self.size]
        lengths = torch.full_like(summed_log_probs, length, dtype=torch.long)
        self.tokens = _pick(torch.cat((self.tokens, tokens), dim=1), keep)
        self.beams = _pick(torch.cat((self.beams, beams), dim=1), keep)
        self.lengths = _pick(torch.cat((self.lengths, lengths), dim=1), keep)
        self.scores = _pick(all_scores, keep)
        self.valid = _pick(all_valid, keep)

    def is_done(self, best_summed_log_probs: torch.Tensor, length: int) -> torch.Tensor:
        """(slots,) bool: the list is full and no running hypothesis can still enter it.

        ``best_summed_log_probs`` is the best candidate score of the step that brought the running
        hypotheses to ``length`` tokens. ``early_stopping=True``: full is enough; ``False``: the best
        candidate, normalised at the current length, does not beat the worst kept; ``"never"``: the
        same at ``max_length`` when ``length_penalty > 0`` (longer can only score better).
        """
        full = self.valid.all(dim=1)
        if self.early_stopping is True:
            return full
        if self.early_stopping == "never" and self.length_penalty > 0.0:
            best_length = self.max_length - self.prompt_len
        else:
            best_length = length - self.prompt_len
        highest = best_summed_log_probs.to(torch.float64) / (best_length ** self.length_penalty)
        worst = torch.where(self.valid, self.scores, float("inf")).min(dim=1)[0]
        return full & (worst >= highest)


def rank(scores: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Column order putting valid entries first, best score first, earlier column first on ties."""
    by_score = torch.sort(scores, dim=1, descending=True, stable=True)[1]
    by_valid = torch.sort(valid.gather(1, by_score).to(torch.int8), dim=1, descending=True, stable=True)[1]
    return by_score.gather(1, by_valid)


def best_hypotheses(groups: Sequence[FinishedHypotheses], count: int) -> Tuple[torch.Tensor, torch.Tensor,
                                                                                  torch.Tensor]:
    """The ``count`` best hypotheses per prompt over every group's list, flattened to rows.

    Returns ``sequences`` (prompts * count, longest), ``scores`` float32 and ``beam_indices``
    (prompts * count, longest generated), cut to the longest returned hypothesis (one host read).
    """
    tokens = torch.cat([g.tokens for g in groups], dim=1)
    scores = torch.cat([g.scores for g in groups], dim=1)
    valid = torch.cat([g.valid for g in groups], dim=1)
    lengths = torch.cat([g.lengths for g in groups], dim=1)
    beams = torch.cat([g.beams for g in groups], dim=1)
    keep = rank(scores, valid)[:, :count]
    prompts = tokens.shape[0]
    tokens = _pick(tokens, keep).reshape(prompts * count, -1)
    beams = _pick(beams, keep).reshape(prompts * count, -1)
    lengths = _pick(lengths, keep).reshape(-1)
    scores = _pick(scores, keep).reshape(-1).to(torch.float32)
    longest = int(lengths.max())
    prompt_len = groups[0].prompt_len
    return tokens[:, :longest], scores, beams[:, :longest - prompt_len]


def _pick(tensor: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    while index.dim() < tensor.dim():
        index = index.unsqueeze(-1)
    return torch.take_along_dim(tensor, index, dim=1)


def rows_of_groups(batch: int, num_beams: int, group_size: int, device) -> List[torch.Tensor]:
    """For each beam group, its flattened rows as a (batch, group_size) tensor: ``b * num_beams + g * group_size + k``."""
    base = torch.arange(batch, device=device).view(-1, 1) * num_beams + torch.arange(group_size, device=device)
    return [base + g * group_size for g in range(num_beams // group_size)]
