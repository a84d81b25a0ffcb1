"""The draft model's assistant_confidence_threshold, tuned after every round (plugins/strategies/confidence_tuning.py).

transformers tunes it only when scikit-learn is installed, so the comparisons with transformers skip
without it; the other cases check genplug's tuning against a brute-force oracle over the records
(the draft's probability of each judged token, and whether the target accepted it) and need nothing
but transformers' tiny models.

Both sides are traced round by round: transformers through
``AssistedCandidateGenerator.update_candidate_strategy`` (its ``probs``, ``matches`` and the threshold
on its copy of the assistant's generation config), genplug through ``DraftModelCandidates.verified``.
The draft's probabilities agree to float rounding only (genplug runs Llama on its native twin, and
feeds the draft its tokens in other chunks), so probabilities and thresholds are compared to 1e-5.
"""

from __future__ import annotations

import copy
from fractions import Fraction

import pytest
import torch
import transformers
from transformers.generation import candidate_generator

import genplug
from genplug.plugins.strategies import confidence_tuning
from genplug.plugins.strategies.candidates import DraftModelCandidates
from parity_tools import tiny_model
from test_hf_assisted import perturbed_copy, repetitive_prompt

START = 0.4  # transformers' default threshold, set on the draft's generation config where transformers reads it


def first_layer_draft(model):
    """A 1-layer Llama made of the target's embeddings, first layer and head: it agrees with the target
    often but not always, with probabilities spread enough for the threshold to move."""
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = 1
    draft = transformers.LlamaForCausalLM(config).eval()
    draft.load_state_dict(model.state_dict(), strict=False)
    return draft


def with_drafting_settings(draft, num_tokens=5):
    """transformers reads the drafting settings from the assistant's own generation config only."""
    draft.generation_config.num_assistant_tokens = num_tokens
    draft.generation_config.assistant_confidence_threshold = START
    return draft


def trace_genplug(monkeypatch):
    """After every round: ``(records so far, threshold in force next round)``; the records are kept last."""
    rounds, last = [], {}
    verified = DraftModelCandidates.verified

    def traced(self, matches, running):
        verified(self, matches, running)
        if self.tuner is not None:
            rounds.append((len(self.tuner.accepted), self.confidence_threshold))
            last.update(probabilities=list(self.tuner.probabilities), accepted=list(self.tuner.accepted))

    monkeypatch.setattr(DraftModelCandidates, "verified", traced)
    return rounds, last


def trace_transformers(monkeypatch):
    rounds, last = [], {}
    update = candidate_generator.AssistedCandidateGenerator.update_candidate_strategy

    def traced(self, input_ids, scores, num_matches):
        update(self, input_ids, scores, num_matches)
        if hasattr(self, "probs"):
            rounds.append((len(self.matches), float(self.assistant_generation_config.assistant_confidence_threshold)))
            last.update(probabilities=list(self.probs), accepted=[bool(m) for m in self.matches])

    monkeypatch.setattr(candidate_generator.AssistedCandidateGenerator, "update_candidate_strategy", traced)
    return rounds, last


def setting(name):
    """``(target, draft, prompt, generate kwargs)`` of a named case."""
    if name == "gpt2":  # no native twin: transformers' own forward on both sides
        model = tiny_model("gpt2")
        return model, with_drafting_settings(perturbed_copy(model)), repetitive_prompt(seed=3), {}
    model = tiny_model("llama")
    draft = with_drafting_settings(first_layer_draft(model))
    if name == "llama, sampling":
        return model, draft, repetitive_prompt(seed=3), dict(do_sample=True)
    if name == "llama, accepted EOS":  # the last round's EOS candidate is accepted: transformers records it as refused
        return model, draft, repetitive_prompt(seed=0), dict(eos_token_id=82, pad_token_id=0)
    return model, draft, repetitive_prompt(seed=3), {}


CASES = ["llama", "llama, sampling", "gpt2", "llama, accepted EOS"]


@pytest.mark.parametrize("name", CASES)
def test_the_thresholds_of_every_round_match_transformers(name, monkeypatch):
    pytest.importorskip("sklearn")  # transformers tunes only with scikit-learn
    model, draft, ids, extra = setting(name)
    kwargs = dict(max_new_tokens=40, assistant_model=draft, **extra)
    ours, our_records = trace_genplug(monkeypatch)
    theirs, their_records = trace_transformers(monkeypatch)
    torch.manual_seed(0)
    our_ids = genplug.generate(model, ids, **kwargs)
    torch.manual_seed(0)
    their_ids = model.generate(ids, **kwargs)
    assert torch.equal(our_ids, their_ids)
    assert [n for n, _ in ours] == [n for n, _ in theirs]
    assert [t for _, t in ours] == pytest.approx([t for _, t in theirs], rel=1e-5)
    assert our_records["accepted"] == their_records["accepted"]
    assert our_records["probabilities"] == pytest.approx(their_records["probabilities"], rel=1e-5)
    assert {t for _, t in ours} - {START}, "the threshold never moved: the case checks nothing"
    # the tuned value lasts for the call: transformers tunes a copy of the assistant's generation config
    assert draft.generation_config.assistant_confidence_threshold == START


def brute_force_threshold(accepted, probabilities):
    """The threshold with the least cost ``fpr + 3 * fnr`` -- ``fpr`` the share of refused records with
    probability ``>= t``, ``fnr`` the share of accepted ones below it -- among ``inf`` and the recorded
    probabilities, in exact arithmetic: the highest of equal ones, and all of them where float rounding
    could tell them apart (as transformers computes the costs)."""
    thresholds = [float("inf")] + sorted(set(probabilities), reverse=True)
    positives = sum(accepted)
    negatives = len(accepted) - positives

    def costs(t):
        false_positives = sum(1 for a, p in zip(accepted, probabilities) if not a and p >= t)
        true_positives = sum(1 for a, p in zip(accepted, probabilities) if a and p >= t)
        exact = Fraction(false_positives, negatives) + 3 * (1 - Fraction(true_positives, positives))
        return exact, false_positives / negatives + 3.0 * (1.0 - true_positives / positives)

    table = [(t, *costs(t)) for t in thresholds]
    least = min(exact for _, exact, _ in table)
    cheapest = [(t, rounded) for t, exact, rounded in table if exact == least]
    if len({rounded for _, rounded in cheapest}) == 1:
        return [cheapest[0][0]]
    return [t for t, _ in cheapest]


@pytest.mark.parametrize("rows", [1, 2])
def test_each_tuned_threshold_is_the_cheapest_over_the_records_so_far(rows, monkeypatch):
    """No scikit-learn needed: genplug tunes whether it is installed or not. After each round the
    threshold is the brute-force cheapest over the records (the highest of equal ones), or the starting
    0.4 while there are fewer than 6 records or only one outcome; and each round drafts on only past
    tokens at or above the threshold then in force."""
    model = tiny_model("llama")
    draft = with_drafting_settings(first_layer_draft(model))
    ids = torch.cat([repetitive_prompt(seed=seed) for seed in (3, 1)[:rows]])
    history = []
    verified = DraftModelCandidates.verified

    def traced(self, matches, running):
        if self.last_round is None:  # nothing drafted: no room left before max_length
            return verified(self, matches, running)
        probabilities, lengths, _ = self.last_round
        in_force = self.confidence_threshold
        verified(self, matches, running)
        history.append((probabilities, lengths, in_force, self.confidence_threshold,
                        list(self.tuner.accepted), list(self.tuner.probabilities)))

    monkeypatch.setattr(DraftModelCandidates, "verified", traced)
    out = genplug.generate(model, ids, max_new_tokens=40, assistant_model=draft)
    assert torch.equal(out, genplug.generate(model, ids, max_new_tokens=40))
    moved = False
    for probabilities, lengths, in_force, threshold, accepted, recorded in history:
        for row in range(rows):  # a row stops drafting at its first token below the threshold in force
            below = (probabilities[row, :int(lengths[row])] < in_force).tolist()
            assert not any(below[:-1])
        if len(accepted) < 6 or len(set(accepted)) < 2:
            assert threshold == in_force
            continue
        moved = True
        assert threshold in brute_force_threshold(accepted, recorded)
    assert moved, "the threshold was never tuned: the case checks nothing"


def test_the_tuned_threshold_lasts_one_call(monkeypatch):
    """transformers tunes a copy of the assistant's generation config, so every call starts from the
    configured threshold again; genplug does the same (a second call repeats the first's rounds)."""
    model = tiny_model("llama")
    draft = with_drafting_settings(first_layer_draft(model))
    ids = repetitive_prompt(seed=3)
    rounds, _ = trace_genplug(monkeypatch)
    first = genplug.generate(model, ids, max_new_tokens=30, assistant_model=draft)
    first_rounds = list(rounds)
    rounds.clear()
    assert draft.generation_config.assistant_confidence_threshold == START
    assert torch.equal(genplug.generate(model, ids, max_new_tokens=30, assistant_model=draft), first)
    assert rounds == first_rounds and {t for _, t in rounds} - {START}
    model.generate(ids, max_new_tokens=30, assistant_model=draft)
    assert draft.generation_config.assistant_confidence_threshold == START


@pytest.mark.parametrize("settings", [dict(assistant_early_exit=1), dict(prompt_lookup_num_tokens=3),
                                      dict(draft=True, threshold=0.0)],
                         ids=["early exit", "prompt lookup", "threshold 0"])
def test_what_is_not_tuned(settings, monkeypatch):
    """As in transformers: only a draft model with a threshold is tuned -- not early exit (transformers
    checks the generator's exact class), not prompt lookup, not a threshold of 0 (drafting never stops
    on confidence)."""
    records = []
    monkeypatch.setattr(confidence_tuning.ConfidenceTuner, "record", lambda self, *args: records.append(args))
    model = tiny_model("llama")
    settings = dict(settings)
    if settings.pop("draft", False):
        draft = with_drafting_settings(first_layer_draft(model))
        draft.generation_config.assistant_confidence_threshold = settings.pop("threshold")
        settings["assistant_model"] = draft
    ids = repetitive_prompt(seed=3)
    assert torch.equal(genplug.generate(model, ids, max_new_tokens=20, **settings),
                       genplug.generate(model, ids, max_new_tokens=20))
    assert records == []
