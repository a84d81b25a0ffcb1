"""Attentions and hidden states of assisted decoding: one entry per generated token, equal to what transformers'
plain greedy search returns for the same tokens (genplug's assisted greedy search returns greedy's tokens).

transformers' own assisted decoding is not the oracle here: in its first round it takes the entries of the
tokens after the first from the prompt's rows, and it cuts cross-attentions along the heads
(docs/strategies.md); the last test pins where genplug and it agree.
"""

import pytest
import torch

import genplug
from parity_tools import assert_nested_close, prompt, tiny_model

FIELDS = ("attentions", "hidden_states", "encoder_attentions", "encoder_hidden_states", "decoder_attentions",
          "cross_attentions", "decoder_hidden_states")
OUTPUTS = dict(return_dict_in_generate=True, output_attentions=True, output_hidden_states=True, output_scores=True,
               do_sample=False, eos_token_id=None, pad_token_id=1)


def _same_steps(ours, reference):
    assert torch.equal(ours.sequences, reference.sequences), (ours.sequences, reference.sequences)
    for field in FIELDS:
        mine, theirs = getattr(ours, field, None), getattr(reference, field, None)
        assert (mine is None) == (theirs is None), field
        if theirs is not None:
            assert_nested_close(mine, theirs, field)


def _repeating(length=10):
    """A prompt that repeats itself, so prompt lookup has n-grams to propose."""
    half = torch.tensor([[5, 6, 7, 8, 9]])
    return half.repeat(1, length // 5)


@pytest.mark.parametrize("name", ["llama", "gpt2", "qwen3", "t5", "bart"])
@pytest.mark.parametrize("candidates", ["same-weights draft", "prompt lookup"])
def test_assisted_attentions_and_hidden_states_are_greedy_searchs(name, candidates):
    """A draft with the target's own weights has every candidate accepted, so rounds keep several tokens -- the
    first round too, where the prompt's entry comes first; prompt lookup mixes accepted and rejected ones."""
    model = tiny_model(name)
    assist = dict(assistant_model=tiny_model(name)) if candidates.startswith("same") else dict(prompt_lookup_num_tokens=3)
    ids = _repeating()
    reference = model.generate(ids, max_new_tokens=9, **OUTPUTS)
    ours = genplug.generate(model, ids, max_new_tokens=9, **assist, **OUTPUTS)
    _same_steps(ours, reference)
    assert len(ours.scores) == 9


def test_batched_assisted_attentions_and_hidden_states_are_greedy_searchs():
    """genplug verifies several rows at once (transformers takes one): each row's entries are still its own."""
    model = tiny_model("llama")
    ids = torch.cat((_repeating(), prompt(batch=1, length=10, seed=3)))
    reference = genplug.generate(model, ids, max_new_tokens=7, **OUTPUTS)  # plain greedy (== transformers' elsewhere)
    ours = genplug.generate(model, ids, max_new_tokens=7, assistant_model=tiny_model("llama"), **OUTPUTS)
    _same_steps(ours, reference)


def test_assisted_outputs_match_transformers_after_the_first_round():
    """From the second round on, transformers cuts the verifying forward as genplug does: same entries."""
    model = tiny_model("llama")
    ids = _repeating()
    kwargs = dict(max_new_tokens=9, prompt_lookup_num_tokens=3, **OUTPUTS)
    ours, theirs = genplug.generate(model, ids, **kwargs), model.generate(ids, **kwargs)
    assert torch.equal(ours.sequences, theirs.sequences)
    first_round = 2  # with this prompt the first round keeps two tokens: the prompt's entry and one more
    assert_nested_close(ours.attentions[:1], theirs.attentions[:1], "attentions")
    assert_nested_close(ours.hidden_states[first_round:], theirs.hidden_states[first_round:], "hidden_states")
    assert_nested_close(ours.attentions[first_round:], theirs.attentions[first_round:], "attentions")
