"""Beam search and beam sampling: genplug == transformers' ``generate`` on tiny seeded models.

Tokens must match exactly and ``sequences_scores`` / ``scores`` / ``logits`` within 1e-5. Every case
that claims to exercise EOS picks an EOS id that transformers' own beam search really emits, and
checks that some hypothesis ends with it.
"""

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

import genplug
from helpers.transformers_version import transformers_at_least
from parity_tools import ATOL, RTOL, assert_same, left_padded, prompt, run_both, tiny_model

BEAM_FIELDS = ("scores", "logits", "sequences_scores", "beam_indices")


def _eos_from_beam_search(model, ids, step, **kwargs):
    """A token transformers' beam search puts at generated position ``step`` of the best hypothesis."""
    out = model.generate(ids, max_new_tokens=step + 1, eos_token_id=None, **kwargs)
    start = 1 if model.config.is_encoder_decoder else ids.shape[1]
    return int(out[0, start + step])


def _assert_same_beams(ours, theirs):
    assert isinstance(ours, (genplug.GenerateBeamDecoderOnlyOutput, genplug.GenerateBeamEncoderDecoderOutput))
    assert_same(ours, theirs, check=("scores", "logits", "sequences_scores"))
    if theirs.beam_indices is not None:
        assert torch.equal(ours.beam_indices, theirs.beam_indices.long()), (ours.beam_indices, theirs.beam_indices)


def _ends_with_eos(out, eos, start):
    ids = out.sequences[:, start:]
    return bool((ids == eos).any())


CASES = [
    dict(num_beams=2),
    dict(num_beams=4, num_return_sequences=4),
    dict(num_beams=3, num_return_sequences=2, length_penalty=0.0),
    dict(num_beams=4, length_penalty=2.0, early_stopping="never"),
    dict(num_beams=4, length_penalty=-1.5, early_stopping="never"),
    dict(num_beams=4, num_return_sequences=2, early_stopping=True),
    dict(num_beams=5, length_penalty=0.5, early_stopping=False),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_beam_search_with_padding_and_eos(case):
    model = tiny_model("llama")
    ids, mask = left_padded(batch=3, pads=(0, 2, 4))
    eos = _eos_from_beam_search(model, ids, step=3, attention_mask=mask, num_beams=case["num_beams"])
    ours, theirs = run_both(model, input_ids=ids, attention_mask=mask, max_new_tokens=10, eos_token_id=eos,
                            pad_token_id=7, return_dict_in_generate=True, output_scores=True, output_logits=True,
                            **case)
    _assert_same_beams(ours, theirs)
    assert _ends_with_eos(ours, eos, ids.shape[1]), "the case must finish a hypothesis with EOS"


def test_beam_search_plain_tensor_output_and_no_eos():
    model = tiny_model("qwen2")
    ours, theirs = run_both(model, input_ids=prompt(batch=2), max_new_tokens=7, num_beams=3, eos_token_id=None)
    assert_same(ours, theirs)


def test_several_eos_ids_widen_the_candidates():
    model = tiny_model("llama")
    ids = prompt(batch=2, seed=3)
    first = _eos_from_beam_search(model, ids, step=1, num_beams=3)
    second = _eos_from_beam_search(model, ids, step=3, num_beams=3)
    ours, theirs = run_both(model, input_ids=ids, max_new_tokens=8, num_beams=3, num_return_sequences=3,
                            eos_token_id=[first, second, 60], pad_token_id=5, return_dict_in_generate=True,
                            output_scores=True)
    _assert_same_beams(ours, theirs)


@pytest.mark.skipif(not transformers_at_least("5.25"), reason=(
    "transformers 5.0-5.24 let the first num_beams *drawn* candidates finish a hypothesis, not the best num_beams "
    "(4.x and 5.25 rank the draws first); genplug ranks them, which test_beam_strategies.py checks by an oracle"))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_sampling_with_a_seed(seed):
    model = tiny_model("llama")
    ids, mask = left_padded(batch=2, pads=(3, 0), seed=seed)
    ours, theirs = run_both(model, seed=seed, input_ids=ids, attention_mask=mask, max_new_tokens=9, num_beams=3,
                            do_sample=True, temperature=0.8, num_return_sequences=2, eos_token_id=[11, 23, 40],
                            pad_token_id=7, return_dict_in_generate=True, output_scores=True)
    _assert_same_beams(ours, theirs)


def test_beam_sampling_default_top_k():
    model = tiny_model("gpt2")
    ours, theirs = run_both(model, seed=4, input_ids=prompt(batch=2, seed=4), max_new_tokens=8, num_beams=2,
                            do_sample=True, pad_token_id=7)
    assert_same(ours, theirs)


@pytest.mark.parametrize("name", ["t5", "bart"])
def test_encoder_decoder(name):
    model = tiny_model(name)
    ids = prompt(batch=2, length=7, seed=5)
    eos = _eos_from_beam_search(model, ids, step=2, num_beams=3)
    ours, theirs = run_both(model, input_ids=ids, max_new_tokens=8, num_beams=3, num_return_sequences=2,
                            eos_token_id=eos, pad_token_id=5, return_dict_in_generate=True, output_scores=True,
                            output_attentions=True, output_hidden_states=True)
    _assert_same_beams(ours, theirs)
    assert isinstance(ours, genplug.GenerateBeamEncoderDecoderOutput)
    assert len(ours.decoder_attentions) == len(theirs.decoder_attentions)
    assert len(ours.cross_attentions) == len(theirs.cross_attentions)


def test_without_cache():
    model = tiny_model("llama")
    ids, mask = left_padded(batch=2, pads=(2, 0))
    ours, theirs = run_both(model, input_ids=ids, attention_mask=mask, max_new_tokens=6, num_beams=3,
                            use_cache=False, pad_token_id=7, return_dict_in_generate=True, output_scores=True)
    _assert_same_beams(ours, theirs)


def test_attentions_and_hidden_states_per_step():
    model = tiny_model("llama")
    ours, theirs = run_both(model, input_ids=prompt(batch=1), max_new_tokens=4, num_beams=2,
                            return_dict_in_generate=True, output_attentions=True, output_hidden_states=True)
    _assert_same_beams(ours, theirs)
    assert len(ours.attentions) == len(theirs.attentions)
    for mine, reference in zip(ours.hidden_states, theirs.hidden_states):
        torch.testing.assert_close(mine[-1], reference[-1], atol=ATOL, rtol=RTOL)


def test_fill_value_is_the_pad_token_where_transformers_falls_back_to_eos():
    """Appendix B.4: with pad_token_id=0 transformers fills short hypotheses with EOS; genplug with 0."""
    model = tiny_model("llama")
    ids, mask = left_padded(batch=3, pads=(0, 2, 4))
    eos = _eos_from_beam_search(model, ids, step=1, attention_mask=mask, num_beams=4)
    ours, theirs = run_both(model, input_ids=ids, attention_mask=mask, max_new_tokens=10, num_beams=4,
                            num_return_sequences=4, eos_token_id=eos, pad_token_id=0, return_dict_in_generate=True,
                            output_scores=True)
    filled = torch.zeros_like(theirs.sequences, dtype=torch.bool)
    filled[:, ids.shape[1]:] = theirs.beam_indices < 0
    assert filled.any(), "the case must return hypotheses of different lengths"
    assert torch.equal(ours.sequences[~filled], theirs.sequences[~filled])
    assert (theirs.sequences[filled] == eos).all() and (ours.sequences[filled] == 0).all()
    torch.testing.assert_close(ours.sequences_scores, theirs.sequences_scores, atol=ATOL, rtol=RTOL)


def test_returned_cache_matches():
    model = tiny_model("llama")
    ids = prompt(batch=2, seed=1)
    kwargs = dict(input_ids=ids, max_new_tokens=12, num_beams=3, eos_token_id=list(range(8, 70)), pad_token_id=7,
                  early_stopping=True, return_dict_in_generate=True)  # many EOS ids: the search ends after 4 steps
    theirs = model.generate(**kwargs)
    ours = genplug.generate(model, stop_check_interval=3, **kwargs)  # 2 steps past the end, taken back
    _assert_same_beams(ours, theirs)
    assert ours.sequences.shape[1] < ids.shape[1] + 6, "the search must end well before max_length"
    assert ours.past_key_values.get_seq_length() == theirs.past_key_values.get_seq_length()
    for layer in range(2):
        torch.testing.assert_close(_keys(ours.past_key_values, layer), _keys(theirs.past_key_values, layer),
                                   atol=ATOL, rtol=RTOL)


def _keys(cache, layer):
    layers = getattr(cache, "layers", None)
    if layers is not None:
        return layers[layer].keys
    return cache[layer][0]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(interval=st.integers(1, 12), seed=st.integers(0, 50), early=st.sampled_from([True, False, "never"]),
       sample=st.booleans())
def test_output_is_identical_for_every_stop_check_interval(interval, seed, early, sample):
    model = tiny_model("llama")
    ids = prompt(batch=2, seed=seed)
    kwargs = dict(input_ids=ids, max_new_tokens=14, num_beams=3, num_return_sequences=2, eos_token_id=[9, 17, 33],
                  pad_token_id=7, early_stopping=early, do_sample=sample, return_dict_in_generate=True,
                  output_scores=True)
    torch.manual_seed(seed)
    base = genplug.generate(model, stop_check_interval=1, **kwargs)
    torch.manual_seed(seed)
    other = genplug.generate(model, stop_check_interval=interval, **kwargs)
    assert torch.equal(base.sequences, other.sequences)
    assert torch.equal(base.sequences_scores, other.sequences_scores)
    assert torch.equal(base.beam_indices, other.beam_indices)
    assert len(base.scores) == len(other.scores)
    assert base.past_key_values.get_seq_length() == other.past_key_values.get_seq_length()


def test_processors_act_on_log_probs():
    model = tiny_model("llama")
    ids, mask = left_padded(batch=2, pads=(2, 0), seed=6)
    eos = _eos_from_beam_search(model, ids, step=1, attention_mask=mask, num_beams=3)
    ours, theirs = run_both(model, input_ids=ids, attention_mask=mask, max_new_tokens=9, num_beams=3,
                            num_return_sequences=3, eos_token_id=eos, pad_token_id=7, repetition_penalty=1.4,
                            no_repeat_ngram_size=2, min_new_tokens=3, bad_words_ids=[[20], [30, 31]],
                            renormalize_logits=True, return_dict_in_generate=True, output_scores=True)
    _assert_same_beams(ours, theirs)


def test_prefix_allowed_tokens_fn_sees_each_prompts_beams():
    model = tiny_model("llama")
    ids = prompt(batch=2, seed=7)

    def allowed(batch_id, row):
        return list(range(10 + 20 * batch_id, 30 + 20 * batch_id)) if row.shape[0] % 2 else list(range(40, 80))

    ours, theirs = run_both(model, input_ids=ids, max_new_tokens=6, num_beams=3, prefix_allowed_tokens_fn=allowed,
                            pad_token_id=7, return_dict_in_generate=True, output_scores=True)
    _assert_same_beams(ours, theirs)
