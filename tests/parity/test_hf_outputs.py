"""What ``return_dict_in_generate=True`` returns -- scores, logits, attentions, hidden states -- and
``compute_transition_scores``: same structure, shapes and values as transformers."""

import numpy as np
import pytest
import torch

import genplug
from helpers.transformers_version import transformers_at_least
from parity_tools import assert_same, left_padded, prompt, run_both, tiny_model, token_generated_at

FIELDS = ("scores", "logits", "attentions", "hidden_states")


@pytest.mark.parametrize("name", ["llama", "gpt2", "gemma2"])
def test_every_output_field(name):
    model = tiny_model(name)
    ids, mask = left_padded(batch=2, length=6, pads=(2, 0))
    ours, theirs = run_both(model, input_ids=ids, attention_mask=mask, max_new_tokens=5, do_sample=False,
                            return_dict_in_generate=True, output_scores=True, output_logits=True,
                            output_attentions=True, output_hidden_states=True)
    assert isinstance(ours, genplug.GenerateDecoderOnlyOutput)
    if name == "gemma2":
        # genplug's sliding layers keep a few tokens beyond the window (so the loop can crop the steps
        # it runs past a stop); attention to them is masked, so their weights are exactly zero
        ours.attentions = _trim_extra_keys(ours.attentions, theirs.attentions)
    assert_same(ours, theirs, check=FIELDS)
    layers = model.config.num_hidden_layers
    # the shapes the docs promise: one entry per new token; per layer (batch, heads, query, keys)
    assert len(ours.scores) == len(ours.attentions) == len(ours.hidden_states) == 5
    assert ours.scores[0].shape == (2, model.config.vocab_size)
    assert len(ours.attentions[0]) == layers and ours.attentions[0][0].shape[2:] == (6, 6)
    assert ours.attentions[1][-1].shape[2:] == (1, 7)  # the last layer attends to everything
    assert len(ours.hidden_states[0]) == layers + 1 and ours.hidden_states[0][0].shape[:2] == (2, 6)


def _trim_extra_keys(mine, reference):
    trimmed = []
    for step_mine, step_reference in zip(mine, reference):
        layers = []
        for a, b in zip(step_mine, step_reference):
            extra = a.shape[-1] - b.shape[-1]
            assert extra >= 0 and torch.equal(a[..., :extra], torch.zeros_like(a[..., :extra]))
            layers.append(a[..., extra:])
        trimmed.append(tuple(layers))
    return tuple(trimmed)


def test_fields_not_asked_for_are_none():
    model = tiny_model("llama")
    ours, theirs = run_both(model, input_ids=prompt(), max_new_tokens=3, do_sample=False, return_dict_in_generate=True)
    for field in FIELDS:
        assert getattr(ours, field) is None and getattr(theirs, field) is None, field
    # output_* flags without return_dict_in_generate: a plain tensor from both
    ours, theirs = run_both(model, input_ids=prompt(), max_new_tokens=3, do_sample=False, output_scores=True)
    assert_same(ours, theirs)


def test_output_access_by_key_and_index_like_transformers():
    model = tiny_model("llama")
    ours, theirs = run_both(model, input_ids=prompt(), max_new_tokens=3, do_sample=False,
                            return_dict_in_generate=True, output_scores=True)
    their_keys = list(theirs.keys())
    if transformers_at_least("5.24"):
        assert "cache" in their_keys and theirs["past_key_values"] is theirs["cache"]
    else:  # transformers 5.24 renamed the key `past_key_values` to `cache`; genplug uses the new name always
        their_keys = ["cache" if key == "past_key_values" else key for key in their_keys]
    assert list(ours.keys()) == their_keys
    assert torch.equal(ours[0], theirs[0]) and torch.equal(ours["sequences"], theirs["sequences"])
    # both names read the one cache, by attribute, key, `in` and get(); it is the last field set
    cache = ours.cache
    assert cache is not None and ours[-1] is cache
    assert ours.past_key_values is cache and ours["cache"] is cache and ours["past_key_values"] is cache
    assert "cache" in ours and "past_key_values" in ours and ours.get("past_key_values") is cache


def test_scores_and_logits_when_rows_stop_at_different_steps():
    model = tiny_model("qwen2")
    ids, mask = left_padded(batch=3, length=6, pads=(0, 3, 1))
    eos = token_generated_at(model, ids, step=1, row=0, attention_mask=mask)
    ours, theirs = run_both(model, seed=0, input_ids=ids, attention_mask=mask, max_new_tokens=9, do_sample=True,
                            top_k=0, eos_token_id=eos, pad_token_id=0, return_dict_in_generate=True,
                            output_scores=True, output_logits=True)
    assert_same(ours, theirs)


# ------------------------------------------------------------------------------ transition scores


def test_transition_scores_of_greedy_search_the_seed_example():
    # "Example 1" of compute_transition_scores in transformers' docs, on a tiny GPT-2
    model = tiny_model("gpt2")
    ids = prompt(batch=1, length=2)
    ours, theirs = run_both(model, input_ids=ids, max_new_tokens=5, return_dict_in_generate=True, output_scores=True)
    assert_same(ours, theirs)
    mine = genplug.compute_transition_scores(ours.sequences, ours.scores, normalize_logits=True)
    reference = model.compute_transition_scores(theirs.sequences, theirs.scores, normalize_logits=True)
    torch.testing.assert_close(mine, reference, atol=1e-5, rtol=0)
    assert mine.shape == (1, 5)
    # independent check: each entry is the log-probability of the chosen token
    generated = ours.sequences[:, ids.shape[1]:]
    for step, scores in enumerate(ours.scores):
        expected = torch.log_softmax(scores, -1).gather(1, generated[:, step:step + 1]).squeeze(1)
        torch.testing.assert_close(mine[:, step], expected, atol=1e-6, rtol=0)
    probabilities = np.exp(mine.numpy())
    assert ((probabilities > 0) & (probabilities <= 1)).all()


@pytest.mark.parametrize("normalize", [False, True])
def test_transition_scores_of_sampling_with_several_sequences(normalize):
    model = tiny_model("llama")
    ids, mask = left_padded(batch=2, pads=(1, 0))
    ours, theirs = run_both(model, seed=6, input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=True,
                            num_return_sequences=2, temperature=0.7, return_dict_in_generate=True, output_scores=True)
    assert_same(ours, theirs)
    mine = genplug.compute_transition_scores(ours.sequences, ours.scores, normalize_logits=normalize)
    reference = model.compute_transition_scores(theirs.sequences, theirs.scores, normalize_logits=normalize)
    torch.testing.assert_close(mine, reference, atol=1e-5, rtol=0)


def test_transition_scores_of_an_encoder_decoder_model():
    model = tiny_model("bart")
    ours, theirs = run_both(model, input_ids=prompt(batch=2), max_new_tokens=5, do_sample=False,
                            return_dict_in_generate=True, output_scores=True)
    assert_same(ours, theirs)
    mine = genplug.compute_transition_scores(ours.sequences, ours.scores, normalize_logits=True)
    reference = model.compute_transition_scores(theirs.sequences, theirs.scores, normalize_logits=True)
    torch.testing.assert_close(mine, reference, atol=1e-5, rtol=0)
