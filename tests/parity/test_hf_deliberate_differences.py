"""Where genplug deliberately differs from a transformers quirk (research notes, Appendix B).

Each case documents what transformers does, then checks genplug's behaviour against an independent
oracle -- a hand-written decoding loop -- rather than against transformers.
"""

import pytest
import torch
import transformers

import genplug
from genplug.errors import GenerationInputError
from parity_tools import prompt, reference_decode, tiny_model, top_k_by_hand

STEPS = 6


def _temperature_then_default_top_k(times: int, temperature: float):
    def warp(ids, scores):
        for _ in range(times):
            scores = scores / temperature
        return top_k_by_hand(scores, 50)
    return warp


@pytest.mark.parametrize("warper_class", [genplug.TemperatureLogitsWarper, transformers.TemperatureLogitsWarper],
                         ids=["genplug's", "transformers'"])
def test_a_warper_of_a_type_the_config_builds_is_refused(warper_class):
    """Quirk 2: transformers appends the config's warpers after the caller's, so a caller's
    TemperatureLogitsWarper plus temperature=... divides the logits twice. genplug refuses the call."""
    model = tiny_model("llama")
    ids = prompt(batch=2)
    torch.manual_seed(0)
    theirs = model.generate(ids, max_new_tokens=STEPS, do_sample=True, temperature=0.7,
                            logits_processor=[transformers.TemperatureLogitsWarper(0.7)])
    twice = reference_decode(model, ids, STEPS, _temperature_then_default_top_k(2, 0.7), do_sample=True, seed=0)
    assert torch.equal(theirs, twice), "transformers applies the temperature twice"

    with pytest.raises(GenerationInputError, match="TemperatureLogitsWarper"):
        genplug.generate(model, ids, max_new_tokens=STEPS, do_sample=True, temperature=0.7,
                         logits_processor=[warper_class(0.7)])

    # what the caller meant: the temperature once, then the default top-k
    torch.manual_seed(0)
    ours = genplug.generate(model, ids, max_new_tokens=STEPS, do_sample=True, temperature=0.7)
    once = reference_decode(model, ids, STEPS, _temperature_then_default_top_k(1, 0.7), do_sample=True, seed=0)
    assert torch.equal(ours, once)


def test_a_processor_of_a_type_the_config_builds_is_refused_instead_of_replacing_it():
    """Quirk 2: transformers silently replaces its own RepetitionPenaltyLogitsProcessor(1.2) by the
    caller's (2.0). genplug refuses the ambiguous call; the caller's processor alone is honoured."""
    model = tiny_model("llama")
    ids = prompt(batch=2, seed=1)
    theirs = model.generate(ids, max_new_tokens=STEPS, do_sample=False, repetition_penalty=1.2,
                            logits_processor=[transformers.RepetitionPenaltyLogitsProcessor(2.0)])
    with pytest.raises(GenerationInputError, match="RepetitionPenaltyLogitsProcessor"):
        genplug.generate(model, ids, max_new_tokens=STEPS, do_sample=False, repetition_penalty=1.2,
                         logits_processor=[genplug.RepetitionPenaltyLogitsProcessor(2.0)])

    def penalty_by_hand(ids, scores):
        seen = scores.gather(1, ids)
        return scores.scatter(1, ids, torch.where(seen < 0, seen * 2.0, seen / 2.0))

    ours = genplug.generate(model, ids, max_new_tokens=STEPS, do_sample=False,
                            logits_processor=[genplug.RepetitionPenaltyLogitsProcessor(2.0)])
    expected = reference_decode(model, ids, STEPS, penalty_by_hand, do_sample=False)
    assert torch.equal(ours, expected)
    assert torch.equal(theirs, expected), "transformers ran the caller's penalty in place of its own"


def test_a_transformers_stopping_criterion_of_a_type_the_config_builds_is_refused():
    model = tiny_model("llama")
    with pytest.raises(GenerationInputError, match="MaxLengthCriteria"):
        genplug.generate(model, prompt(), max_new_tokens=3,
                         stopping_criteria=[transformers.MaxLengthCriteria(max_length=8)])
