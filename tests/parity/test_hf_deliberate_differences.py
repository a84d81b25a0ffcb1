"""Where genplug deliberately differs from a transformers quirk (research notes, Appendix B).

Each case documents what transformers does, then checks genplug's behaviour against an independent
oracle -- a hand-written decoding loop -- rather than against transformers.
"""

import pytest
import torch
import transformers

import genplug
from genplug.errors import GenerationInputError
from helpers.transformers_version import transformers_at_least
from parity_tools import VOCAB, prompt, reference_decode, tiny_model, top_k_by_hand

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


def _state_space_model(kind):
    torch.manual_seed(0)
    if kind == "mamba":
        return transformers.MambaForCausalLM(transformers.MambaConfig(
            vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, state_size=4)).eval()
    return transformers.Mamba2ForCausalLM(transformers.Mamba2Config(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, state_size=4, num_heads=4, head_dim=16, n_groups=1,
        expand=2)).eval()


def _gap_to_recompute(model, out, prompt_len):
    """The largest gap between a greedy output's scores and the model's logits recomputed without a cache."""
    with torch.no_grad():
        return max((model(out.sequences[:, :prompt_len + step], use_cache=False).logits[:, -1] - scores).abs().max()
                   for step, scores in enumerate(out.scores)).item()


@pytest.mark.skipif(not transformers_at_least("5.25"), reason=(
    "transformers < 5.25 refuses assisted decoding on stateful models, as genplug does "
    "(test_hf_recurrent_models.py)"))
@pytest.mark.parametrize("kind", ["mamba", "mamba2"])
def test_assisted_decoding_on_a_state_space_model_is_refused(kind):
    """transformers 5.25 runs assisted decoding on stateful models: it records the recurrent state of the
    last num_assistant_tokens positions of each verification forward, so that rejected candidates can be
    rolled back. For Mamba-family layers that is not exact (Mamba's scan starts the positions it does not
    record from an empty state, as a TODO in its source says), so the verified logits are not the model's:
    off by 1e-3 to 1e-2 here, where plain greedy search agrees to 1e-6 (gated delta-net layers, Qwen3-Next,
    did roll back exactly). genplug cannot tell which layers roll back exactly, so it keeps refusing, as
    transformers < 5.25 did; greedy search gives the model's logits. Oracle: the logits recomputed without
    a cache."""
    model = _state_space_model(kind)
    ids = torch.arange(4, 10)[None].repeat(1, 3)
    with pytest.raises(GenerationInputError, match="stateful"):
        genplug.generate(model, ids, max_new_tokens=10, prompt_lookup_num_tokens=3)
    scores = dict(max_new_tokens=10, do_sample=False, return_dict_in_generate=True, output_scores=True)
    theirs = model.generate(ids, prompt_lookup_num_tokens=3, **scores)
    assert _gap_to_recompute(model, theirs, ids.shape[1]) > 1e-3, "transformers' verification left the model's logits"
    ours = genplug.generate(model, ids, **scores)
    assert _gap_to_recompute(model, ours, ids.shape[1]) < 1e-5
